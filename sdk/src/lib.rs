//! Rust client for eventbus.
//!
//! This is the thin first cut: a connected [`Client`] that hands out the
//! generated gRPC clients. Batching publishers, reconnecting subscriptions and
//! automatic lease extension come with the SDK issue.
//!
//! # Layout
//! * [`Client`]: one HTTP/2 connection, shared by every call.
//! * [`v1`]: the generated `eventbus.v1` messages and clients.

use tonic::transport::{Channel, Endpoint};

pub use eventbus_proto::v1;
use v1::admin_service_client::AdminServiceClient;
use v1::event_service_client::EventServiceClient;

/// A connection to an eventbus server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to `url`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(url: impl Into<String>) -> Result<Client, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.into())?.connect().await?;
        Ok(Client { channel })
    }

    /// Publish, Subscribe, Ack, Nack, ModifyAckDeadline and Replay.
    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }

    /// Topics, subscriptions and dead letters.
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }
}
