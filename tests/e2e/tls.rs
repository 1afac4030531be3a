//! TLS and mTLS on both ports (issue 13, transport): each refusal with the
//! exact error the client sees, the server still serving afterwards; the
//! verified client identity reaching the tower layers; certificate rotation
//! without a restart.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use eventbus::{Client, Event, TlsConfig};
use eventbus_server::transport::{peer_identity, ConnectionLimits, Transport};
use eventbus_tests::tls::{https_get, tls_channel, tls_endpoint, tls_handshake, Ca, TlsFiles};
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::{DataDir, TestServer};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

use crate::support::{event, publish, PATIENCE};

/// A server with `[tls]` from `files`; the harness's client trusts `ca`
/// and presents `client`.
async fn tls_server(
    files: &TlsFiles,
    mtls: bool,
    ca: &Ca,
    client: Option<&eventbus_tests::tls::CertKey>,
) -> TestServer {
    let tls = files.config(mtls);
    TestServer::start_with_channel(
        DataDir::Fresh,
        |c| c.tls = tls,
        |addr| tls_channel(addr, ca, client),
    )
    .await
}

/// tonic reports a connection that failed under a call as UNKNOWN
/// "transport error", with the cause (an I/O error, a TLS alert) in the
/// source chain; this asserts that and returns the chain as text.
fn transport_error(err: &tonic::Status) -> String {
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unknown, "transport error"),
        "{err:?}"
    );
    let mut chain = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        chain.push_str(&format!("{e}; "));
        source = e.source();
    }
    chain
}

/// Publishes one event over `channel`; the call's result.
async fn try_publish(channel: Channel, topic: &str) -> Result<(), tonic::Status> {
    EventServiceClient::new(channel)
        .publish(eventbus_tests::v1::PublishRequest {
            topic: topic.into(),
            events: vec![event("k", "t", "x")],
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn plaintext_client_to_a_tls_port_fails_and_tls_clients_keep_working() {
    let ca = Ca::new("server-ca");
    let files = TlsFiles::write(&ca.server_cert(), None);
    let server = tls_server(&files, false, &ca, None).await;

    // h2c to a TLS port: the server reads the HTTP/2 preface as a broken
    // TLS record and answers with a TLS alert, which the client reads as
    // an HTTP/2 frame far over its size limit.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy();
    let err = try_publish(plain, "plain").await.unwrap_err();
    println!("plaintext client to the TLS port: {err:?}");
    assert_eq!(
        (err.code(), err.message()),
        (Code::Internal, "h2 protocol error: http2 error"),
        "{err:?}"
    );
    assert!(format!("{err:?}").contains("FRAME_SIZE_ERROR"), "{err:?}");

    // The server goes on serving TLS clients.
    let mut events = server.events();
    publish(&mut events, "tls", vec![event("k", "t", "over tls")]).await;

    // The side port speaks TLS too, with no client certificate.
    let (status, body) = https_get(server.metrics_addr, &ca, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // ... and refuses plaintext HTTP.
    let mut tcp = tokio::net::TcpStream::connect(server.metrics_addr)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("ready"),
        "plaintext HTTP to the TLS side port got {buf:?}"
    );
}

#[tokio::test]
async fn mtls_refuses_missing_untrusted_and_expired_client_certs_at_the_handshake() {
    let server_ca = Ca::new("server-ca");
    let client_ca = Ca::new("client-ca");
    let rogue_ca = Ca::new("rogue-ca");
    let good = client_ca.client_cert("spiffe://eventbus.test/good");
    let files = TlsFiles::write(&server_ca.server_cert(), Some(&client_ca));
    let server = tls_server(&files, true, &server_ca, Some(&good)).await;

    let wrong_ca = rogue_ca.client_cert("spiffe://eventbus.test/rogue");
    let expired = client_ca.expired_client_cert("spiffe://eventbus.test/expired");
    let cases = [
        ("no client certificate", None, "CertificateRequired"),
        (
            "a client certificate from another CA",
            Some(&wrong_ca),
            "UnknownCA",
        ),
        (
            "an expired client certificate",
            Some(&expired),
            "CertificateExpired",
        ),
    ];
    for (what, cert, alert) in cases {
        // The raw handshake: the server's alert names the reason.
        let err = tls_handshake(server.addr, &server_ca, cert)
            .await
            .expect_err(what);
        assert!(
            format!("{err}").contains(alert),
            "{what}: expected the alert {alert}, got {err}"
        );
        // A gRPC client: the call fails with the same alert, and nothing
        // reaches a handler.
        let err = try_publish(tls_channel(server.addr, &server_ca, cert), "refused")
            .await
            .expect_err(what);
        let cause = transport_error(&err);
        assert!(cause.contains(alert), "{what}: {cause}");
        println!("mTLS, {what}: handshake alert {alert}; gRPC: {err}: {cause}");
    }

    // The server still serves a client with a valid certificate, and the
    // refused publishes never happened.
    let mut events = server.events();
    publish(&mut events, "after", vec![event("k", "t", "still serving")]).await;
    let topics = server
        .admin()
        .list_topics(eventbus_tests::v1::ListTopicsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert!(topics.iter().all(|t| t.name != "refused"), "{topics:?}");

    // Probes: the side port never asks for a client certificate.
    let (status, _) = https_get(server.metrics_addr, &server_ca, "/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = https_get(server.metrics_addr, &server_ca, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn sdk_with_a_valid_client_certificate_publishes_and_subscribes() {
    let server_ca = Ca::new("server-ca");
    let client_ca = Ca::new("client-ca");
    let good = client_ca.client_cert("spiffe://eventbus.test/orders");
    let files = TlsFiles::write(&server_ca.server_cert(), Some(&client_ca));
    let server = tls_server(&files, true, &server_ca, Some(&good)).await;

    let tls = TlsConfig {
        ca_pem: Some(server_ca.pem().into_bytes()),
        client_cert_pem: Some(good.cert_pem.clone().into_bytes()),
        client_key_pem: Some(good.key_pem.clone().into_bytes()),
        ..TlsConfig::default()
    }
    .domain(eventbus_tests::tls::SERVER_NAME);
    // A bare host:port with TLS settings means https://.
    let client = Client::builder(server.addr.to_string())
        .tls(tls)
        .connect()
        .await
        .expect("mTLS connect");
    let publisher = client.publisher("orders");
    for i in 0..5 {
        publisher
            .publish(Event::new("order.created", format!("order {i}")).key(format!("o{i}")))
            .await
            .expect("publish over mTLS");
    }
    let mut sub = client.subscribe("orders", "billing");
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let msg = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("a delivery in time")
            .expect("stream open")
            .expect("delivery");
        seen.push(String::from_utf8(msg.event().payload.to_vec()).unwrap());
        msg.ack().await.expect("ack");
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..5).map(|i| format!("order {i}")).collect::<Vec<_>>()
    );

    // The SDK without the client certificate is refused.
    let no_cert = TlsConfig {
        ca_pem: Some(server_ca.pem().into_bytes()),
        ..TlsConfig::default()
    }
    .domain(eventbus_tests::tls::SERVER_NAME);
    let client = Client::builder(server.addr.to_string())
        .tls(no_cert)
        .connect_lazy()
        .unwrap();
    // The generated client: no SDK retries, the first call's status.
    let err = client
        .events()
        .publish(eventbus::v1::PublishRequest {
            topic: "orders".into(),
            events: vec![event("k", "t", "nope")],
        })
        .await
        .expect_err("no client certificate");
    let cause = transport_error(&err);
    assert!(cause.contains("CertificateRequired"), "{cause}");
}

/// With `client-certificates = true`, a verified certificate is the caller:
/// its URI SAN names a configured principal, whose grants and tenant apply;
/// a trusted certificate naming no configured principal has no grants.
#[tokio::test]
async fn a_client_certificate_is_a_principal_with_its_configured_grants() {
    use eventbus_server::auth::{AuthConfig, Grant, PrincipalConfig};
    use eventbus_tests::v1::admin_service_client::AdminServiceClient;
    const WRITER: &str = "spiffe://eventbus.test/orders-writer";
    const ACME: &str = "spiffe://eventbus.test/acme-admin";
    let server_ca = Ca::new("server-ca");
    let client_ca = Ca::new("client-ca");
    let writer = client_ca.client_cert(WRITER);
    let acme = client_ca.client_cert(ACME);
    let stranger = client_ca.client_cert("spiffe://eventbus.test/stranger");
    let files = TlsFiles::write(&server_ca.server_cert(), Some(&client_ca));
    let tls = files.config(true);
    let principal = |name: &str, tenant: Option<&str>, grants: &[&str]| PrincipalConfig {
        name: name.into(),
        tenant: tenant.map(str::to_string),
        grants: grants
            .iter()
            .map(|g| Grant::try_from(g.to_string()).unwrap())
            .collect(),
    };
    let server = TestServer::start_with_channel(
        DataDir::Fresh,
        |c| {
            c.tls = tls;
            c.auth = AuthConfig {
                client_certificates: true,
                principals: vec![
                    principal(WRITER, None, &["publish:orders.>"]),
                    principal(ACME, Some("acme"), &["admin:>"]),
                ],
                ..AuthConfig::default()
            };
        },
        |addr| tls_channel(addr, &server_ca, Some(&writer)),
    )
    .await;
    let as_cert = |cert| tls_channel(server.addr, &server_ca, Some(cert));

    // The writer publishes under its grant, and is its topic's creator.
    try_publish(as_cert(&writer), "orders.created")
        .await
        .expect("publish:orders.> covers orders.created");
    let err = try_publish(as_cert(&writer), "payments")
        .await
        .expect_err("no grant on payments");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("publish:payments"), "{err:?}");
    let err = AdminServiceClient::new(as_cert(&writer))
        .delete_topic(eventbus_tests::v1::DeleteTopicRequest {
            topic: "orders.created".into(),
        })
        .await
        .expect_err("publish is not admin");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A trusted certificate of no configured principal: authenticated, no grants.
    let err = try_publish(as_cert(&stranger), "orders.created")
        .await
        .expect_err("no grants");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The acme admin works in its tenant's namespace only.
    let mut acme_admin = AdminServiceClient::new(as_cert(&acme));
    try_publish(as_cert(&acme), "orders.created")
        .await
        .expect("acme's own orders.created");
    let topics = acme_admin
        .list_topics(eventbus_tests::v1::ListTopicsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .topics;
    let names: Vec<_> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["orders.created"], "acme sees only its own topic");
    assert_eq!(topics[0].creator, ACME);
}

/// A tower layer that records `peer_identity` of every request it sees, as
/// the authentication layer will.
#[derive(Clone)]
struct RecordIdentity(Arc<Mutex<Vec<Option<String>>>>);

impl<S> tower::Layer<S> for RecordIdentity {
    type Service = Recorded<S>;
    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded(self.0.clone(), inner)
    }
}

#[derive(Clone)]
struct Recorded<S>(Arc<Mutex<Vec<Option<String>>>>, S);

impl<S, B> tower::Service<http::Request<B>> for Recorded<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.1.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.0.lock().unwrap().push(peer_identity(req.extensions()));
        Box::pin(self.1.call(req))
    }
}

/// The server's own transport (accept loop, rustls, tonic), with a layer
/// in the place of the authentication layer: the verified client
/// certificate's URI SAN is there; without mTLS nothing is.
#[tokio::test]
async fn peer_identity_reaches_the_tower_layers() {
    let server_ca = Ca::new("server-ca");
    let client_ca = Ca::new("client-ca");
    let files = TlsFiles::write(&server_ca.server_cert(), Some(&client_ca));
    let id = "spiffe://eventbus.test/ns/prod/sa/orders";
    let client = client_ca.client_cert(id);

    for mtls in [true, false] {
        let transport = Transport::new(&files.config(mtls), &ConnectionLimits::default())
            .await
            .expect("transport");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (_health, health_service) = tonic_health::server::health_reporter();
        let router = transport
            .server()
            .layer(RecordIdentity(seen.clone()))
            .add_service(health_service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = transport.grpc(listener).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(eventbus_server::transport::serve_grpc(
            router,
            incoming,
            async {
                let _ = stopped.await;
            },
        ));
        let channel = tls_endpoint(addr, &server_ca, mtls.then_some(&client))
            .connect()
            .await
            .expect("connect");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health over TLS");
        let expected = mtls.then(|| id.to_string());
        assert_eq!(*seen.lock().unwrap(), vec![expected], "mtls={mtls}");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_used_by_new_connections_without_a_restart() {
    let old_ca = Ca::new("old-ca");
    let new_ca = Ca::new("new-ca");
    let files = TlsFiles::write(&old_ca.server_cert(), None);
    let server = tls_server(&files, false, &old_ca, None).await;
    // A connection made before the rotation, kept open.
    let old_channel = tls_endpoint(server.addr, &old_ca, None)
        .connect()
        .await
        .expect("connect with the old CA");
    try_publish(old_channel.clone(), "rot").await.unwrap();

    files.rotate(&new_ca.server_cert());
    // New connections trusting only the new CA succeed once the poller
    // (every 50 ms) has swapped the config.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tls_handshake(server.addr, &new_ca, None).await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the new certificate was never served: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    try_publish(tls_channel(server.addr, &new_ca, None), "rot")
        .await
        .expect("a new connection trusting only the new CA");
    let err = try_publish(tls_channel(server.addr, &old_ca, None), "rot")
        .await
        .expect_err("the old certificate is gone for new connections");
    // The client refuses the server's new certificate during its connect.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("UnknownIssuer"), "{err:?}");
    // The connection made before the rotation keeps working.
    try_publish(old_channel, "rot")
        .await
        .expect("old connection");

    // A broken file (a half-written rotation) keeps the current certificate.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    // Several poll intervals, so the poller has seen the bad file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    try_publish(tls_channel(server.addr, &new_ca, None), "rot")
        .await
        .expect("still the new certificate after a bad rewrite");
}

/// The operator CLI over mTLS: `--tls-*` flags and `EVENTBUS_TLS_*`
/// variables; a missing client certificate is exit 1 with the alert.
#[tokio::test]
async fn cli_connects_with_tls_flags_and_variables() {
    let server_ca = Ca::new("server-ca");
    let client_ca = Ca::new("client-ca");
    let good = client_ca.client_cert("spiffe://eventbus.test/operator");
    let files = TlsFiles::write(&server_ca.server_cert(), Some(&client_ca));
    let server = tls_server(&files, true, &server_ca, Some(&good)).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.crt", &server_ca.pem()),
        write("client.crt", &good.cert_pem),
        write("client.key", &good.key_pem),
    );
    let addr = server.addr.to_string();
    let run = |args: &[&str], env: Vec<(&str, &str)>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eventbus-under-test"));
        cmd.args(args)
            .env_remove("EVENTBUS_SERVER")
            .envs(env)
            .stdin(std::process::Stdio::null());
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the CLI"))
                .await
                .unwrap();
            (
                out.status.code().expect("exit code"),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    // A bare host:port with TLS flags means https://.
    let server_flags = [
        "--server",
        &addr,
        "--tls-ca",
        &ca,
        "--tls-server-name",
        "localhost",
    ];
    let client_cert = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];

    let args = [
        &server_flags[..],
        &client_cert,
        &["topic", "create", "cli-tls"],
    ]
    .concat();
    let (code, _, stderr) = run(&args, vec![]).await;
    assert_eq!(code, 0, "{stderr}");

    // The same from the environment.
    let env = vec![
        ("EVENTBUS_SERVER", addr.as_str()),
        ("EVENTBUS_TLS_CA", ca.as_str()),
        ("EVENTBUS_TLS_CERT", cert.as_str()),
        ("EVENTBUS_TLS_KEY", key.as_str()),
        ("EVENTBUS_TLS_SERVER_NAME", "localhost"),
    ];
    let (code, stdout, stderr) = run(&["topic", "list", "--json"], env).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"cli-tls\""), "{stdout}");

    // Without a client certificate: refused at the handshake, exit 1.
    let args = [&server_flags[..], &["topic", "list"]].concat();
    let (code, _, stderr) = run(&args, vec![]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("CertificateRequired"), "{stderr}");

    // A certificate without its key is a usage error.
    let args = [&server_flags[..], &client_cert[..2], &["topic", "list"]].concat();
    let (code, _, stderr) = run(&args, vec![]).await;
    assert_eq!(code, 2, "{stderr}");
}
