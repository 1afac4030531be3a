//! JWT bearer tokens: RS256, ES256 and EdDSA, verified against the keys of a
//! JWKS file or URL.
//!
//! * **The algorithm is pinned per key**, from the JWK's `alg` or, without
//!   one, from its key type (RSA → RS256, EC P-256 → ES256, OKP Ed25519 →
//!   EdDSA); the token's header only picks the key by `kid`. A token whose
//!   header names another algorithm (`none`, HS256 against an RSA key) is
//!   refused. Symmetric (`oct`) keys in the set are ignored.
//! * `iss`, `aud`, `exp` and `sub` are required; `exp` and `nbf` get a small
//!   leeway.
//! * The key set is reloaded at most once a minute (a background task), so a
//!   rotated key is accepted within a minute of its publication.
//!
//! Error messages say what is wrong with the token, never the token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tonic::Status;

use super::{Credential, Grant, JwtConfig, Principal, PrincipalConfig};

/// How often the key set is reloaded.
pub const REFRESH: Duration = Duration::from_secs(60);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A usable key of the set.
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// The keys by `kid`; a key without a `kid` is stored under "".
#[derive(Default)]
struct KeySet(HashMap<String, Key>);

/// Verifies tokens against the current key set.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: RwLock<Arc<KeySet>>,
}

impl JwtVerifier {
    /// Loads the key set once; fails when it cannot be read or has no usable
    /// key, so a misconfigured server does not start.
    pub async fn new(config: JwtConfig) -> anyhow::Result<Arc<JwtVerifier>> {
        anyhow::ensure!(
            config.jwks_file.is_some() != config.jwks_url.is_some(),
            "auth.jwt needs exactly one of jwks-file and jwks-url"
        );
        let keys = load(&config).await?;
        anyhow::ensure!(
            !keys.0.is_empty(),
            "auth.jwt: the key set has no RS256, ES256 or EdDSA key"
        );
        Ok(Arc::new(JwtVerifier {
            config,
            keys: RwLock::new(Arc::new(keys)),
        }))
    }

    /// Reloads the key set every [`REFRESH`]; a failed reload keeps the old
    /// keys and logs why. Ends when the verifier is dropped.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                match load(&verifier.config).await {
                    Ok(keys) => {
                        *verifier.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading the JWKS failed; keeping the old keys")
                    }
                }
            }
        });
    }

    /// The principal a token names, or UNAUTHENTICATED saying what is wrong.
    pub fn verify(
        &self,
        token: &str,
        principals: &HashMap<String, PrincipalConfig>,
    ) -> Result<Principal, Status> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => {
                refused("its header names an algorithm this server never accepts")
            }
            _ => refused("it is not a well-formed JWT"),
        })?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let kid = header.kid.as_deref().unwrap_or("");
        let key = keys
            .0
            .get(kid)
            .or_else(|| (keys.0.len() == 1 && kid.is_empty()).then(|| keys.0.values().next())?)
            .ok_or_else(|| refused("it names a key id (kid) the JWKS does not have"))?;
        if header.alg != key.algorithm {
            return Err(refused(
                "its header's algorithm is not the one pinned for its key",
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
                .map_err(|e| refused(reason(e.kind())))?;
        self.principal(&data.claims, principals)
    }

    fn principal(
        &self,
        claims: &serde_json::Map<String, Value>,
        principals: &HashMap<String, PrincipalConfig>,
    ) -> Result<Principal, Status> {
        let name = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("its sub claim is missing or empty"))?;
        let configured = principals.get(name);
        let tenant = match claims.get(&self.config.tenant_claim) {
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(refused("its tenant claim is not a string")),
            None => configured.and_then(|p| p.tenant.clone()),
        };
        let grants = match claims.get(&self.config.grants_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| {
                    g.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "not a string".to_string())
                        .and_then(Grant::try_from)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refused(&format!("its grants claim has an invalid grant: {e}")))?,
            Some(_) => return Err(refused("its grants claim is not a list of strings")),
            None => configured.map(|p| p.grants.clone()).unwrap_or_default(),
        };
        Ok(Principal {
            name: name.to_string(),
            tenant,
            credential: Credential::Jwt {
                // Required and checked by `verify`.
                valid_until: claims
                    .get("exp")
                    .and_then(Value::as_f64)
                    .map_or(0, |exp| exp as u64)
                    .saturating_add(self.config.leeway_secs),
            },
            grants,
        })
    }
}

fn refused(why: &str) -> Status {
    Status::unauthenticated(format!("bearer token refused: {why}"))
}

fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "it has expired (exp)",
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "its issuer (iss) is not the configured one",
        ErrorKind::InvalidAudience => "its audience (aud) is not the configured one",
        ErrorKind::InvalidSignature => "its signature does not verify",
        ErrorKind::InvalidAlgorithm => "its algorithm is not the one pinned for its key",
        ErrorKind::MissingRequiredClaim(_) => "it lacks a required claim (exp, iss, aud, sub)",
        _ => "it is not a valid JWT",
    }
}

/// Reads and parses the configured key set.
async fn load(config: &JwtConfig) -> anyhow::Result<KeySet> {
    let text = if let Some(file) = &config.jwks_file {
        let bytes = tokio::fs::read(file)
            .await
            .with_context(|| format!("reading the JWKS file {}", file.display()))?;
        anyhow::ensure!(bytes.len() <= MAX_JWKS_BYTES, "the JWKS file is over 1 MiB");
        bytes
    } else {
        let url = config.jwks_url.as_deref().unwrap_or_default();
        fetch(url)
            .await
            .with_context(|| format!("fetching the JWKS from {url}"))?
    };
    let set: JwkSet =
        serde_json::from_slice(&text).context("the JWKS is not a JSON Web Key Set")?;
    Ok(KeySet(set.keys.iter().filter_map(usable).collect()))
}

async fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut resp = client.get(url).send().await?.error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
        anyhow::ensure!(body.len() <= MAX_JWKS_BYTES, "the JWKS is over 1 MiB");
    }
    Ok(body)
}

/// The key's id and its pinned algorithm, or None for a key we never accept.
fn usable(jwk: &Jwk) -> Option<(String, Key)> {
    let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(p))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (Some(KeyAlgorithm::EdDSA), AlgorithmParameters::OctetKeyPair(p))
            if p.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        (None, AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((
        jwk.common.key_id.clone().unwrap_or_default(),
        Key { key, algorithm },
    ))
}
