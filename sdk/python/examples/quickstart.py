"""Publish, consume with ack, dead-letter and list dead letters.

    EVENTBUS_ADDR=127.0.0.1:50051 python examples/quickstart.py
    EVENTBUS_ADDR=eventbus.example.com:50051 EVENTBUS_TLS_CA=ca.crt python examples/quickstart.py

(from sdk/python, or with the eventbus_client package installed).
"""

import os
import uuid

import eventbus_client
from eventbus_client.eventbus.v1 import admin_service_pb2 as admin
from eventbus_client.eventbus.v1 import event_pb2
from eventbus_client.eventbus.v1 import event_service_pb2 as es

addr = os.environ.get("EVENTBUS_ADDR", "127.0.0.1:50051")
topic = f"orders-{uuid.uuid4().hex[:8]}"  # auto-created on first publish
sub = "billing"  # auto-created on first subscribe, from the earliest event

# TLS: EVENTBUS_TLS_CA (trust this CA), EVENTBUS_TLS_CERT + EVENTBUS_TLS_KEY
# (mTLS), EVENTBUS_TLS_SERVER_NAME; plaintext when none is set.
with eventbus_client.connect(addr, tls=eventbus_client.TLS.from_env()) as client:
    resp = client.events.Publish(es.PublishRequest(topic=topic, events=[
        event_pb2.PublishEvent(key="customer-42", type="order.created",
                               payload=b'{"id": 1}', content_type="application/json"),
        event_pb2.PublishEvent(key="customer-7", type="order.created",
                               payload=b"not json", content_type="application/json"),
    ]), timeout=10)
    for r in resp.results:
        print(f"published {r.event_id} at partition {r.partition} offset {r.offset}")

    stream = client.events.Subscribe(
        es.SubscribeRequest(topic=topic, subscription=sub, max_in_flight=10), timeout=30)
    handled = 0
    for batch in stream:
        for d in batch.deliveries:
            if d.event.payload.startswith(b"{"):
                client.events.Ack(es.AckRequest(topic=topic, subscription=sub,
                                                ack_ids=[d.ack_id]))
                print(f"acked {d.event.event_id} (attempt {d.delivery_attempt})")
            else:  # cannot process it: straight to the dead-letter queue
                client.events.Nack(es.NackRequest(topic=topic, subscription=sub,
                                                  ack_ids=[d.ack_id], dead_letter=True,
                                                  reason="payload is not JSON"))
                print(f"dead-lettered {d.event.event_id}")
            handled += 1
        if handled == len(resp.results):
            stream.cancel()
            break

    dead = client.admin.ListDeadLetters(
        admin.ListDeadLettersRequest(topic=topic, subscription=sub), timeout=10)
    for dl in dead.dead_letters:
        print(f"dead letter {dl.id}: event {dl.event.event_id}, reason {dl.reason!r}")
    assert len(dead.dead_letters) == 1, dead
