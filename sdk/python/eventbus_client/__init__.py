"""Python client for eventbus.

The gRPC stubs and messages are generated from ``proto/`` by
``cargo xtask gen-clients`` into ``eventbus_client.eventbus.v1`` (do not edit
them by hand). This module adds one small convenience, :func:`connect`::

    import eventbus_client as eb
    from eventbus_client.eventbus.v1 import event_pb2, event_service_pb2 as es

    with eb.connect("127.0.0.1:50051") as client:
        client.events.Publish(es.PublishRequest(
            topic="orders", events=[event_pb2.PublishEvent(payload=b"hi")]))

TLS: pass ``tls=eb.TLS(ca_file=..., cert_file=..., key_file=...,
server_name=...)`` (every field optional: the system roots without a CA, no
client certificate without cert and key), or ``tls=eb.TLS.from_env()`` to
read ``EVENTBUS_TLS_CA``, ``EVENTBUS_TLS_CERT``, ``EVENTBUS_TLS_KEY`` and
``EVENTBUS_TLS_SERVER_NAME``, the variables the ``eventbus`` CLI reads.

Errors are ``grpc.RpcError`` with ``.code()`` (a ``grpc.StatusCode``) and
``.details()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import grpc

from .eventbus.v1 import admin_service_pb2_grpc, event_service_pb2_grpc

__all__ = ["Client", "TLS", "connect"]


@dataclass(frozen=True)
class TLS:
    """TLS settings for :func:`connect`; paths to PEM files."""

    #: CA certificate(s) the server's certificate must chain to (default:
    #: the system roots).
    ca_file: Optional[str] = None
    #: Client certificate for mutual TLS (with ``key_file``).
    cert_file: Optional[str] = None
    #: Private key of ``cert_file``.
    key_file: Optional[str] = None
    #: Name to verify the server's certificate against, when it differs
    #: from the host in the address (e.g. connecting to 127.0.0.1).
    server_name: Optional[str] = None

    @staticmethod
    def from_env() -> Optional["TLS"]:
        """The ``EVENTBUS_TLS_*`` variables, or ``None`` if none is set."""
        tls = TLS(
            ca_file=os.environ.get("EVENTBUS_TLS_CA") or None,
            cert_file=os.environ.get("EVENTBUS_TLS_CERT") or None,
            key_file=os.environ.get("EVENTBUS_TLS_KEY") or None,
            server_name=os.environ.get("EVENTBUS_TLS_SERVER_NAME") or None,
        )
        return tls if tls != TLS() else None

    def channel(self, addr: str) -> grpc.Channel:
        """A secure channel to ``addr`` with these settings."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a TLS client certificate needs its key, and a key its certificate")

        def read(path: Optional[str]) -> Optional[bytes]:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        creds = grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.secure_channel(addr, creds, options=options)


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


def connect(addr: str, tls: Optional[TLS] = None) -> Client:
    """Opens a channel to ``addr`` (``host:port``): TLS with ``tls``,
    plaintext without."""
    if tls is not None:
        return Client(tls.channel(addr))
    return Client(grpc.insecure_channel(addr))
