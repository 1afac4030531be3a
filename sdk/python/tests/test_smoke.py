"""Smoke test of the generated Python client against a real eventbus server.

    EVENTBUS_ADDR=127.0.0.1:PORT python -m unittest -v tests/test_smoke.py

(run from sdk/python, or with sdk/python on PYTHONPATH). Every step talks to
the server over gRPC; `cargo xtask test-clients` starts one and runs this.
"""

import os
import queue
import time
import unittest
import uuid

import grpc
from google.protobuf.duration_pb2 import Duration

import eventbus_client
from eventbus_client.eventbus.v1 import admin_service_pb2 as admin
from eventbus_client.eventbus.v1 import event_pb2
from eventbus_client.eventbus.v1 import event_service_pb2 as es

ADDR = os.environ.get("EVENTBUS_ADDR", "")
# Upper bound for any single wait on the server, in seconds.
TIMEOUT = 20


class SmokeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        if not ADDR:
            raise RuntimeError("set EVENTBUS_ADDR=host:port of a running eventbus server")
        # TLS (and mTLS) when EVENTBUS_TLS_* are set, as `cargo xtask
        # test-clients` does.
        cls.client = eventbus_client.connect(ADDR, tls=eventbus_client.TLS.from_env())
        grpc.channel_ready_future(cls.client.channel).result(timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()

    def setUp(self) -> None:
        # Unique names: the test can run many times against one server.
        self.topic = f"py-smoke-{uuid.uuid4().hex[:12]}"
        self.sub = "smoke"

    def publish(self, payload: bytes) -> str:
        resp = self.client.events.Publish(
            es.PublishRequest(
                topic=self.topic,
                events=[event_pb2.PublishEvent(type="smoke.test", payload=payload,
                                               content_type="text/plain")],
            ),
            timeout=TIMEOUT,
        )
        self.assertEqual(len(resp.results), 1)
        self.assertFalse(resp.results[0].duplicate)
        self.assertTrue(resp.results[0].event_id)
        return resp.results[0].event_id

    def test_publish_subscribe_ack_nack_dead_letter(self) -> None:
        first = self.publish(b"first")
        second = self.publish(b"second")

        stream = self.client.events.Subscribe(
            es.SubscribeRequest(topic=self.topic, subscription=self.sub, max_in_flight=10),
            timeout=60,  # the whole stream: a stuck test fails, it does not hang
        )
        deliveries = (d for resp in stream for d in resp.deliveries)
        try:
            # Both events arrive once, on their first attempt (partitions
            # interleave, so in any order).
            got = {}
            while len(got) < 2:
                d = next(deliveries)
                self.assertNotIn(d.event.event_id, got, "delivered twice before any nack")
                got[d.event.event_id] = d
            self.assertEqual(set(got), {first, second})
            for d in got.values():
                self.assertEqual(d.delivery_attempt, 1)
                self.assertEqual(d.event.topic, self.topic)
                self.assertEqual(d.event.type, "smoke.test")
                self.assertEqual(d.event.content_type, "text/plain")
            self.assertEqual(got[first].event.payload, b"first")
            self.assertEqual(got[second].event.payload, b"second")

            # Ack the first: settled for good.
            self.client.events.Ack(
                es.AckRequest(topic=self.topic, subscription=self.sub,
                              ack_ids=[got[first].ack_id]),
                timeout=TIMEOUT,
            )

            # Nack the second with no delay: it comes back at once, attempt 2.
            self.client.events.Nack(
                es.NackRequest(topic=self.topic, subscription=self.sub,
                               ack_ids=[got[second].ack_id], delay=Duration(seconds=0)),
                timeout=TIMEOUT,
            )
            again = next(deliveries)
            self.assertEqual(again.event.event_id, second, "only the nacked event returns")
            self.assertEqual(again.delivery_attempt, 2)
            self.assertNotEqual(again.ack_id, got[second].ack_id, "a redelivery has a new ack_id")

            # Dead-letter it: it shows up in the subscription's DLQ.
            self.client.events.Nack(
                es.NackRequest(topic=self.topic, subscription=self.sub, ack_ids=[again.ack_id],
                               dead_letter=True, reason="py smoke: poison"),
                timeout=TIMEOUT,
            )
        finally:
            stream.cancel()

        dead = self.list_dead_letters()
        self.assertEqual([dl.event.event_id for dl in dead], [second])
        self.assertEqual(dead[0].reason, "py smoke: poison")
        self.assertEqual(dead[0].delivery_attempts, 2)
        self.assertEqual(dead[0].event.payload, b"second")

    def list_dead_letters(self):
        # Nack returns once the dead letter is stored; retry briefly anyway
        # so a slow machine gives a clear failure, not a flaky one.
        deadline = time.monotonic() + TIMEOUT
        while True:
            resp = self.client.admin.ListDeadLetters(
                admin.ListDeadLettersRequest(topic=self.topic, subscription=self.sub),
                timeout=TIMEOUT,
            )
            if resp.dead_letters or time.monotonic() > deadline:
                return list(resp.dead_letters)
            time.sleep(0.1)

    def test_default_client_receives_big_events(self) -> None:
        # 16 events of 1 MB with max_in_flight 256, on a channel with grpcio's
        # defaults (4 MiB receive limit): the server must split deliveries
        # into messages that fit, or the stream dies and comes back with the
        # same batch forever.
        # One partition: a single read-ahead then holds all of them, the
        # case that used to become one 5 MB message.
        count, size = 16, 1_000_000
        self.client.admin.CreateTopic(admin.CreateTopicRequest(topic=self.topic, partitions=1),
                                      timeout=TIMEOUT)
        published = set()
        for i in range(0, count, 4):
            resp = self.client.events.Publish(
                es.PublishRequest(
                    topic=self.topic,
                    events=[event_pb2.PublishEvent(type="smoke.big", payload=bytes([j]) * size)
                            for j in range(i, i + 4)],
                ),
                timeout=TIMEOUT,
            )
            published.update(r.event_id for r in resp.results)
        self.assertEqual(len(published), count)

        stream = self.client.events.Subscribe(
            es.SubscribeRequest(topic=self.topic, subscription=self.sub, max_in_flight=256),
            timeout=60,
        )
        got = {}
        try:
            for resp in stream:
                for d in resp.deliveries:
                    self.assertEqual(len(d.event.payload), size)
                    self.assertEqual(d.event.payload, bytes([d.event.payload[0]]) * size)
                    got[d.event.event_id] = d.ack_id
                    self.client.events.Ack(
                        es.AckRequest(topic=self.topic, subscription=self.sub,
                                      ack_ids=[d.ack_id]),
                        timeout=TIMEOUT,
                    )
                if len(got) == count:
                    break
        finally:
            stream.cancel()
        self.assertEqual(set(got), published)

    def test_bad_request_is_invalid_argument(self) -> None:
        with self.assertRaises(grpc.RpcError) as caught:
            self.client.events.Publish(
                es.PublishRequest(topic="", events=[event_pb2.PublishEvent(payload=b"x")]),
                timeout=TIMEOUT,
            )
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(caught.exception.details())

    def test_publish_stream_answers_each_request_by_id(self) -> None:
        def requests():
            ev = event_pb2.PublishEvent(type="smoke.test", payload=b"s", content_type="text/plain")
            yield es.PublishStreamRequest(topic=self.topic, events=[ev, ev], request_id=1)
            # An empty batch fails alone; the stream goes on.
            yield es.PublishStreamRequest(topic=self.topic, events=[], request_id=2)
            yield es.PublishStreamRequest(topic=self.topic, events=[ev], request_id=3)

        answers = {a.request_id: a for a in
                   self.client.events.PublishStream(requests(), timeout=TIMEOUT)}
        self.assertEqual(sorted(answers), [1, 2, 3])
        self.assertEqual(len(answers[1].results), 2)
        self.assertFalse(answers[1].HasField("failure"))
        self.assertEqual(answers[2].failure.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertTrue(answers[2].failure.message)
        self.assertEqual(len(answers[3].results), 1)

    def test_subscribe_stream_settles_on_the_stream(self) -> None:
        self.publish(b"one")
        self.publish(b"two")
        outbox: "queue.Queue[es.SubscribeStreamRequest | None]" = queue.Queue()
        outbox.put(es.SubscribeStreamRequest(subscribe=es.SubscribeRequest(
            topic=self.topic, subscription=self.sub, max_in_flight=10)))

        def requests():
            # Closing the input (returning) ends the stream with OK once
            # the settles in flight are answered.
            while (item := outbox.get()) is not None:
                yield item

        deliveries, answers = [], {}
        for msg in self.client.events.SubscribeStream(requests(), timeout=60):
            deliveries.extend(msg.deliveries)
            for answer in msg.settled:
                answers[answer.request_id] = answer
            if len(deliveries) == 2 and not answers and outbox.empty():
                outbox.put(es.SubscribeStreamRequest(
                    ack=es.AckRequest(ack_ids=[d.ack_id for d in deliveries]), request_id=1))
                # A malformed ack id fails its own request only.
                outbox.put(es.SubscribeStreamRequest(
                    ack=es.AckRequest(ack_ids=["not-an-ack-id"]), request_id=2))
            if len(answers) == 2:
                outbox.put(None)
        self.assertEqual(sorted(d.event.payload for d in deliveries), [b"one", b"two"])
        self.assertFalse(answers[1].HasField("failure"))
        self.assertEqual(list(answers[1].stale_ack_ids), [])
        self.assertEqual(answers[2].failure.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertTrue(answers[2].failure.message)

        # Both were acked (the counters may trail the answer briefly).
        deadline = time.monotonic() + TIMEOUT
        while True:
            stats = self.client.admin.GetSubscription(
                admin.GetSubscriptionRequest(topic=self.topic, subscription=self.sub),
                timeout=TIMEOUT,
            ).subscription.stats
            if (stats.acked, stats.backlog) == (2, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual((stats.acked, stats.backlog), (2, 0))


if __name__ == "__main__":
    unittest.main()
