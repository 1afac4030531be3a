//! Rust client for [eventbus](https://github.com/eventbus/eventbus), a durable
//! event bus served over gRPC.
//!
//! It is thin: the wire types are the generated [`v1`] messages. What it adds
//! is what is easy to get wrong by hand:
//!
//! * [`Publisher`]: automatic batching (bounded by events, bytes and a
//!   linger), bounded batches in flight with backpressure, retries of
//!   UNAVAILABLE with backoff, and an idempotency key on every event so a
//!   retry cannot store it twice. Per-key order holds across retries.
//! * [`Subscription`]: a [`Stream`](futures_core::Stream) of [`Delivery`]s
//!   that reconnects with backoff, batches acks and nacks, and extends the
//!   leases of deliveries you still hold. [`Subscription::run`] runs a handler
//!   with bounded concurrency: `Ok` acks, an error nacks, and a
//!   [permanent](HandlerError::permanent) error dead-letters.
//! * Typed payloads: [`Event::json`] / [`Message::json`] (serde) and
//!   [`Event::proto`] / [`Message::proto`] (prost), with `content_type` set.
//! * [`Admin`]: topics, subscriptions (create with filters and a start
//!   position, update, pause/resume/seek), the dead-letter queue (with a
//!   paced redrive), server status, online backups and the audit log. Lists are
//!   [`PageStream`]s that fetch one page at a time.
//! * [`Client::replay`]: a topic's history as a [`Replay`] stream of events.
//! * One [`Error`] type with [`Error::is_retryable`].
//!
//! Everything runs on Tokio; create publishers and subscriptions inside a
//! Tokio runtime.
//!
//! ```no_run
//! use eventbus::{Client, Event, HandlerError, Message};
//!
//! # async fn demo() -> eventbus::Result<()> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//!
//! let orders = client.publisher("orders");
//! let stored = orders
//!     .publish(Event::json("order.created", &serde_json::json!({"id": 7}))?.key("order-7"))
//!     .await?;
//! println!("stored at partition {} offset {}", stored.partition, stored.offset);
//!
//! client
//!     .subscribe("orders", "billing")
//!     .run(
//!         |msg: Message| async move {
//!             let order: serde_json::Value = msg.json().map_err(HandlerError::permanent)?;
//!             println!("attempt {}: {order}", msg.attempt());
//!             Ok(())
//!         },
//!         8,
//!     )
//!     .await
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
mod backoff;
mod client;
mod dead_letters;
mod delivery;
mod error;
mod event;
mod handler;
mod paging;
mod publish_stream;
mod publisher;
mod replay;
mod settings;
mod settle;
mod settle_stream;
mod subscription;

pub use admin::{Admin, AuditFilter, SeekTo};
pub use backoff::RetryPolicy;
pub use client::{Channel, Client, ClientBuilder, Credentials, TlsConfig};
pub use dead_letters::{DeadLetters, RedriveProgress};
pub use delivery::{Delivery, Lease};
pub use error::{code_name, Error, Result};
pub use event::{Event, Message, CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF};
pub use handler::HandlerError;
pub use paging::PageStream;
pub use publisher::{PublishHandle, Published, Publisher, PublisherConfig, PublisherStats};
pub use replay::{Position, Replay, ReplayOptions};
pub use settings::{
    AttributeCondition, AttributeTest, RedeliveryBackoff, StartPosition, SubscriptionSettings,
    SubscriptionUpdate, TopicSettings,
};
pub use settle::{SettleStats, SettleStatsHandle};
pub use subscription::{SubscriberConfig, Subscription, MAX_SETTLE_BATCH};

/// The generated `eventbus.v1` messages and gRPC clients.
pub use eventbus_proto::v1;
/// gRPC status codes, as returned by [`Error::code`].
pub use tonic::Code;
