//! The gRPC contract of the eventbus: Rust types generated from the `.proto`
//! files in `proto/eventbus/v1/` (protobuf package `eventbus.v1`).
//!
//! The `.proto` files are the source of truth; this crate only compiles them
//! with prost and tonic at build time, so every RPC and field carries the
//! doc comment written in the contract.
//!
//! # Layout
//!
//! - [`v1`]: messages and enums (e.g. [`v1::PublishRequest`], [`v1::Event`]),
//!   plus one module per service:
//!   - [`v1::event_service_client::EventServiceClient`] and
//!     [`v1::admin_service_client::AdminServiceClient`] (feature `client`),
//!   - [`v1::event_service_server::EventServiceServer`] /
//!     [`v1::event_service_server::EventService`] and
//!     [`v1::admin_service_server::AdminServiceServer`] /
//!     [`v1::admin_service_server::AdminService`] (feature `server`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded `FileDescriptorSet` of the
//!   contract, for gRPC server reflection.
//!
//! Proto `bytes` fields are [`bytes::Bytes`], and well-known types
//! (`Timestamp`, `Duration`, `FieldMask`) are [`prost_types`].
//!
//! # Features
//!
//! All on by default: `client` and `server` generate the tonic client and
//! server modules; `transport` adds `connect()` on clients (tonic transport).

/// Version 1 of the contract: protobuf package `eventbus.v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags
)]
pub mod v1 {
    tonic::include_proto!("eventbus.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of every file in
/// `eventbus.v1` (and the well-known types they import), for
/// `tonic-reflection`'s `register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/eventbus_v1_descriptor.bin"));

// Re-exported so users can name the field types without extra dependencies.
pub use bytes;
pub use prost;
pub use prost_types;
