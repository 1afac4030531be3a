//! Ack ids that cannot be guessed or forged.
//!
//! The backend's ack id names a lease (for RocksDB: subscription, partition,
//! offset and a generation: sequential, so guessable). What a client gets is
//! that id sealed to the subscription and the principal it was delivered to:
//!
//! `{backend id}.{principal tag}.2{mac}`, where the principal tag is the
//! first 6 bytes of HMAC-SHA256(key, "principal" ‖ name) and the MAC is
//! SipHash-2-4-128 of the backend id under a *lease key*: the first 16 bytes
//! of HMAC-SHA256(key, "lease-v2" ‖ topic ‖ subscription ‖ tag), both
//! base64url. The key is the server's (a file in the data dir, or
//! `ack-id-key-file` for gateways that must share it), so ids stay valid
//! across restarts. An id that does not verify is INVALID_ARGUMENT; one that
//! verifies but was delivered to another principal is PERMISSION_DENIED.
//!
//! Why two steps: every delivery is sealed and every ack opened, and a full
//! HMAC-SHA256 per id (three SHA-256 compressions) was ~9 % of the server's
//! CPU in a consume+ack run. The lease key is derived once per stream or
//! settle call ([`AckIdSealer::lease`]); SipHash, a PRF built for short
//! inputs, then costs tens of nanoseconds per id. The lease key binds the
//! topic, subscription and principal as the full HMAC did.
//!
//! Ids sealed by older builds (`{backend id}.{tag}.{mac}` with a 22-character
//! MAC: the first 16 bytes of HMAC-SHA256(key, topic ‖ subscription ‖ tag ‖
//! backend id)) still open, so deliveries in flight across an upgrade, and
//! ids sealed by gateways not yet upgraded, can be settled. The other way
//! round does not work: an older build refuses this format as forged
//! (RUNBOOK.md, "Ack ids across versions").

use std::hash::Hasher as _;
use std::path::Path;

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use siphasher::sip128::{Hasher128 as _, SipHasher24};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const TAG_BYTES: usize = 6;
const MAC_BYTES: usize = 16;
/// The first character of a MAC of the current format; the older format's
/// MAC is [`LEGACY_MAC_CHARS`] characters of base64url.
const MAC_VERSION: char = '2';
/// base64url without padding of [`MAC_BYTES`].
const LEGACY_MAC_CHARS: usize = 22;
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

    /// The sealer of ids of `subscription` on `topic` delivered to the
    /// principal whose tag is `tag`: its lease key derived once.
    pub fn lease(&self, topic: &str, subscription: &str, tag: &PrincipalTag) -> LeaseSealer {
        LeaseSealer {
            sealer: self.clone(),
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            key: self.lease_key(topic, subscription, &tag.0),
            tag: tag.clone(),
        }
    }

    fn lease_key(&self, topic: &str, subscription: &str, tag: &str) -> [u8; 16] {
        let mut mac = self.mac();
        mac.update(b"lease-v2\0");
        for part in [topic, subscription, tag] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        key
    }

    /// The MAC of ids sealed by older builds.
    fn legacy_mac(
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
}

/// Seals and opens the ack ids of one subscription for one principal
/// ([`AckIdSealer::lease`]).
#[derive(Clone)]
pub struct LeaseSealer {
    sealer: AckIdSealer,
    topic: String,
    subscription: String,
    tag: PrincipalTag,
    /// The lease key of (topic, subscription, tag).
    key: [u8; 16],
}

impl std::fmt::Debug for LeaseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSealer")
            .field("topic", &self.topic)
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

fn lease_mac(key: &[u8; 16], inner: &str) -> [u8; MAC_BYTES] {
    let mut h = SipHasher24::new_with_key(key);
    h.write(inner.as_bytes());
    h.finish128().as_bytes()
}

impl LeaseSealer {
    /// The id a client gets for the backend's `inner` id.
    pub fn seal(&self, inner: &str) -> String {
        let mac = lease_mac(&self.key, inner);
        let mut sealed = String::with_capacity(inner.len() + self.tag.0.len() + 26);
        sealed.push_str(inner);
        sealed.push('.');
        sealed.push_str(&self.tag.0);
        sealed.push('.');
        sealed.push(MAC_VERSION);
        URL_SAFE_NO_PAD.encode_string(mac, &mut sealed);
        sealed
    }

    /// The backend id inside `sealed`, if it was issued for this
    /// subscription and this principal.
    pub fn open<'a>(&self, sealed: &'a str) -> Result<&'a str, Refused> {
        let mut parts = sealed.rsplitn(3, '.');
        let (Some(mac), Some(tag), Some(inner)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Refused::Forged);
        };
        let (encoded, current) = match mac.strip_prefix(MAC_VERSION) {
            Some(rest) if mac.len() == LEGACY_MAC_CHARS + 1 => (rest, true),
            _ if mac.len() == LEGACY_MAC_CHARS => (mac, false),
            _ => return Err(Refused::Forged),
        };
        // Room for base64's estimate (18 bytes for 22 characters); exactly
        // MAC_BYTES must decode.
        let mut decoded = [0u8; MAC_BYTES + 2];
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut decoded) {
            Ok(MAC_BYTES) => {}
            _ => return Err(Refused::Forged),
        }
        let given = &decoded[..MAC_BYTES];
        let expected = match (current, tag == self.tag.0) {
            (true, true) => lease_mac(&self.key, inner),
            // Another principal's id: verified under its own lease key, so
            // that a genuine one is told apart from a forged one.
            (true, false) => lease_mac(
                &self.sealer.lease_key(&self.topic, &self.subscription, tag),
                inner,
            ),
            (false, _) => self
                .sealer
                .legacy_mac(&self.topic, &self.subscription, tag, inner),
        };
        if !bool::from(expected.ct_eq(given)) {
            return Err(Refused::Forged);
        }
        if tag != self.tag.0 {
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

    /// `sealer`'s lease sealer for (topic, subscription, principal).
    fn lease(sealer: &AckIdSealer, topic: &str, sub: &str, principal: &str) -> LeaseSealer {
        sealer.lease(topic, sub, &sealer.principal_tag(principal))
    }

    #[test]
    fn a_sealed_id_opens_only_for_its_subscription_and_principal() {
        let sealer = AckIdSealer::new([7; 32]);
        let id = lease(&sealer, "orders", "billing", "alice").seal("AQAAAAEAAAAA");
        assert_eq!(
            lease(&sealer, "orders", "billing", "alice").open(&id),
            Ok("AQAAAAEAAAAA")
        );
        assert_eq!(
            lease(&sealer, "orders", "billing", "mallory").open(&id),
            Err(Refused::OtherPrincipal)
        );
        assert_eq!(
            lease(&sealer, "orders", "audit", "alice").open(&id),
            Err(Refused::Forged)
        );
        assert_eq!(
            lease(&sealer, "other", "billing", "alice").open(&id),
            Err(Refused::Forged)
        );
        // Another key (another server) issued it.
        let other = AckIdSealer::new([8; 32]);
        assert_eq!(
            lease(&other, "orders", "billing", "alice").open(&id),
            Err(Refused::Forged)
        );
    }

    /// A principal's tag as the module doc gives it, computed from scratch.
    fn documented_tag(key: &[u8; 32], principal: &str) -> String {
        let mut m = HmacSha256::new_from_slice(key).unwrap();
        m.update(b"principal\0");
        m.update(principal.as_bytes());
        URL_SAFE_NO_PAD.encode(&m.finalize().into_bytes()[..TAG_BYTES])
    }

    /// The format is the one in the module doc, computed here from scratch:
    /// gateways of one cluster must agree on it byte for byte.
    #[test]
    fn the_format_is_the_documented_one() {
        let key = [9u8; 32];
        let fresh = || HmacSha256::new_from_slice(&key).unwrap();
        let tag = documented_tag(&key, "alice");
        let mut m = fresh();
        m.update(b"lease-v2\0");
        for part in ["orders", "billing", tag.as_str()] {
            m.update(&(part.len() as u32).to_be_bytes());
            m.update(part.as_bytes());
        }
        let lease_key: [u8; 16] = m.finalize().into_bytes()[..16].try_into().unwrap();
        let mut h = SipHasher24::new_with_key(&lease_key);
        h.write(b"AQAAAAEAAAAA");
        let mac = URL_SAFE_NO_PAD.encode(h.finish128().as_bytes());
        let expected = format!("AQAAAAEAAAAA.{tag}.2{mac}");
        let sealer = AckIdSealer::new(key);
        let alice = lease(&sealer, "orders", "billing", "alice");
        assert_eq!(alice.seal("AQAAAAEAAAAA"), expected);
        assert_eq!(alice.open(&expected), Ok("AQAAAAEAAAAA"));
    }

    /// Ids sealed by older builds (deliveries in flight across an upgrade,
    /// or from a gateway not yet upgraded) still open, with the same checks.
    #[test]
    fn ids_of_the_older_format_still_open() {
        let key = [9u8; 32];
        let fresh = || HmacSha256::new_from_slice(&key).unwrap();
        let tag = documented_tag(&key, "alice");
        let mut m = fresh();
        for part in ["orders", "billing", tag.as_str(), "AQAAAAEAAAAA"] {
            m.update(&(part.len() as u32).to_be_bytes());
            m.update(part.as_bytes());
        }
        let mac = URL_SAFE_NO_PAD.encode(&m.finalize().into_bytes()[..MAC_BYTES]);
        let old = format!("AQAAAAEAAAAA.{tag}.{mac}");
        let sealer = AckIdSealer::new(key);
        assert_eq!(
            lease(&sealer, "orders", "billing", "alice").open(&old),
            Ok("AQAAAAEAAAAA")
        );
        assert_eq!(
            lease(&sealer, "orders", "billing", "mallory").open(&old),
            Err(Refused::OtherPrincipal)
        );
        assert_eq!(
            lease(&sealer, "orders", "audit", "alice").open(&old),
            Err(Refused::Forged)
        );
        let altered = old.replacen("AQAAAAEAAAAA", "AQAAAAEAAAAB", 1);
        assert_eq!(
            lease(&sealer, "orders", "billing", "alice").open(&altered),
            Err(Refused::Forged)
        );
    }

    #[test]
    fn a_changed_byte_does_not_verify() {
        let sealer = AckIdSealer::new([1; 32]);
        let p = lease(&sealer, "t", "s", "p");
        let id = p.seal("AQAAAAEAAAAB");
        let forged = id.replacen("AQAAAAEAAAAB", "AQAAAAEAAAAC", 1);
        assert_eq!(p.open(&forged), Err(Refused::Forged));
        // The MAC's version character, or its last character, changed.
        let (head, mac) = id.rsplit_once('.').unwrap();
        let unversioned = format!("{head}.3{}", &mac[1..]);
        let mut last = mac.to_string();
        let c = last.pop().unwrap();
        last.push(if c == 'A' { 'B' } else { 'A' });
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            &format!("{id}x"),
            &unversioned,
            &format!("{head}.{last}"),
            &format!("{head}.{}", &mac[1..]),
        ] {
            assert_eq!(p.open(bad), Err(Refused::Forged), "{bad}");
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
        let id = lease(&a, "t", "s", "p").seal("inner");
        assert_eq!(lease(&b, "t", "s", "p").open(&id), Ok("inner"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
