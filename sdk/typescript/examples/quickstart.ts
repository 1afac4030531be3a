// Publish, consume with ack, dead-letter and list dead letters.
//
//   EVENTBUS_ADDR=127.0.0.1:50051 npx tsx examples/quickstart.ts
import { randomUUID } from "node:crypto";
import { connect, tlsFromEnv } from "../src/index.js";

// TLS: EVENTBUS_TLS_CA (trust this CA), EVENTBUS_TLS_CERT + EVENTBUS_TLS_KEY
// (mTLS), EVENTBUS_TLS_SERVER_NAME; plaintext when none is set.
const client = connect(process.env.EVENTBUS_ADDR ?? "127.0.0.1:50051", tlsFromEnv());
const topic = `orders-${randomUUID().slice(0, 8)}`; // auto-created on first publish
const subscription = "billing"; // auto-created on first subscribe, from the earliest event
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

const { results } = await client.events.publish({
  topic,
  events: [
    { key: "customer-42", type: "order.created", payload: json({ id: 1 }), contentType: "application/json" },
    { key: "customer-7", type: "order.created", payload: new TextEncoder().encode("not json"), contentType: "application/json" },
  ],
});
for (const r of results) console.log(`published ${r.eventId} at partition ${r.partition} offset ${r.offset}`);

const abort = new AbortController();
let handled = 0;
try {
  for await (const { deliveries } of client.events.subscribe(
    { topic, subscription, maxInFlight: 10 },
    { signal: abort.signal, timeoutMs: 30_000 },
  )) {
    for (const d of deliveries) {
      try {
        JSON.parse(new TextDecoder().decode(d.event?.payload));
        await client.events.ack({ topic, subscription, ackIds: [d.ackId] });
        console.log(`acked ${d.event?.eventId} (attempt ${d.deliveryAttempt})`);
      } catch {
        // Cannot process it: straight to the dead-letter queue.
        await client.events.nack({ topic, subscription, ackIds: [d.ackId], deadLetter: true, reason: "payload is not JSON" });
        console.log(`dead-lettered ${d.event?.eventId}`);
      }
      handled++;
    }
    if (handled === results.length) abort.abort(); // done: close the stream
  }
} catch (err) {
  if (!abort.signal.aborted) throw err;
}

const { deadLetters } = await client.admin.listDeadLetters({ topic, subscription });
for (const dl of deadLetters) console.log(`dead letter ${dl.id}: event ${dl.event?.eventId}, reason "${dl.reason}"`);
if (deadLetters.length !== 1) throw new Error(`expected 1 dead letter, got ${deadLetters.length}`);
