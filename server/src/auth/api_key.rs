//! Static API keys, stored as their SHA-256 and compared in constant time.
//!
//! Keys are long random strings, so a fast hash is enough: a slow password
//! hash on every call would cost more than the publish it guards. The key
//! itself never leaves this module, not even into an error message.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiKeyConfig, Credential, Principal};

/// The configured keys, by hash.
#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Arc<Principal>)>,
}

impl ApiKeys {
    pub fn new(config: &[ApiKeyConfig]) -> anyhow::Result<ApiKeys> {
        let mut keys = Vec::with_capacity(config.len());
        for key in config {
            let hash = parse_hash(&key.sha256).ok_or_else(|| {
                anyhow::anyhow!(
                    "auth.api-keys: the key of principal {:?} needs sha256 = 64 hex digits \
                     (`eventbus auth hash-key` prints them)",
                    key.principal
                )
            })?;
            keys.push((
                hash,
                Arc::new(Principal {
                    name: key.principal.clone(),
                    tenant: key.tenant.clone(),
                    credential: Credential::ApiKey { hash },
                    grants: key.grants.clone(),
                }),
            ));
        }
        Ok(ApiKeys { keys })
    }

    /// The principal whose key this is. Every configured hash is compared,
    /// each in constant time, so the answer's timing says nothing about
    /// which key came close.
    pub fn find(&self, presented: &str) -> Option<Arc<Principal>> {
        let hash = hash_key(presented);
        let mut found = None;
        for (known, principal) in &self.keys {
            if bool::from(known.ct_eq(&hash)) {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// Whether the key of `hash` is still configured for exactly `principal`.
    pub fn holds(&self, hash: &[u8; 32], principal: &Principal) -> bool {
        self.keys
            .iter()
            .any(|(known, p)| known == hash && **p == *principal)
    }
}

/// SHA-256 of a key, as stored in config.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The hex form config takes (`sha256 = "…"`).
pub fn hash_key_hex(key: &str) -> String {
    hash_key(key).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(principal: &str, key: &str) -> ApiKeyConfig {
        ApiKeyConfig {
            principal: principal.into(),
            sha256: hash_key_hex(key),
            tenant: None,
            grants: vec![],
        }
    }

    #[test]
    fn a_key_finds_its_principal_and_nothing_else_does() {
        let keys =
            ApiKeys::new(&[config("a", "key-a-0123456789"), config("b", "key-b-987")]).unwrap();
        assert_eq!(keys.find("key-a-0123456789").unwrap().name, "a");
        assert_eq!(keys.find("key-b-987").unwrap().name, "b");
        assert!(keys.find("key-a-012345678").is_none());
        assert!(keys.find("").is_none());
    }

    #[test]
    fn a_malformed_hash_is_refused_at_start() {
        let mut bad = config("a", "k");
        bad.sha256 = "abc".into();
        let err = ApiKeys::new(&[bad]).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
