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

use tonic::Status;

use super::api_key::ApiKeys;
use super::jwt::JwtVerifier;
use super::{AuthConfig, Credential, Principal, PrincipalConfig};
use crate::grpc::context::Caller;

/// The header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Knows every credential the config accepts.
pub struct Authenticator {
    api_keys: ApiKeys,
    principals: HashMap<String, PrincipalConfig>,
    jwt: Option<Arc<JwtVerifier>>,
    certificates: bool,
}

impl Authenticator {
    /// Builds the authenticator of `config`; None when authentication is not
    /// configured. Fails when a key, a grant or the JWKS is unusable.
    pub async fn new(config: &AuthConfig) -> anyhow::Result<Option<Arc<Authenticator>>> {
        if !config.enabled() {
            return Ok(None);
        }
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
        Ok(Some(Arc::new(Authenticator {
            api_keys: ApiKeys::new(&config.api_keys)?,
            principals,
            jwt,
            certificates: config.client_certificates,
        })))
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
        if let Some(key) = headers.get(API_KEY_HEADER) {
            let key = key.to_str().unwrap_or_default();
            return self
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
            let jwt = self.jwt.as_ref().ok_or_else(|| {
                Status::unauthenticated(
                    "this server accepts no bearer tokens; send an API key in x-api-key",
                )
            })?;
            return jwt
                .verify(token.trim(), &self.principals)
                .map(|p| Caller::Principal(Arc::new(p)));
        }
        if let (true, Some(name)) = (self.certificates, peer_identity) {
            let configured = self.principals.get(&name);
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
