//! Turns a request's credentials into a [`Caller`]: an API key
//! (`x-api-key`), a JWT (`authorization: Bearer`), or a verified client
//! certificate. Called once per request by the RPC layer
//! ([`crate::ops::rpc`]), before any handler runs.
//!
//! With authentication configured, a request without a credential, or with
//! one that does not verify, is UNAUTHENTICATED. Health and reflection stay
//! open: they reveal nothing but the schema and whether the server is up,
//! and probes carry no credentials.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tonic::Status;

use super::api_key::ApiKeys;
use super::jwt::JwtVerifier;
use super::{AuthConfig, Credential, Principal, PrincipalConfig};
use crate::grpc::context::Caller;

/// The header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Knows every credential the config accepts. `[auth]` can be reloaded
/// while serving ([`Authenticator::reload`]): requests are checked against
/// the new config at once, and open Subscribe streams whose caller it no
/// longer admits end ([`Authenticator::until_refused`]).
pub struct Authenticator {
    accepted: ArcSwap<Accepted>,
    /// Bumped by every reload, so that open streams check their caller again.
    generation: watch::Sender<u64>,
}

/// The credentials one version of `[auth]` accepts.
struct Accepted {
    api_keys: ApiKeys,
    principals: HashMap<String, PrincipalConfig>,
    jwt: Option<Arc<JwtVerifier>>,
    certificates: bool,
}

impl Accepted {
    async fn new(config: &AuthConfig) -> anyhow::Result<Accepted> {
        let jwt = match &config.jwt {
            Some(jwt) => {
                let verifier = JwtVerifier::new(jwt.clone()).await?;
                verifier.spawn_refresh();
                Some(verifier)
            }
            None => None,
        };
        let mut principals = HashMap::new();
        for p in &config.principals {
            anyhow::ensure!(
                principals.insert(p.name.clone(), p.clone()).is_none(),
                "auth.principals: {:?} is configured twice",
                p.name
            );
        }
        Ok(Accepted {
            api_keys: ApiKeys::new(&config.api_keys)?,
            principals,
            jwt,
            certificates: config.client_certificates,
        })
    }

    /// Whether this config still admits `p`, as it was authenticated: the
    /// same key with the same name, tenant and grants; a certificate
    /// principal configured the same; a token not expired while tokens are
    /// still accepted.
    fn admits(&self, p: &Principal, now_secs: u64) -> bool {
        match p.credential {
            Credential::ApiKey { hash } => self.api_keys.holds(&hash, p),
            Credential::Certificate => {
                self.certificates
                    && self
                        .principals
                        .get(&p.name)
                        .map_or(p.grants.is_empty() && p.tenant.is_none(), |c| {
                            c.grants == p.grants && c.tenant == p.tenant
                        })
            }
            Credential::Jwt { valid_until } => self.jwt.is_some() && now_secs <= valid_until,
        }
    }
}

impl Authenticator {
    /// Builds the authenticator of `config`; None when authentication is not
    /// configured. Fails when a key, a grant or the JWKS is unusable.
    pub async fn new(config: &AuthConfig) -> anyhow::Result<Option<Arc<Authenticator>>> {
        if !config.enabled() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Authenticator {
            accepted: ArcSwap::from_pointee(Accepted::new(config).await?),
            generation: watch::Sender::new(0),
        })))
    }

    /// Accepts the credentials of `config` from now on. A config that does
    /// not load, or that turns authentication off (which the exposure rules
    /// check only at start), is refused and the old one stays.
    pub async fn reload(&self, config: &AuthConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            config.enabled(),
            "the new [auth] configures no credentials; turning authentication off needs a restart"
        );
        self.accepted.store(Arc::new(Accepted::new(config).await?));
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Resolves, with the status to end a stream with, once `caller` is no
    /// longer admitted: a reload dropped or changed its credential, or its
    /// token expired. Never resolves for an anonymous caller.
    pub async fn until_refused(self: Arc<Self>, caller: Caller) -> Status {
        let Caller::Principal(p) = caller else {
            return std::future::pending().await;
        };
        let mut reloads = self.generation.subscribe();
        loop {
            let now = unix_secs();
            if !self.accepted.load().admits(&p, now) {
                return match p.credential {
                    Credential::Jwt { valid_until } if now > valid_until => {
                        Status::unauthenticated(
                            "the bearer token expired; reconnect with a fresh one",
                        )
                    }
                    _ => Status::unauthenticated(
                        "the server no longer accepts this stream's credentials; \
                         reconnect with valid ones",
                    ),
                };
            }
            // A token is checked again just after it expires.
            let expiry = async {
                match p.credential {
                    Credential::Jwt { valid_until } => {
                        let left = valid_until.saturating_sub(now).saturating_add(1);
                        tokio::time::sleep(Duration::from_secs(left)).await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = reloads.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                () = expiry => {}
            }
        }
    }

    /// Whether `path` (an HTTP/2 request path) needs no credentials.
    pub fn is_open(path: &str) -> bool {
        path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
    }

    /// The caller of a request, or UNAUTHENTICATED saying what to send.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer_identity: Option<String>,
    ) -> Result<Caller, Status> {
        let accepted = self.accepted.load();
        if let Some(key) = headers.get(API_KEY_HEADER) {
            let key = key.to_str().unwrap_or_default();
            return accepted
                .api_keys
                .find(key)
                .map(Caller::Principal)
                .ok_or_else(|| Status::unauthenticated("the API key (x-api-key) is not valid"));
        }
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("the authorization header must be `Bearer <JWT>`")
                })?;
            let jwt = accepted.jwt.as_ref().ok_or_else(|| {
                Status::unauthenticated(
                    "this server accepts no bearer tokens; send an API key in x-api-key",
                )
            })?;
            return jwt
                .verify(token.trim(), &accepted.principals)
                .map(|p| Caller::Principal(Arc::new(p)));
        }
        if let (true, Some(name)) = (accepted.certificates, peer_identity) {
            let configured = accepted.principals.get(&name);
            return Ok(Caller::Principal(Arc::new(Principal {
                tenant: configured.and_then(|p| p.tenant.clone()),
                grants: configured.map(|p| p.grants.clone()).unwrap_or_default(),
                name,
                credential: Credential::Certificate,
            })));
        }
        Err(Status::unauthenticated(
            "no credentials: send `authorization: Bearer <JWT>`, an API key in x-api-key, \
             or a client certificate",
        ))
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}
