// Smoke test of the generated TypeScript client against a real eventbus
// server (gRPC over HTTP/2):
//
//   EVENTBUS_ADDR=127.0.0.1:PORT npx tsx --test test/smoke.test.ts
//
// `cargo xtask test-clients` starts a server and runs this.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { Code, ConnectError, connect, tlsFromEnv, type Delivery } from "../src/index.js";

const addr = process.env.EVENTBUS_ADDR;
if (!addr) throw new Error("set EVENTBUS_ADDR=host:port of a running eventbus server");
// TLS (and mTLS) when EVENTBUS_TLS_* are set, as `cargo xtask test-clients` does.
const client = connect(addr, tlsFromEnv());
const timeoutMs = 20_000;
const text = new TextEncoder();
const untext = new TextDecoder();

async function publish(topic: string, payload: string): Promise<string> {
  const resp = await client.events.publish(
    { topic, events: [{ type: "smoke.test", payload: text.encode(payload), contentType: "text/plain" }] },
    { timeoutMs },
  );
  assert.equal(resp.results.length, 1);
  assert.equal(resp.results[0].duplicate, false);
  assert.ok(resp.results[0].eventId);
  return resp.results[0].eventId;
}

test("publish, subscribe, ack, nack, dead-letter", async () => {
  const topic = `ts-smoke-${randomUUID().slice(0, 12)}`;
  const subscription = "smoke";
  const first = await publish(topic, "first");
  const second = await publish(topic, "second");

  // The signal ends the stream when we are done, or after 60 s so that a
  // stuck test fails instead of hanging. (AbortSignal.timeout does not keep
  // node alive; a call's timeoutMs timer would, until the stream is drained.)
  const abort = new AbortController();
  const stream = client.events.subscribe(
    { topic, subscription, maxInFlight: 10 },
    { signal: AbortSignal.any([abort.signal, AbortSignal.timeout(60_000)]) },
  );
  const deliveries = (async function* () {
    for await (const resp of stream) yield* resp.deliveries;
  })();
  const next = async (): Promise<Delivery> => {
    const r = await deliveries.next();
    assert.ok(!r.done, "Subscribe stream ended early");
    return r.value;
  };
  try {
    // Both events arrive once, on their first attempt, in any order.
    const got = new Map<string, Delivery>();
    while (got.size < 2) {
      const d = await next();
      assert.ok(d.event, "delivery without event");
      assert.ok(!got.has(d.event.eventId), "delivered twice before any nack");
      got.set(d.event.eventId, d);
    }
    assert.deepEqual([...got.keys()].sort(), [first, second].sort());
    for (const d of got.values()) {
      assert.equal(d.deliveryAttempt, 1);
      assert.equal(d.event?.topic, topic);
      assert.equal(d.event?.type, "smoke.test");
      assert.equal(d.event?.contentType, "text/plain");
    }
    assert.equal(untext.decode(got.get(first)?.event?.payload), "first");
    assert.equal(untext.decode(got.get(second)?.event?.payload), "second");

    // Ack the first: settled for good.
    await client.events.ack({ topic, subscription, ackIds: [got.get(first)!.ackId] }, { timeoutMs });

    // Nack the second with no delay: it comes back at once, attempt 2.
    await client.events.nack(
      { topic, subscription, ackIds: [got.get(second)!.ackId], delay: { seconds: 0n } },
      { timeoutMs },
    );
    const again = await next();
    assert.equal(again.event?.eventId, second, "only the nacked event returns");
    assert.equal(again.deliveryAttempt, 2);
    assert.notEqual(again.ackId, got.get(second)!.ackId, "a redelivery has a new ackId");

    // Dead-letter it: it shows up in the subscription's DLQ.
    await client.events.nack(
      { topic, subscription, ackIds: [again.ackId], deadLetter: true, reason: "ts smoke: poison" },
      { timeoutMs },
    );
  } finally {
    abort.abort();
  }

  const { deadLetters } = await client.admin.listDeadLetters({ topic, subscription }, { timeoutMs });
  assert.deepEqual(deadLetters.map((dl) => dl.event?.eventId), [second]);
  assert.equal(deadLetters[0].reason, "ts smoke: poison");
  assert.equal(deadLetters[0].deliveryAttempts, 2);
  assert.equal(untext.decode(deadLetters[0].event?.payload), "second");
});

test("a default client receives 1 MB events", async () => {
  // 16 events of 1 MB with maxInFlight 256 on a default transport. Every
  // SubscribeResponse must fit the 4 MiB that gRPC clients accept by default;
  // one partition makes a single read-ahead hold all of them, the case that
  // used to be one 5 MB message.
  const topic = `ts-smoke-${randomUUID().slice(0, 12)}`;
  const subscription = "smoke";
  const count = 16;
  const size = 1_000_000;
  await client.admin.createTopic({ topic, partitions: 1 }, { timeoutMs });
  const published = new Set<string>();
  for (let i = 0; i < count; i += 4) {
    const events = [i, i + 1, i + 2, i + 3].map((j) => ({
      type: "smoke.big",
      payload: new Uint8Array(size).fill(j),
    }));
    const resp = await client.events.publish({ topic, events }, { timeoutMs });
    for (const r of resp.results) published.add(r.eventId);
  }
  assert.equal(published.size, count);

  const abort = new AbortController();
  const stream = client.events.subscribe(
    { topic, subscription, maxInFlight: 256 },
    { signal: AbortSignal.any([abort.signal, AbortSignal.timeout(60_000)]) },
  );
  const got = new Set<string>();
  try {
    for await (const resp of stream) {
      for (const d of resp.deliveries) {
        const payload = d.event?.payload ?? new Uint8Array();
        assert.equal(payload.length, size);
        assert.ok(payload.every((b) => b === payload[0]), "payload is what was published");
        assert.ok(published.has(d.event!.eventId), "delivered an event that was published");
        got.add(d.event!.eventId);
        await client.events.ack({ topic, subscription, ackIds: [d.ackId] }, { timeoutMs });
      }
      if (got.size === count) break;
    }
  } finally {
    abort.abort();
  }
  assert.equal(got.size, count);
});

test("a bad request fails with INVALID_ARGUMENT", async () => {
  await assert.rejects(
    client.events.publish({ topic: "", events: [{ payload: text.encode("x") }] }, { timeoutMs }),
    (err: unknown) => {
      const e = ConnectError.from(err);
      assert.equal(e.code, Code.InvalidArgument, `got ${Code[e.code]}: ${e.message}`);
      assert.ok(e.rawMessage);
      return true;
    },
  );
});

test("PublishStream answers each request by id; a failed one leaves the stream open", async () => {
  const topic = `ts-smoke-${randomUUID().slice(0, 12)}`;
  const ev = { type: "smoke.test", payload: text.encode("s"), contentType: "text/plain" };
  async function* requests() {
    yield { topic, events: [ev, ev], requestId: 1n };
    yield { topic, events: [], requestId: 2n }; // fails alone
    yield { topic, events: [ev], requestId: 3n };
  }
  const answers = new Map<bigint, { results: unknown[]; failure?: { code: number; message: string } }>();
  for await (const a of client.events.publishStream(requests(), { timeoutMs })) {
    answers.set(a.requestId, a);
  }
  assert.deepEqual([...answers.keys()].sort(), [1n, 2n, 3n]);
  assert.equal(answers.get(1n)!.results.length, 2);
  assert.equal(answers.get(1n)!.failure, undefined);
  assert.equal(answers.get(2n)!.failure?.code, Code.InvalidArgument);
  assert.ok(answers.get(2n)!.failure?.message);
  assert.equal(answers.get(3n)!.results.length, 1);
});

test("SubscribeStream settles on the stream; a failed settle leaves it open", async () => {
  const topic = `ts-smoke-${randomUUID().slice(0, 12)}`;
  const subscription = "smoke";
  await publish(topic, "one");
  await publish(topic, "two");

  // The requests: a queue the loop below feeds; null closes the input, which
  // ends the stream with OK once the settles in flight are answered.
  type Req = Parameters<typeof client.events.subscribeStream>[0] extends AsyncIterable<infer R> ? R : never;
  const outbox: (Req | null)[] = [{ request: { case: "subscribe", value: { topic, subscription, maxInFlight: 10 } } }];
  let wake: () => void = () => {};
  async function* requests(): AsyncGenerator<Req> {
    for (;;) {
      while (outbox.length === 0) await new Promise<void>((r) => (wake = r));
      const next = outbox.shift()!;
      if (next === null) return;
      yield next;
    }
  }
  const send = (r: Req | null) => {
    outbox.push(r);
    wake();
  };

  const deliveries: Delivery[] = [];
  const answers = new Map<bigint, { staleAckIds: string[]; failure?: { code: number; message: string } }>();
  let sent = false;
  for await (const msg of client.events.subscribeStream(requests(), { signal: AbortSignal.timeout(60_000) })) {
    deliveries.push(...msg.deliveries);
    for (const a of msg.settled) answers.set(a.requestId, a);
    if (deliveries.length === 2 && !sent) {
      sent = true;
      send({ request: { case: "ack", value: { ackIds: deliveries.map((d) => d.ackId) } }, requestId: 1n });
      // A malformed ack id fails its own request only.
      send({ request: { case: "ack", value: { ackIds: ["not-an-ack-id"] } }, requestId: 2n });
    }
    if (answers.size === 2) send(null);
  }
  assert.deepEqual(deliveries.map((d) => untext.decode(d.event?.payload)).sort(), ["one", "two"]);
  assert.equal(answers.get(1n)!.failure, undefined);
  assert.deepEqual(answers.get(1n)!.staleAckIds, []);
  assert.equal(answers.get(2n)!.failure?.code, Code.InvalidArgument);
  assert.ok(answers.get(2n)!.failure?.message);
});
