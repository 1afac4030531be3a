//! Certificates made at test time (rcgen), PEM files for a server's `[tls]`
//! table, and TLS clients: tonic channels and a raw HTTPS GET.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The name every test server certificate is issued for.
pub const SERVER_NAME: &str = "localhost";

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM: what clients (or the server, for client
    /// certificates) trust.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server_cert(&self) -> CertKey {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name = dn(SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate whose URI SAN is `identity` (and CN `cn`).
    pub fn client_cert(&self, identity: &str) -> CertKey {
        self.issue(client_params(identity))
    }

    /// A client certificate that expired in 2020.
    pub fn expired_client_cert(&self, identity: &str) -> CertKey {
        let mut params = client_params(identity);
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> CertKey {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn client_params(identity: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("eventbus-test-client");
    params.subject_alt_names = vec![SanType::URI(identity.try_into().expect("URI SAN"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// The PEM files a server reads, in a temp dir of their own.
pub struct TlsFiles {
    _dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl TlsFiles {
    /// Writes `server` and, for mTLS, the CA that client certificates must
    /// chain to.
    pub fn write(server: &CertKey, client_ca: Option<&Ca>) -> TlsFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: dir.path().join("ca.crt"),
            _dir: dir,
        };
        files.rotate(server);
        if let Some(ca) = client_ca {
            std::fs::write(&files.client_ca, ca.pem()).expect("write ca.crt");
        }
        files
    }

    /// Replaces the server certificate and key, each file atomically (as
    /// cert-manager's Secret update does).
    pub fn rotate(&self, server: &CertKey) {
        write_atomically(&self.key, &server.key_pem);
        write_atomically(&self.cert, &server.cert_pem);
    }

    /// The server's `[tls]` table for these files, checked every 50 ms.
    pub fn config(&self, mtls: bool) -> eventbus_server::transport::TlsConfig {
        eventbus_server::transport::TlsConfig {
            cert_file: Some(self.cert.clone()),
            key_file: Some(self.key.clone()),
            client_ca_file: mtls.then(|| self.client_ca.clone()),
            reload_interval: Duration::from_millis(50),
        }
    }

    /// The same as `EVENTBUS_TLS__*` variables for a child server.
    pub fn env(&self, mtls: bool) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.display().to_string();
        let mut env = vec![
            ("EVENTBUS_TLS__CERT_FILE", path(&self.cert)),
            ("EVENTBUS_TLS__KEY_FILE", path(&self.key)),
        ];
        if mtls {
            env.push(("EVENTBUS_TLS__CLIENT_CA_FILE", path(&self.client_ca)));
        }
        env
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// An endpoint for `https://addr` that trusts `ca` only, verifies the name
/// `localhost`, and presents `client` when given.
pub fn tls_endpoint(addr: SocketAddr, ca: &Ca, client: Option<&CertKey>) -> Endpoint {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name(SERVER_NAME);
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .expect("tls config")
}

/// A lazily connected TLS channel, see [`tls_endpoint`].
pub fn tls_channel(addr: SocketAddr, ca: &Ca, client: Option<&CertKey>) -> Channel {
    tls_endpoint(addr, ca, client).connect_lazy()
}

/// A raw rustls client config trusting `ca`, presenting `client` when given.
pub fn rustls_client(ca: &Ca, client: Option<&CertKey>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA PEM"))
        .expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("cert PEM")],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key PEM"),
            )
            .expect("client auth"),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Connects to `addr` with TLS (trusting `ca`, presenting `client`) and
/// reads once: with TLS 1.3 the client finishes its side of the handshake
/// before the server has checked the client certificate, so a refusal
/// arrives as an alert on the first read. Returns the error the client saw,
/// or `Ok` if the server accepted the handshake (and then waited for the
/// HTTP/2 preface).
pub async fn tls_handshake(
    addr: SocketAddr,
    ca: &Ca,
    client: Option<&CertKey>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(rustls_client(ca, client));
    let name = rustls_pki_types::ServerName::try_from(SERVER_NAME).expect("name");
    let mut tls = connector.connect(name, tcp).await?;
    // Send the HTTP/2 preface, so an accepted connection is kept open and
    // the read below only ends with the server's verdict or a timeout.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await {
        // The server's HTTP/2 SETTINGS: accepted.
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without a word",
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(()),
    }
}

/// `GET https://addr/path` (HTTP/1.0) trusting `ca`, without a client
/// certificate; returns (status, body).
pub async fn https_get(addr: SocketAddr, ca: &Ca, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut config = (*rustls_client(ca, None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(SERVER_NAME).expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: {SERVER_NAME}\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    // A TLS server may close without close_notify; what was read counts.
    let _ = tls.read_to_end(&mut raw).await;
    crate::parse_http_response(&String::from_utf8_lossy(&raw))
}
