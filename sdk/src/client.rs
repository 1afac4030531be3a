//! The connection: [`Client`] and its [`ClientBuilder`].

use std::path::Path;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::admin::Admin;
use crate::error::{Error, Result};
use crate::publisher::{Publisher, PublisherConfig};
use crate::subscription::{SubscriberConfig, Subscription};
use crate::v1::event_service_client::EventServiceClient;

/// Largest response accepted. A delivery batch, dead-letter page or replay
/// batch holds whole events (each up to the server's max event size), so
/// tonic's 4 MiB default is too small.
pub(crate) const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// The transport every generated client in this SDK runs on: one HTTP/2
/// connection (reconnected on demand) with the client's credentials attached.
pub type Channel = InterceptedService<tonic::transport::Channel, Credentials>;

/// Adds `authorization: Bearer <token>` and `x-api-key` to every call when
/// they are set. Their values never appear in `Debug` output.
#[derive(Clone, Default)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
    api_key: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.bearer {
            req.metadata_mut().insert("authorization", token.clone());
        }
        if let Some(key) = &self.api_key {
            req.metadata_mut().insert("x-api-key", key.clone());
        }
        Ok(req)
    }
}

/// A credential as a header value, marked sensitive so HTTP/2 never indexes
/// it (HPACK) and debug output hides it.
fn secret_header(value: String, what: &str) -> Result<MetadataValue<Ascii>> {
    let mut v: MetadataValue<Ascii> = value
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("{what} must be printable ASCII")))?;
    v.set_sensitive(true);
    Ok(v)
}

/// TLS settings for [`ClientBuilder::tls`]. An `https://` URL without them
/// uses TLS with the system's trusted roots.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// PEM-encoded CA certificate(s) to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Server name to verify, when it differs from the URL's host (e.g.
    /// connecting to `127.0.0.1` or through a tunnel).
    pub domain: Option<String>,
    /// PEM client certificate (chain) presented for mutual TLS; needs
    /// `client_key_pem`.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key of `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
}

/// Never prints the private key.
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("domain", &self.domain)
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|p| p.len()),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl TlsConfig {
    /// Reads the PEM files that are given: a CA to trust (else the system
    /// roots), and a client certificate with its key for mutual TLS.
    pub fn from_files(
        ca: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<TlsConfig> {
        let read = |path: Option<&Path>, what: &str| -> Result<Option<Vec<u8>>> {
            path.map(|p| {
                std::fs::read(p).map_err(|e| {
                    Error::InvalidArgument(format!("reading the {what} {}: {e}", p.display()))
                })
            })
            .transpose()
        };
        Ok(TlsConfig {
            ca_pem: read(ca, "TLS CA file")?,
            domain: None,
            client_cert_pem: read(client_cert, "TLS client certificate")?,
            client_key_pem: read(client_key, "TLS client key")?,
        })
    }

    /// Verify the server's certificate for `domain` instead of the URL's host.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn client_config(&self) -> Result<ClientTlsConfig> {
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_pem {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(cert, key)),
            (None, None) => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "a TLS client certificate needs its key, and a key its certificate".into(),
                ))
            }
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(tls)
    }
}

/// Configures a [`Client`]. Start with [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    url: String,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    bearer_token: Option<String>,
    api_key: Option<String>,
    tls: Option<TlsConfig>,
}

impl ClientBuilder {
    /// How long to wait for the TCP + HTTP/2 handshake. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline for each unary call (publish, ack, admin calls). Streams
    /// (Subscribe, Replay) are not cut by it. Default: none.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sends `authorization: Bearer <token>` (a JWT) with every call.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Sends `x-api-key: <key>` with every call.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Connects over TLS with these settings (CA, client certificate for
    /// mTLS, server name). A bare `host:port` then means `https://`; an
    /// `http://` URL is an error.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects now; fails if the server cannot be reached.
    pub async fn connect(self) -> Result<Client> {
        let (endpoint, credentials) = self.endpoint()?;
        let channel = endpoint.connect().await?;
        Ok(Client::from_parts(channel, credentials))
    }

    /// Returns at once; the connection is made by the first call (and remade
    /// after it breaks), so a server that starts later is fine.
    pub fn connect_lazy(self) -> Result<Client> {
        let (endpoint, credentials) = self.endpoint()?;
        Ok(Client::from_parts(endpoint.connect_lazy(), credentials))
    }

    fn endpoint(self) -> Result<(Endpoint, Credentials)> {
        let url = if self.url.contains("://") {
            self.url
        } else if self.tls.is_some() {
            format!("https://{}", self.url)
        } else {
            format!("http://{}", self.url)
        };
        let https = url.starts_with("https://");
        if self.tls.is_some() && !https {
            return Err(Error::InvalidArgument(format!(
                "TLS settings given, but {url:?} is not an https:// URL"
            )));
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::InvalidArgument(format!("server URL {url:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if let Some(t) = self.request_timeout {
            endpoint = endpoint.timeout(t);
        }
        if https {
            let tls = self.tls.unwrap_or_default().client_config()?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::InvalidArgument(format!("TLS settings: {e}")))?;
        }
        let bearer = match self.bearer_token {
            None => None,
            Some(token) => Some(secret_header(format!("Bearer {token}"), "bearer token")?),
        };
        let api_key = match self.api_key {
            None => None,
            Some(key) => Some(secret_header(key, "API key")?),
        };
        Ok((endpoint, Credentials { bearer, api_key }))
    }
}

/// A connection to an eventbus server. Cheap to clone; clones share the
/// connection, which multiplexes every call over HTTP/2.
///
/// ```no_run
/// # async fn demo() -> eventbus::Result<()> {
/// let client = eventbus::Client::connect("http://127.0.0.1:50051").await?;
/// let publisher = client.publisher("orders");
/// publisher
///     .publish(eventbus::Event::new("order.created", "{}").key("order-1"))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`; a bare `host:port`
    /// means `http://`) with default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        Client::builder(url).connect().await
    }

    /// Starts configuring a connection to `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            bearer_token: None,
            api_key: None,
            tls: None,
        }
    }

    fn from_parts(channel: tonic::transport::Channel, credentials: Credentials) -> Client {
        Client {
            channel: InterceptedService::new(channel, credentials),
        }
    }

    /// A batching publisher for `topic` with default settings.
    pub fn publisher(&self, topic: impl Into<String>) -> Publisher {
        self.publisher_with(topic, PublisherConfig::default())
    }

    /// A batching publisher for `topic`.
    pub fn publisher_with(&self, topic: impl Into<String>, config: PublisherConfig) -> Publisher {
        Publisher::new(self.events(), topic.into(), config)
    }

    /// Joins `subscription` on `topic` with default settings. Nothing is sent
    /// until the returned stream is first polled (or [`Subscription::run`]).
    pub fn subscribe(
        &self,
        topic: impl Into<String>,
        subscription: impl Into<String>,
    ) -> Subscription {
        self.subscribe_with(topic, subscription, SubscriberConfig::default())
    }

    /// Joins `subscription` on `topic`.
    pub fn subscribe_with(
        &self,
        topic: impl Into<String>,
        subscription: impl Into<String>,
        config: SubscriberConfig,
    ) -> Subscription {
        Subscription::new(self.clone(), topic.into(), subscription.into(), config)
    }

    /// Topics, subscriptions and dead letters.
    pub fn admin(&self) -> Admin {
        Admin::new(self.channel.clone())
    }

    /// The generated EventService client, for calls the SDK does not wrap
    /// (for example a raw Subscribe stream without lease extension).
    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The underlying channel, for other generated clients.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_needs_https_and_a_whole_client_identity() {
        let err = Client::builder("http://127.0.0.1:1")
            .tls(TlsConfig::default())
            .connect_lazy()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let half = TlsConfig {
            client_cert_pem: Some(b"cert".to_vec()),
            ..TlsConfig::default()
        };
        let err = Client::builder("127.0.0.1:1")
            .tls(half)
            .connect_lazy()
            .unwrap_err();
        assert!(err.to_string().contains("needs its key"), "{err}");
        // A bare host:port with TLS settings means https://.
        Client::builder("127.0.0.1:1")
            .tls(TlsConfig::default())
            .connect_lazy()
            .unwrap();
        let err = TlsConfig::from_files(Some(Path::new("/nonexistent/ca.pem")), None, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn bare_host_port_means_http() {
        Client::builder("127.0.0.1:1").connect_lazy().unwrap();
        let err = Client::builder("not a url").connect_lazy().unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn bearer_token_must_be_ascii() {
        let err = Client::builder("http://127.0.0.1:1")
            .bearer_token("bad\ntoken")
            .connect_lazy()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}
