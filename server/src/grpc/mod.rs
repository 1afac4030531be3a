//! The gRPC surface: one file per RPC, all errors mapped in [`status`].
//!
//! Handlers validate and convert at the edge, then call the broker contract
//! ([`eventbus_broker::Broker`]); each gets its request's context with it
//! ([`context::Call`]).
//! [`EventServer`] serves `EventService`, checking the counts of the requests
//! that multiply in memory on the wire first ([`wire`]).
//! The checking step of each handler is a broker-free `parse` function, so that
//! the fuzz targets (`fuzz/`) can drive it with arbitrary requests; [`parse`]
//! gathers them.

mod ack;
pub mod context;
mod convert;
mod create_backup;
mod create_subscription;
mod create_topic;
mod delete_subscription;
mod delete_topic;
mod event_server;
mod get_dead_letter;
mod get_status;
mod get_subscription;
mod get_topic;
pub mod guard;
mod list_audit_records;
mod list_dead_letters;
mod list_subscriptions;
mod list_topics;
pub(crate) mod message_size;
mod modify_ack_deadline;
mod nack;
mod paging;
mod pause_subscription;
mod publish;
mod publish_stream;
mod purge_dead_letters;
mod redrive_dead_letters;
mod replay;
mod resume_subscription;
mod seek_subscription;
pub mod status;
mod stream_requests;
mod subscribe;
mod subscribe_stream;
mod update_subscription;
mod wire;

pub use event_server::EventServer;

use std::sync::Arc;

use eventbus_broker::Broker;
use eventbus_proto::v1::admin_service_server::AdminService;
use eventbus_proto::v1::event_service_server::EventService;
use eventbus_proto::v1::*;
use tokio_util::sync::CancellationToken;

use crate::audit;
use crate::ops::Ops;
use context::{Call, Gate};
use guard::Guarded;
use tonic::{Request, Response, Status};

type RpcResult<T> = Result<Response<T>, Status>;

/// The broker-free first step of the handlers that check their request
/// (convert wire types and validate them), plus the wire conversions and page
/// tokens they use. For the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod parse {
    pub use super::convert::{
        dead_letter_id, duration_from_proto, duration_to_proto, filter_from_proto, filter_to_proto,
        millis_to_timestamp, timestamp_to_millis,
    };
    pub use super::create_backup::parse as create_backup;
    pub use super::create_subscription::parse as create_subscription;
    pub use super::create_topic::parse as create_topic;
    pub use super::list_audit_records::parse as list_audit_records;
    pub use super::list_dead_letters::parse as list_dead_letters;
    pub use super::modify_ack_deadline::parse as modify_ack_deadline;
    pub use super::nack::parse as nack;
    pub use super::paging::{
        audit_token, decode_audit_token, decode_name_token, decode_seq_token, name_token,
        seq_token, PageRequest,
    };
    pub use super::publish::parse_events as publish;
    pub use super::purge_dead_letters::selector as dead_letter_selector;
    pub use super::replay::parse as replay;
    pub use super::seek_subscription::parse as seek_subscription;
    pub use super::update_subscription::parse as update_subscription;
    pub use eventbus_broker::Limits;
}

/// Implements `eventbus.v1.EventService`.
#[derive(Clone)]
pub struct EventSvc {
    broker: Arc<dyn Broker>,
    gate: Gate,
    /// Cancelled when shutdown starts, so open streams end promptly.
    shutdown: CancellationToken,
    ops: Arc<Ops>,
}

impl EventSvc {
    async fn call<T: Guarded>(&self, req: Request<T>) -> Result<(Call<'_>, T), Status> {
        Call::authorize(&self.broker, &self.gate, &self.ops, req).await
    }

    pub fn new(
        broker: Arc<dyn Broker>,
        gate: Gate,
        shutdown: CancellationToken,
        ops: Arc<Ops>,
    ) -> Self {
        EventSvc {
            broker,
            gate,
            shutdown,
            ops,
        }
    }
}

/// Implements `eventbus.v1.AdminService`.
#[derive(Clone)]
pub struct AdminSvc {
    broker: Arc<dyn Broker>,
    gate: Gate,
    ops: Arc<Ops>,
    /// Where CreateBackup may write (config key `backup-root`); `None`:
    /// nowhere.
    backup_root: Option<Arc<std::path::Path>>,
}

impl AdminSvc {
    async fn call<T: Guarded>(&self, req: Request<T>) -> Result<(Call<'_>, T), Status> {
        Call::authorize(&self.broker, &self.gate, &self.ops, req).await
    }

    pub fn new(broker: Arc<dyn Broker>, gate: Gate, ops: Arc<Ops>) -> Self {
        AdminSvc {
            broker,
            gate,
            ops,
            backup_root: None,
        }
    }

    /// Lets CreateBackup write under `root` (config key `backup-root`).
    pub fn with_backup_root(mut self, root: Option<&std::path::Path>) -> Self {
        self.backup_root = root.map(Arc::from);
        self
    }
}

#[tonic::async_trait]
impl EventService for EventSvc {
    async fn publish(&self, req: Request<PublishRequest>) -> RpcResult<PublishResponse> {
        let (call, req) = self.call(req).await?;
        publish::handle(&call, req).await.map(Response::new)
    }

    type PublishStreamStream = publish_stream::PublishStream;

    /// Each request is checked as it arrives (see `publish_stream`), so the
    /// stream itself needs nothing up front.
    async fn publish_stream(
        &self,
        req: Request<tonic::Streaming<PublishStreamRequest>>,
    ) -> RpcResult<Self::PublishStreamStream> {
        let ctx = req
            .extensions()
            .get::<context::RequestContext>()
            .cloned()
            .unwrap_or_default();
        let broker: Arc<dyn Broker> = Arc::new(crate::auth::scope::Scoped::new(
            self.broker.clone(),
            ctx.caller.clone(),
            &self.gate,
        ));
        let refused = self.gate.until_refused(&ctx.caller);
        Ok(Response::new(publish_stream::PublishStream::new(
            ctx,
            broker,
            self.ops.clone(),
            req.into_inner(),
            self.shutdown.clone().cancelled_owned(),
            refused,
        )))
    }

    type SubscribeStream = subscribe::DeliveryStream;

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> RpcResult<Self::SubscribeStream> {
        let (call, req) = self.call(req).await?;
        subscribe::handle(&call, &self.shutdown, req)
            .await
            .map(Response::new)
    }

    type SubscribeStreamStream = subscribe_stream::SubscribeStream;

    /// The first request joins the subscription as Subscribe does (the same
    /// check, with its metadata); each later one is checked as it arrives
    /// (see `subscribe_stream`).
    async fn subscribe_stream(
        &self,
        req: Request<tonic::Streaming<SubscribeStreamRequest>>,
    ) -> RpcResult<Self::SubscribeStreamStream> {
        let (metadata, extensions, mut requests) = req.into_parts();
        let first = subscribe_stream::first_request(&mut requests, &self.shutdown).await?;
        let (call, first) = self
            .call(Request::from_parts(metadata, extensions, first))
            .await?;
        let shared = subscribe_stream::Shared {
            ctx: call.ctx.clone(),
            broker: call.broker.clone(),
            ops: self.ops.clone(),
            topic: first.topic.clone(),
            subscription: first.subscription.clone(),
        };
        let deliveries = subscribe::handle(&call, &self.shutdown, first).await?;
        Ok(Response::new(subscribe_stream::SubscribeStream::new(
            deliveries, requests, shared,
        )))
    }

    async fn ack(&self, req: Request<AckRequest>) -> RpcResult<AckResponse> {
        let (call, req) = self.call(req).await?;
        ack::handle(&call, req).await.map(Response::new)
    }

    async fn nack(&self, req: Request<NackRequest>) -> RpcResult<NackResponse> {
        let (call, req) = self.call(req).await?;
        nack::handle(&call, req).await.map(Response::new)
    }

    async fn modify_ack_deadline(
        &self,
        req: Request<ModifyAckDeadlineRequest>,
    ) -> RpcResult<ModifyAckDeadlineResponse> {
        let (call, req) = self.call(req).await?;
        modify_ack_deadline::handle(&call, req)
            .await
            .map(Response::new)
    }

    type ReplayStream = replay::ReplayStream;

    async fn replay(&self, req: Request<ReplayRequest>) -> RpcResult<Self::ReplayStream> {
        let (call, req) = self.call(req).await?;
        replay::handle(&call, self.shutdown.clone(), req)
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn create_topic(
        &self,
        req: Request<CreateTopicRequest>,
    ) -> RpcResult<CreateTopicResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, create_topic::handle)
            .await
            .map(Response::new)
    }

    async fn get_topic(&self, req: Request<GetTopicRequest>) -> RpcResult<GetTopicResponse> {
        let (call, req) = self.call(req).await?;
        get_topic::handle(&call, req).await.map(Response::new)
    }

    async fn list_topics(&self, req: Request<ListTopicsRequest>) -> RpcResult<ListTopicsResponse> {
        let (call, req) = self.call(req).await?;
        list_topics::handle(&call, req).await.map(Response::new)
    }

    async fn delete_topic(
        &self,
        req: Request<DeleteTopicRequest>,
    ) -> RpcResult<DeleteTopicResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, delete_topic::handle)
            .await
            .map(Response::new)
    }

    async fn create_subscription(
        &self,
        req: Request<CreateSubscriptionRequest>,
    ) -> RpcResult<CreateSubscriptionResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, create_subscription::handle)
            .await
            .map(Response::new)
    }

    async fn get_subscription(
        &self,
        req: Request<GetSubscriptionRequest>,
    ) -> RpcResult<GetSubscriptionResponse> {
        let (call, req) = self.call(req).await?;
        get_subscription::handle(&call, req)
            .await
            .map(Response::new)
    }

    async fn list_subscriptions(
        &self,
        req: Request<ListSubscriptionsRequest>,
    ) -> RpcResult<ListSubscriptionsResponse> {
        let (call, req) = self.call(req).await?;
        list_subscriptions::handle(&call, req)
            .await
            .map(Response::new)
    }

    async fn update_subscription(
        &self,
        req: Request<UpdateSubscriptionRequest>,
    ) -> RpcResult<UpdateSubscriptionResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, update_subscription::handle)
            .await
            .map(Response::new)
    }

    async fn delete_subscription(
        &self,
        req: Request<DeleteSubscriptionRequest>,
    ) -> RpcResult<DeleteSubscriptionResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, delete_subscription::handle)
            .await
            .map(Response::new)
    }

    async fn pause_subscription(
        &self,
        req: Request<PauseSubscriptionRequest>,
    ) -> RpcResult<PauseSubscriptionResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, pause_subscription::handle)
            .await
            .map(Response::new)
    }

    async fn resume_subscription(
        &self,
        req: Request<ResumeSubscriptionRequest>,
    ) -> RpcResult<ResumeSubscriptionResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, resume_subscription::handle)
            .await
            .map(Response::new)
    }

    async fn seek_subscription(
        &self,
        req: Request<SeekSubscriptionRequest>,
    ) -> RpcResult<SeekSubscriptionResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, seek_subscription::handle)
            .await
            .map(Response::new)
    }

    async fn list_dead_letters(
        &self,
        req: Request<ListDeadLettersRequest>,
    ) -> RpcResult<ListDeadLettersResponse> {
        let (call, req) = self.call(req).await?;
        list_dead_letters::handle(&call, req)
            .await
            .map(Response::new)
    }

    async fn get_dead_letter(
        &self,
        req: Request<GetDeadLetterRequest>,
    ) -> RpcResult<GetDeadLetterResponse> {
        let (call, req) = self.call(req).await?;
        get_dead_letter::handle(&call, req).await.map(Response::new)
    }

    async fn redrive_dead_letters(
        &self,
        req: Request<RedriveDeadLettersRequest>,
    ) -> RpcResult<RedriveDeadLettersResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, redrive_dead_letters::handle)
            .await
            .map(Response::new)
    }

    async fn purge_dead_letters(
        &self,
        req: Request<PurgeDeadLettersRequest>,
    ) -> RpcResult<PurgeDeadLettersResponse> {
        let (call, req) = self.call(req).await?;
        audit::mutating(&call, req, purge_dead_letters::handle)
            .await
            .map(Response::new)
    }

    async fn get_status(&self, req: Request<GetStatusRequest>) -> RpcResult<GetStatusResponse> {
        let (call, req) = self.call(req).await?;
        get_status::handle(&call, req).await.map(Response::new)
    }

    async fn create_backup(
        &self,
        req: Request<CreateBackupRequest>,
    ) -> RpcResult<CreateBackupResponse> {
        let (call, req) = self.call(req).await?;
        let root = self.backup_root.as_deref();
        audit::mutating(&call, req, |call, req| {
            create_backup::handle(call, root, req)
        })
        .await
        .map(Response::new)
    }

    async fn list_audit_records(
        &self,
        req: Request<ListAuditRecordsRequest>,
    ) -> RpcResult<ListAuditRecordsResponse> {
        let (call, req) = self.call(req).await?;
        list_audit_records::handle(&call, req)
            .await
            .map(Response::new)
    }
}
