//! Ack ids that cannot be guessed or forged.
//!
//! The backend's ack id names a lease (for RocksDB: subscription, partition,
//! offset and a generation: sequential, so guessable). What a client gets is
//! that id sealed to the subscription and the principal it was delivered to:
//!
//! `{backend id}.{principal tag}.{mac}`, where the principal tag is the
//! first 6 bytes of HMAC-SHA256(key, "principal" ‖ name) and the MAC the
//! first 16 bytes of HMAC-SHA256(key, topic ‖ subscription ‖ tag ‖ backend
//! id), both base64url. The key is the server's (a file in the data dir, or
//! `ack-id-key-file` for gateways that must share it), so ids stay valid
//! across restarts. An id that does not verify is INVALID_ARGUMENT; one that
//! verifies but was delivered to another principal is PERMISSION_DENIED.

use std::path::Path;

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const TAG_BYTES: usize = 6;
const MAC_BYTES: usize = 16;
/// The key file's name in the data dir.
pub const KEY_FILE: &str = "ack-id.key";

/// Seals and opens ack ids with the server's key.
#[derive(Clone)]
pub struct AckIdSealer {
    /// HMAC-SHA256 with the key already absorbed: cloning it skips the two
    /// compressions of the key setup on every MAC (one seal per delivery,
    /// one open per ack id).
    keyed: HmacSha256,
}

/// A principal's tag: the same for every ack id delivered to it, so a
/// stream or a settle call computes it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalTag(String);

impl std::fmt::Debug for AckIdSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckIdSealer(..)")
    }
}

/// Why an ack id did not open.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// It was not issued by this server for this subscription.
    Forged,
    /// It was issued to another principal.
    OtherPrincipal,
}

impl AckIdSealer {
    pub fn new(key: [u8; 32]) -> AckIdSealer {
        AckIdSealer {
            keyed: HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length"),
        }
    }

    /// Reads the key at `path`, creating it (random, mode 0600, synced) when
    /// it does not exist yet.
    pub fn load_or_create(path: &Path) -> anyhow::Result<AckIdSealer> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "the ack-id key {} must be exactly 32 bytes; delete it to make a new one \
                         (unsettled deliveries are then redelivered)",
                        path.display()
                    )
                })?;
                Ok(AckIdSealer::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                // A gateway (cluster mode) has no store that made the dir.
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                write_new(path, &key)
                    .with_context(|| format!("creating the ack-id key {}", path.display()))?;
                Ok(AckIdSealer::new(key))
            }
            Err(e) => Err(e).with_context(|| format!("reading the ack-id key {}", path.display())),
        }
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// The tag of every ack id delivered to `principal`.
    pub fn principal_tag(&self, principal: &str) -> PrincipalTag {
        let mut mac = self.mac();
        mac.update(b"principal\0");
        mac.update(principal.as_bytes());
        PrincipalTag(URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..TAG_BYTES]))
    }

    fn lease_mac(
        &self,
        topic: &str,
        subscription: &str,
        tag: &str,
        inner: &str,
    ) -> [u8; MAC_BYTES] {
        let mut mac = self.mac();
        for part in [topic, subscription, tag, inner] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&mac.finalize().into_bytes()[..MAC_BYTES]);
        out
    }

    /// The id a client gets for the backend's `inner` id, delivered to
    /// the principal whose tag is `tag` ([`Self::principal_tag`]).
    pub fn seal(&self, topic: &str, subscription: &str, tag: &PrincipalTag, inner: &str) -> String {
        let mac = self.lease_mac(topic, subscription, &tag.0, inner);
        let mut sealed = String::with_capacity(inner.len() + tag.0.len() + 24);
        sealed.push_str(inner);
        sealed.push('.');
        sealed.push_str(&tag.0);
        sealed.push('.');
        URL_SAFE_NO_PAD.encode_string(mac, &mut sealed);
        sealed
    }

    /// The backend id inside `sealed`, if it was issued for this
    /// subscription and the principal whose tag is `principal`.
    pub fn open<'a>(
        &self,
        topic: &str,
        subscription: &str,
        principal: &PrincipalTag,
        sealed: &'a str,
    ) -> Result<&'a str, Refused> {
        let mut parts = sealed.rsplitn(3, '.');
        let (Some(mac), Some(tag), Some(inner)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Refused::Forged);
        };
        let mut given = [0u8; MAC_BYTES];
        match URL_SAFE_NO_PAD.decode(mac) {
            Ok(bytes) if bytes.len() == MAC_BYTES => given.copy_from_slice(&bytes),
            _ => return Err(Refused::Forged),
        }
        let expected = self.lease_mac(topic, subscription, tag, inner);
        if !bool::from(expected.ct_eq(&given)) {
            return Err(Refused::Forged);
        }
        if tag != principal.0 {
            return Err(Refused::OtherPrincipal);
        }
        Ok(inner)
    }
}

impl Refused {
    /// The broker error a settle call gets for `sealed`: INVALID_ARGUMENT
    /// for an id that does not verify, PERMISSION_DENIED for another
    /// principal's.
    pub fn into_error(self, sealed: &str) -> eventbus_broker::Error {
        let shown: String = sealed.chars().take(64).collect();
        match self {
            Refused::Forged => eventbus_broker::Error::invalid(
                "ack_ids",
                format!(
                    "{shown:?} is not an ack id of this subscription (it was altered, or \
                     belongs to another subscription); pass the ack_id of a delivery unchanged"
                ),
            ),
            Refused::OtherPrincipal => eventbus_broker::Error::PermissionDenied(format!(
                "ack id {shown:?} was delivered to another principal; only the member it was \
                 delivered to may settle it"
            )),
        }
    }
}

/// Writes a new file with owner-only permissions, synced with its directory.
fn write_new(path: &Path, key: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(key)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_id_opens_only_for_its_subscription_and_principal() {
        let sealer = AckIdSealer::new([7; 32]);
        let id = sealer.seal(
            "orders",
            "billing",
            &sealer.principal_tag("alice"),
            "AQAAAAEAAAAA",
        );
        assert_eq!(
            sealer.open("orders", "billing", &sealer.principal_tag("alice"), &id),
            Ok("AQAAAAEAAAAA")
        );
        assert_eq!(
            sealer.open("orders", "billing", &sealer.principal_tag("mallory"), &id),
            Err(Refused::OtherPrincipal)
        );
        assert_eq!(
            sealer.open("orders", "audit", &sealer.principal_tag("alice"), &id),
            Err(Refused::Forged)
        );
        assert_eq!(
            sealer.open("other", "billing", &sealer.principal_tag("alice"), &id),
            Err(Refused::Forged)
        );
        // Another key (another server) issued it.
        let other = AckIdSealer::new([8; 32]);
        assert_eq!(
            other.open("orders", "billing", &other.principal_tag("alice"), &id),
            Err(Refused::Forged)
        );
    }

    /// Ids sealed before the key state was cached (and by gateways still
    /// running an older build) must keep opening: the format is the one in
    /// the module doc, computed here from scratch.
    #[test]
    fn the_format_is_the_documented_one() {
        let key = [9u8; 32];
        let fresh = || HmacSha256::new_from_slice(&key).unwrap();
        let mut m = fresh();
        m.update(b"principal\0alice");
        let tag = URL_SAFE_NO_PAD.encode(&m.finalize().into_bytes()[..TAG_BYTES]);
        let mut m = fresh();
        for part in ["orders", "billing", tag.as_str(), "AQAAAAEAAAAA"] {
            m.update(&(part.len() as u32).to_be_bytes());
            m.update(part.as_bytes());
        }
        let mac = URL_SAFE_NO_PAD.encode(&m.finalize().into_bytes()[..MAC_BYTES]);
        let sealer = AckIdSealer::new(key);
        let expected = format!("AQAAAAEAAAAA.{tag}.{mac}");
        let alice = sealer.principal_tag("alice");
        assert_eq!(
            sealer.seal("orders", "billing", &alice, "AQAAAAEAAAAA"),
            expected
        );
        assert_eq!(
            sealer.open("orders", "billing", &alice, &expected),
            Ok("AQAAAAEAAAAA")
        );
    }

    #[test]
    fn a_changed_byte_does_not_verify() {
        let sealer = AckIdSealer::new([1; 32]);
        let id = sealer.seal("t", "s", &sealer.principal_tag("p"), "AQAAAAEAAAAB");
        let forged = id.replacen("AQAAAAEAAAAB", "AQAAAAEAAAAC", 1);
        assert_eq!(
            sealer.open("t", "s", &sealer.principal_tag("p"), &forged),
            Err(Refused::Forged)
        );
        for bad in ["", "abc", "a.b", "a.b.c", &format!("{id}x")] {
            assert_eq!(
                sealer.open("t", "s", &sealer.principal_tag("p"), bad),
                Err(Refused::Forged),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_file_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("ackkey-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(KEY_FILE);
        let a = AckIdSealer::load_or_create(&path).unwrap();
        let b = AckIdSealer::load_or_create(&path).unwrap();
        // The same key: what one seals, the other opens.
        let id = a.seal("t", "s", &a.principal_tag("p"), "inner");
        assert_eq!(b.open("t", "s", &b.principal_tag("p"), &id), Ok("inner"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
