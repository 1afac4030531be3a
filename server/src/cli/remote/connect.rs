//! The server address and the gRPC clients built on it.

use std::time::Duration;

use anyhow::Context as _;
use eventbus_proto::v1::admin_service_client::AdminServiceClient;
use eventbus_proto::v1::event_service_client::EventServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Clap value parser for `--server` / `EVENTBUS_SERVER`: accepts `host:port`
/// (meaning `http://host:port`) or a full `http://` / `https://` URI, so a bad
/// address is a usage error (exit 2) rather than a failed call.
pub fn parse_server(s: &str) -> Result<String, String> {
    let uri = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    Endpoint::from_shared(uri.clone()).map_err(|e| {
        format!("not a server address ({e}); expected host:port or http://host:port")
    })?;
    Ok(uri)
}

/// Largest response message the CLI accepts.
const MAX_RESPONSE: usize = 256 << 20;

/// Both service clients on one HTTP/2 connection.
pub struct Clients {
    pub admin: AdminServiceClient<Channel>,
    pub events: EventServiceClient<Channel>,
}

impl Clients {
    /// Connects on first use, so an unreachable server surfaces as the
    /// UNAVAILABLE status of the first call, reported like any other error.
    pub fn lazy(server: &str) -> anyhow::Result<Clients> {
        let channel = Endpoint::from_shared(server.to_string())
            .with_context(|| format!("bad server address {server}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        // Responses carry whole events (a dead-letter page, a delivery batch,
        // a replay batch), each up to the server's max event size: tonic's
        // 4 MiB default would fail on a page of large events.
        Ok(Clients {
            admin: AdminServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE),
            events: EventServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE),
        })
    }
}
