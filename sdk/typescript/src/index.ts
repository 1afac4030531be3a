// TypeScript client for eventbus: the messages and service descriptors are
// generated from proto/ into src/gen by `cargo xtask gen-clients` (do not edit
// them). This file re-exports them and adds `connect()`, which builds
// Connect clients over the gRPC protocol on HTTP/2 (createGrpcTransport: the
// server speaks plain gRPC, so neither the Connect nor the gRPC-Web protocol
// would work).
import { readFileSync } from "node:fs";
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

/** TLS settings for `connect`: paths to PEM files, every field optional. */
export interface TlsOptions {
  /** CA certificate(s) the server's certificate must chain to (default: Node's roots). */
  caFile?: string;
  /** Client certificate for mutual TLS (with `keyFile`). */
  certFile?: string;
  /** Private key of `certFile`. */
  keyFile?: string;
  /** Name to verify the server's certificate against, when it differs from the host. */
  serverName?: string;
}

/**
 * The `EVENTBUS_TLS_CA`, `EVENTBUS_TLS_CERT`, `EVENTBUS_TLS_KEY` and
 * `EVENTBUS_TLS_SERVER_NAME` variables (the ones the `eventbus` CLI reads),
 * or undefined when none is set.
 */
export function tlsFromEnv(env: NodeJS.ProcessEnv = process.env): TlsOptions | undefined {
  const tls: TlsOptions = {
    caFile: env.EVENTBUS_TLS_CA || undefined,
    certFile: env.EVENTBUS_TLS_CERT || undefined,
    keyFile: env.EVENTBUS_TLS_KEY || undefined,
    serverName: env.EVENTBUS_TLS_SERVER_NAME || undefined,
  };
  return Object.values(tls).some((v) => v !== undefined) ? tls : undefined;
}

/**
 * Connects to the server at `addr`, e.g. "127.0.0.1:50051": over TLS with
 * `tls`, plaintext HTTP/2 without.
 */
export function connect(addr: string, tls?: TlsOptions): EventbusClient {
  if (tls && (tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new Error("a TLS client certificate needs its key, and a key its certificate");
  }
  const read = (path?: string) => (path === undefined ? undefined : readFileSync(path));
  const transport = tls
    ? createGrpcTransport({
        baseUrl: `https://${addr}`,
        nodeOptions: {
          ca: read(tls.caFile),
          cert: read(tls.certFile),
          key: read(tls.keyFile),
          servername: tls.serverName,
        },
      })
    : createGrpcTransport({ baseUrl: `http://${addr}` });
  return {
    events: createClient(EventService, transport),
    admin: createClient(AdminService, transport),
  };
}
