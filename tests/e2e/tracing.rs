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
