//! [`EventServer`]: the generated `EventService` server, except that the
//! requests whose repeated fields multiply in memory (Publish, Ack, Nack,
//! ModifyAckDeadline) are decoded with [`PrescanCodec`], which checks their
//! counts on the wire first.
//!
//! tonic-prost-build can name a codec for generated code (`codec_path`), but
//! that code builds it with `Default`, so it could not carry this server's
//! configured limits. These four methods are served here the way the
//! generated code serves them (tonic's `Grpc::unary`, same message size
//! limits, no compression), with a codec that holds the limits. So are
//! PublishStream (`Grpc::streaming`), whose every message is a Publish, and
//! SubscribeStream, whose messages after the first are those settles.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use eventbus_broker::Limits;
use eventbus_proto::prost::Message;
use eventbus_proto::v1::event_service_server::{EventService, EventServiceServer};
use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::Status;

use super::wire::{Prescan, PrescanCodec};
use super::EventSvc;

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Serves `eventbus.v1.EventService`.
#[derive(Clone)]
pub struct EventServer {
    generated: EventServiceServer<EventSvc>,
    svc: Arc<EventSvc>,
    limits: Limits,
    max_request_bytes: usize,
}

impl EventServer {
    pub fn new(svc: EventSvc, limits: Limits, max_request_bytes: usize) -> Self {
        let svc = Arc::new(svc);
        EventServer {
            generated: EventServiceServer::from_arc(svc.clone())
                .max_decoding_message_size(max_request_bytes),
            svc,
            limits,
            max_request_bytes,
        }
    }

    /// Serves one unary call with the prescanning codec; `method` calls the
    /// handler.
    fn unary<Req, Resp, F, Fut>(
        &self,
        req: http::Request<Body>,
        method: F,
    ) -> BoxFuture<Result<http::Response<Body>, Infallible>>
    where
        Req: Prescan + Message + Default + Send + 'static,
        Resp: Message + Send + 'static,
        F: FnMut(Arc<EventSvc>, tonic::Request<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
    {
        let (mut grpc, handler) = (self.grpc::<Req, Resp>(), self.handler(method));
        Box::pin(async move { Ok(grpc.unary(handler, req).await) })
    }

    /// tonic's server for one call: the prescanning codec with this server's
    /// limits, the generated code's message size limits.
    fn grpc<Req, Resp>(&self) -> Grpc<PrescanCodec<Resp, Req>>
    where
        Req: Prescan + Message + Default + Send + 'static,
        Resp: Message + Send + 'static,
    {
        Grpc::new(PrescanCodec::new(self.limits))
            .apply_max_message_size_config(Some(self.max_request_bytes), None)
    }

    fn handler<F>(&self, method: F) -> Handler<F> {
        Handler {
            svc: self.svc.clone(),
            method,
        }
    }

    /// Serves one bidirectional stream whose every request is prescanned.
    fn streaming<Req, Resp, F, Fut, S>(
        &self,
        req: http::Request<Body>,
        method: F,
    ) -> BoxFuture<Result<http::Response<Body>, Infallible>>
    where
        Req: Prescan + Message + Default + Send + 'static,
        Resp: Message + Send + 'static,
        F: FnMut(Arc<EventSvc>, tonic::Request<tonic::Streaming<Req>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<S>, Status>> + Send + 'static,
        S: futures_core::Stream<Item = Result<Resp, Status>> + Send + 'static,
    {
        let (mut grpc, handler) = (self.grpc::<Req, Resp>(), self.handler(method));
        Box::pin(async move { Ok(grpc.streaming(handler, req).await) })
    }
}

impl NamedService for EventServer {
    const NAME: &'static str = <EventServiceServer<EventSvc> as NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for EventServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            "/eventbus.v1.EventService/Publish" => {
                self.unary(req, |svc, r| async move { svc.publish(r).await })
            }
            "/eventbus.v1.EventService/PublishStream" => {
                self.streaming(req, |svc, r| async move { svc.publish_stream(r).await })
            }
            "/eventbus.v1.EventService/SubscribeStream" => {
                self.streaming(req, |svc, r| async move { svc.subscribe_stream(r).await })
            }
            "/eventbus.v1.EventService/Ack" => {
                self.unary(req, |svc, r| async move { svc.ack(r).await })
            }
            "/eventbus.v1.EventService/Nack" => {
                self.unary(req, |svc, r| async move { svc.nack(r).await })
            }
            "/eventbus.v1.EventService/ModifyAckDeadline" => {
                self.unary(
                    req,
                    |svc, r| async move { svc.modify_ack_deadline(r).await },
                )
            }
            _ => Box::pin(self.generated.call(req)),
        }
    }
}

/// A handler method as the service tonic's `Grpc::unary` calls.
struct Handler<F> {
    svc: Arc<EventSvc>,
    method: F,
}

impl<Req, Resp, F, Fut> tower::Service<tonic::Request<Req>> for Handler<F>
where
    F: FnMut(Arc<EventSvc>, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    type Response = tonic::Response<Resp>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Req>) -> Fut {
        (self.method)(self.svc.clone(), req)
    }
}
