// TypeScript client for eventbus: the messages and service descriptors are
// generated from proto/ into src/gen by `cargo xtask gen-clients` (do not edit
// them). This file re-exports them and adds `connect()`, which builds
// Connect clients over the gRPC protocol on HTTP/2 (createGrpcTransport: the
// server speaks plain gRPC, so neither the Connect nor the gRPC-Web protocol
// would work).
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "./gen/eventbus/v1/admin_service_pb.js";
import { EventService } from "./gen/eventbus/v1/event_service_pb.js";

export * from "./gen/eventbus/v1/admin_service_pb.js";
export * from "./gen/eventbus/v1/dead_letter_pb.js";
export * from "./gen/eventbus/v1/event_pb.js";
export * from "./gen/eventbus/v1/event_service_pb.js";
export * from "./gen/eventbus/v1/subscription_pb.js";
export * from "./gen/eventbus/v1/topic_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

/** Clients of both eventbus services, sharing one HTTP/2 connection. */
export interface EventbusClient {
  /** Publish, Subscribe, Ack, Nack, ModifyAckDeadline, Replay. */
  events: Client<typeof EventService>;
  /** Topics, subscriptions, dead letters, seek, pause/resume. */
  admin: Client<typeof AdminService>;
}

/** Connects (plaintext) to the server at `addr`, e.g. "127.0.0.1:50051". */
export function connect(addr: string): EventbusClient {
  const transport = createGrpcTransport({ baseUrl: `http://${addr}` });
  return {
    events: createClient(EventService, transport),
    admin: createClient(AdminService, transport),
  };
}
