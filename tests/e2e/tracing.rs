//! W3C trace context and request ids.

use eventbus_tests::v1::PublishRequest;
use eventbus_tests::TestServer;
use tonic::metadata::MetadataValue;
use tonic::Request;

use crate::support::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OWN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn with_metadata(req: PublishRequest, pairs: &[(&'static str, &str)]) -> Request<PublishRequest> {
    let mut r = Request::new(req);
    for (k, v) in pairs {
        r.metadata_mut()
            .insert(*k, MetadataValue::try_from(*v).unwrap());
    }
    r
}

#[tokio::test]
async fn the_publishers_traceparent_reaches_the_consumer() {
    let server = TestServer::start().await;
    let mut events = server.events();
    let mut own = event("", "t", "own");
    own.attributes.insert("traceparent".into(), OWN.into());
    let resp = events
        .publish(with_metadata(
            PublishRequest {
                topic: "traced".into(),
                events: vec![event("", "t", "plain"), own],
            },
            &[("traceparent", TP), ("x-request-id", "req-42")],
        ))
        .await
        .unwrap();
    assert_eq!(
        resp.metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        "req-42",
        "the client's request id is echoed"
    );
    // A malformed traceparent is not stored; a call without one gets a
    // generated request id.
    let resp = events
        .publish(with_metadata(
            PublishRequest {
                topic: "traced".into(),
                events: vec![event("", "t", "malformed")],
            },
            &[("traceparent", "not-a-trace")],
        ))
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap().len(), 16);

    let mut stream = subscribe(&mut events, "traced", "consumer", 10).await;
    let got = recv_n(&mut stream, 3).await;
    let tp = |p: &str| {
        got.iter()
            .find(|d| payload(d) == p)
            .and_then(|d| d.event.as_ref())
            .and_then(|e| e.attributes.get("traceparent").cloned())
    };
    assert_eq!(
        tp("plain").as_deref(),
        Some(TP),
        "taken from the call's metadata"
    );
    assert_eq!(
        tp("own").as_deref(),
        Some(OWN),
        "the event's own context wins"
    );
    assert_eq!(tp("malformed"), None, "malformed context is dropped");
}

mod collector {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::trace::v1::Span;
    use tokio::sync::mpsc;

    /// Every span it receives goes into the channel.
    pub struct Collector(pub mpsc::UnboundedSender<Span>);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            for rs in req.into_inner().resource_spans {
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        let _ = self.0.send(span);
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    /// Serves on 127.0.0.1:0; returns its address and the span channel.
    pub async fn start() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Span>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, rx)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// With `otlp-endpoint` set, the Publish span is exported to the collector
/// as a child of the caller's span (same trace id, parent = caller's span).
#[tokio::test]
async fn rpc_spans_are_exported_over_otlp_in_the_callers_trace() {
    let (collector, mut spans) = collector::start().await;
    let (dir, data) = eventbus_tests::temp_dir();
    let config = dir.path().join("eventbus.toml");
    std::fs::write(&config, format!("otlp-endpoint = \"http://{collector}\"\n")).unwrap();
    let server = eventbus_tests::ChildServer::start(
        env!("CARGO_BIN_EXE_eventbus-under-test"),
        &data,
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let mut events =
        eventbus_tests::v1::event_service_client::EventServiceClient::new(server.channel().await);
    events
        .publish(with_metadata(
            PublishRequest {
                topic: "otlp".into(),
                events: vec![event("", "t", "x")],
            },
            &[("traceparent", TP)],
        ))
        .await
        .unwrap();
    // SIGTERM flushes the batch exporter.
    assert_eq!(server.terminate().await, Some(0));
    let publish_span = tokio::time::timeout(PATIENCE, async {
        loop {
            let span = spans.recv().await.expect("collector running");
            let is_publish = span
                .attributes
                .iter()
                .any(|kv| kv.key == "method" && format!("{:?}", kv.value).contains("\"Publish\""));
            if span.name == "rpc" && is_publish {
                return span;
            }
        }
    })
    .await
    .expect("the Publish span reaches the collector");
    assert_eq!(
        hex(&publish_span.trace_id),
        &TP[3..35],
        "the caller's trace"
    );
    assert_eq!(
        hex(&publish_span.parent_span_id),
        &TP[36..52],
        "child of the caller's span"
    );
}
