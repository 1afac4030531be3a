//! Who is calling, and what they may do (issue 13; DESIGN-NOTES §8).
//!
//! * [`Principal`]: an authenticated caller: its name, the tenant it is bound
//!   to (if any), how it proved who it is, and its grants.
//! * [`Grant`]: a [`Permission`] on the topics a pattern matches, written
//!   `publish:orders.*` in config and in JWT claims, with the wildcards of
//!   type filters (`*` one segment, a final `>` one or more).
//! * [`AuthConfig`]: the `[auth]` config table; with nothing in it the
//!   server authenticates no one and every caller is
//!   [`Caller::Anonymous`](crate::grpc::context::Caller).

pub mod ack_id;
pub mod api_key;
pub mod authenticate;
pub mod jwt;
pub mod quota;
pub mod scope;

use std::fmt;

use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::grpc::context::Caller;
use crate::grpc::guard::Need;

/// What a grant allows on the topics its pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Publish to the topic.
    Publish,
    /// Subscribe to its subscriptions, ack and nack, replay its history.
    Subscribe,
    /// Create, update, delete, pause, seek; list, redrive and purge dead
    /// letters. `admin` on every topic (`admin:>`) of a principal bound to no
    /// tenant is the global admin grant that server-wide calls need.
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Publish => "publish",
            Permission::Subscribe => "subscribe",
            Permission::Admin => "admin",
        }
    }
}

/// A permission on the topics a pattern matches: `publish:orders.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Grant {
    pub permission: Permission,
    /// A topic pattern with type-filter wildcards; `>` alone is every topic.
    pub topics: String,
}

impl TryFrom<String> for Grant {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let (permission, topics) = text.split_once(':').ok_or_else(|| {
            format!("grant {text:?}: write permission:pattern, e.g. \"publish:orders.*\"")
        })?;
        let permission = match permission {
            "publish" => Permission::Publish,
            "subscribe" => Permission::Subscribe,
            "admin" => Permission::Admin,
            other => {
                return Err(format!(
                    "grant {text:?}: unknown permission {other:?}; use publish, subscribe or admin"
                ))
            }
        };
        eventbus_broker::filter::validate_type_pattern("grant", topics)
            .map_err(|e| format!("grant {text:?}: {e}"))?;
        Ok(Grant {
            permission,
            topics: topics.to_string(),
        })
    }
}

impl From<Grant> for String {
    fn from(grant: Grant) -> String {
        grant.to_string()
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.permission.as_str(), self.topics)
    }
}

/// How a principal proved who it is, with what it takes to check later
/// (after a reload of `[auth]`, or as time passes) that the proof still
/// holds: open Subscribe streams end when it no longer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A client certificate the server's TLS layer verified (mTLS).
    Certificate,
    /// A JWT bearer token verified against the configured keys.
    Jwt {
        /// When the token stops being valid: its `exp` plus the leeway,
        /// in seconds since the Unix epoch.
        valid_until: u64,
    },
    /// A static API key whose hash is in the config.
    ApiKey {
        /// The configured SHA-256 of the key, so a reload can tell whether
        /// this very key is still configured.
        hash: [u8; 32],
    },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name audit records, logs and quotas use: the certificate's
    /// subject name, the token's `sub`, or the API key's configured name.
    pub name: String,
    /// The tenant whose namespace the principal's topic names live in; None
    /// for a principal that sees the whole server.
    pub tenant: Option<String>,
    pub credential: Credential,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Whether a grant gives `permission` on `topic` (a name in the
    /// principal's namespace); `admin` implies `publish` and `subscribe`.
    pub fn allows(&self, permission: Permission, topic: &str) -> bool {
        self.grants.iter().any(|g| {
            (g.permission == permission || g.permission == Permission::Admin)
                && eventbus_broker::filter::type_matches(&g.topics, topic)
        })
    }

    /// Whether any grant names `topic`.
    pub fn sees(&self, topic: &str) -> bool {
        self.grants
            .iter()
            .any(|g| eventbus_broker::filter::type_matches(&g.topics, topic))
    }
}

/// The one permission check: whether `caller` may make a request that
/// needs `need`. A missing grant is PERMISSION_DENIED, naming the grant to
/// ask for.
pub fn authorize(caller: &Caller, action: &str, need: Need<'_>) -> Result<(), Status> {
    let Caller::Principal(p) = caller else {
        // No authentication configured: everyone may do everything.
        return Ok(());
    };
    let allowed = match need {
        Need::Topic(permission, topic) => p.allows(permission, topic),
        Need::AnyGrant(topic) => p.sees(topic),
        Need::Filtered => true,
        Need::Server => caller.is_global_admin(),
    };
    if allowed {
        return Ok(());
    }
    let wanted = match need {
        Need::Topic(permission, topic) => format!("{}:{topic}", permission.as_str()),
        Need::AnyGrant(topic) => format!("a grant on {topic}"),
        Need::Filtered | Need::Server => "admin:> with no tenant".to_string(),
    };
    Err(Status::permission_denied(format!(
        "principal {:?} may not call {action}: it needs {wanted}",
        p.name
    )))
}

/// The `[auth]` config table. Empty (the default): no authentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// Static API keys, stored as their SHA-256.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Grants and tenants of principals identified by a client certificate
    /// or a JWT without grant claims, by principal name.
    pub principals: Vec<PrincipalConfig>,
    /// JWT bearer tokens; absent: tokens are not accepted.
    pub jwt: Option<JwtConfig>,
    /// Identify callers by their verified client certificate (needs mTLS).
    pub client_certificates: bool,
    /// What each principal may use (`[auth.quotas]`); none by default.
    pub quotas: quota::QuotaConfig,
}

impl AuthConfig {
    /// Whether any way of authenticating is configured; without one the
    /// server serves anonymous callers, on loopback only unless `insecure`.
    pub fn enabled(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_some() || self.client_certificates
    }
}

/// One static API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiKeyConfig {
    /// The principal the key authenticates.
    pub principal: String,
    /// Hex SHA-256 of the key (`eventbus auth hash-key` prints it).
    pub sha256: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Grants and tenant of a principal named by a certificate or a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PrincipalConfig {
    pub name: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// JWT verification settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JwtConfig {
    /// A JWKS file; exactly one of `jwks-file` and `jwks-url`.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// A JWKS URL, fetched at start and refreshed at most once a minute.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Leeway for `exp` and `nbf`, in seconds. Default: 30.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Claim with the tenant. Default: `tenant`.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Claim with a list of grants (`"publish:orders.*"`). Default:
    /// `eventbus_grants`. Without it, grants come from `[[auth.principals]]`.
    #[serde(default = "default_grants_claim")]
    pub grants_claim: String,
}

fn default_leeway() -> u64 {
    30
}
fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_grants_claim() -> String {
    "eventbus_grants".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_print_as_permission_colon_pattern() {
        let g = Grant::try_from("publish:orders.*".to_string()).unwrap();
        assert_eq!(g.permission, Permission::Publish);
        assert_eq!(g.to_string(), "publish:orders.*");
        assert!(Grant::try_from("write:x".to_string())
            .unwrap_err()
            .contains("unknown permission"));
        assert!(Grant::try_from("admin".to_string())
            .unwrap_err()
            .contains("permission:pattern"));
        assert!(Grant::try_from("admin:a..b".to_string()).is_err());
    }
}
