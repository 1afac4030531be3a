"""Python client for eventbus.

The gRPC stubs and messages are generated from ``proto/`` by
``cargo xtask gen-clients`` into ``eventbus_client.eventbus.v1`` (do not edit
them by hand). This module adds one small convenience, :func:`connect`::

    import eventbus_client as eb
    from eventbus_client.eventbus.v1 import event_pb2, event_service_pb2 as es

    with eb.connect("127.0.0.1:50051") as client:
        client.events.Publish(es.PublishRequest(
            topic="orders", events=[event_pb2.PublishEvent(payload=b"hi")]))

Errors are ``grpc.RpcError`` with ``.code()`` (a ``grpc.StatusCode``) and
``.details()``.
"""

from __future__ import annotations

import grpc

from .eventbus.v1 import admin_service_pb2_grpc, event_service_pb2_grpc

__all__ = ["Client", "connect"]


class Client:
    """Stubs for both eventbus services over one channel.

    ``events`` is an ``EventServiceStub`` (Publish, Subscribe, Ack, Nack,
    ModifyAckDeadline, Replay); ``admin`` an ``AdminServiceStub`` (topics,
    subscriptions, dead letters, seek, pause/resume).
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.events = event_service_pb2_grpc.EventServiceStub(channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(addr: str) -> Client:
    """Opens a plaintext channel to ``addr`` (``host:port``)."""
    return Client(grpc.insecure_channel(addr))
