// EchoService servers on loopback for the gRPC client's conformance tests: the
// same behaviour on @grpc/grpc-js (the reference gRPC server) and on
// connect-node over node:http2, plain (h2c) or TLS, IPv4 or IPv6. Every
// response names the address the server listens on (served_by).
//
// Behaviour (see proto/test/echo/v1/echo.proto):
// - request metadata is echoed into request_metadata (-bin values as base64 text);
// - request metadata named x-echo-* is sent back as response header AND trailer;
// - fail_code/fail_message fail the call, with a google.rpc.ErrorInfo detail
//   when fail_with_details; delay_ms waits, abortable by the caller;
// - gzip requests are accepted by both; connect-node also compresses
//   responses when the client accepts gzip — grpc-js' server never compresses
//   its responses (its serializeMessage always writes the compressed flag 0).
import type { EventEmitter } from "node:events";
import * as http2 from "node:http2";
import type { Socket } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { createFileRegistry } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { compressionBrotli, compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  EchoResponseSchema,
  EchoService,
  type BidiStreamRequest,
  type ClientStreamRequest,
  type EchoRequest,
  type ServerStreamRequest,
  type WriteRequest,
} from "../gen/test/echo/v1/echo_pb.js";
import { withBracketedAuthority } from "./user-server.js";

export type EchoServerKind = "grpc-js" | "connect-node";

export interface EchoServerOptions {
  readonly kind: EchoServerKind;
  readonly host?: "127.0.0.1" | "::1";
  /** 0 (default) picks a free port. */
  readonly port?: number;
  /** PEM key and certificate: serve TLS (grpcs) instead of h2c. */
  readonly tls?: { readonly key: string; readonly cert: string };
}

export interface EchoServerStats {
  /** Calls whose handler ran. */
  readonly calls: number;
  /**
   * Calls that ended before their handler finished, as the server saw it: the
   * client cancelled (RST_STREAM, connection gone) or their deadline passed.
   */
  readonly cancelled: number;
  /** request_metadata of the latest call. */
  readonly lastMetadata: Readonly<Record<string, string>> | undefined;
  /** HTTP/2 request streams opened by clients, also those that never reached a handler. */
  readonly streams: number;
  /** TCP connections accepted. */
  readonly connections: number;
  /** TCP connections open now. */
  readonly openConnections: number;
  /** PING frames received from clients. */
  readonly pings: number;
  /** Bytes read from / written to all connections so far (TLS: encrypted bytes). */
  readonly bytesReceived: number;
  readonly bytesSent: number;
}

export interface EchoServer {
  /** "127.0.0.1:41234" or "[::1]:41234". */
  readonly address: string;
  readonly port: number;
  readonly kind: EchoServerKind;
  readonly stats: EchoServerStats;
  /** Graceful: stops listening, sends GOAWAY, lets calls in flight finish; resolves once every connection closed. */
  shutdown(): Promise<void>;
  /** As a crash: destroys every connection at once (no GOAWAY), then stops listening. */
  kill(): Promise<void>;
  /** Stops the server however it is doing; safe to call more than once. */
  stop(): Promise<void>;
}

// --- google.rpc.ErrorInfo, built from its descriptor (protobuf-es ships no google.rpc types) ---

export type ErrorInfo = Message<"google.rpc.ErrorInfo"> & {
  reason: string;
  domain: string;
  metadata: { [key: string]: string };
};

const errorDetailsRegistry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "google/rpc/error_details.proto",
    package: "google.rpc",
    syntax: "proto3",
    messageType: [
      {
        name: "ErrorInfo",
        field: [
          stringField("reason", 1),
          stringField("domain", 2),
          {
            name: "metadata",
            jsonName: "metadata",
            number: 3,
            label: FieldDescriptorProto_Label.REPEATED,
            type: FieldDescriptorProto_Type.MESSAGE,
            typeName: ".google.rpc.ErrorInfo.MetadataEntry",
          },
        ],
        nestedType: [{ name: "MetadataEntry", field: [stringField("key", 1), stringField("value", 2)], options: { mapEntry: true } }],
      },
    ],
  }),
  () => undefined,
);

function stringField(name: string, number: number) {
  return { name, jsonName: name, number, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.STRING };
}

/** google.rpc.ErrorInfo; the detail a failure carries when fail_with_details is set. */
export const ErrorInfoSchema = errorDetailsRegistry.getMessage("google.rpc.ErrorInfo") as GenMessage<ErrorInfo>;

/** The ErrorInfo the server attaches to a failure with `code`. */
export function expectedErrorInfo(code: number): { reason: string; domain: string; metadata: Record<string, string> } {
  return { reason: "ECHO_FAILURE", domain: "echo.test", metadata: { code: String(code) } };
}

/** A payload of `size` bytes: a repeating, compressible pattern. */
export function patternPayload(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) {
    bytes[i] = 97 + (i % 26);
  }
  return bytes;
}

// --- What both servers do, whatever the framework ---

/** A request's metadata as [lowercase name, value] pairs; -bin values as base64 text. */
type Pairs = [string, string][];

class EchoCore {
  address = "";
  calls = 0;
  cancelled = 0;
  lastMetadata: Record<string, string> | undefined;

  /** Runs one call's handler; counts it, and counts it as cancelled when `signal` aborts before the handler finished. */
  async serve<T>(signal: AbortSignal, metadata: Pairs, handler: () => Promise<T>): Promise<T> {
    this.calls++;
    this.lastMetadata = toRecord(metadata);
    let done = false;
    const onAbort = () => {
      if (!done) {
        this.cancelled++;
      }
    };
    if (signal.aborted) {
      onAbort();
    } else {
      signal.addEventListener("abort", onAbort, { once: true });
    }
    try {
      return await handler();
    } finally {
      done = true;
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** serve() for a handler that yields its responses. */
  async *serveStream<T>(signal: AbortSignal, metadata: Pairs, responses: AsyncGenerator<T>): AsyncGenerator<T> {
    let finished!: () => void;
    const handler = this.serve(signal, metadata, () => new Promise<void>((resolve) => (finished = resolve)));
    try {
      yield* responses;
    } finally {
      finished();
      await handler;
    }
  }

  echo(request: EchoRequest, metadata: Pairs): MessageInitShape<typeof EchoResponseSchema> {
    const payload = request.responseBytes > 0 ? patternPayload(request.responseBytes) : request.payload;
    return { payload, servedBy: this.address, requestMetadata: toRecord(metadata) };
  }
}

/** The ConnectError a request with fail_code set fails with, or undefined. */
function requestedFailure(request: { failCode: number; failMessage: string; failWithDetails?: boolean }): ConnectError | undefined {
  if (request.failCode === 0) {
    return undefined;
  }
  const details = request.failWithDetails ? [{ desc: ErrorInfoSchema, value: expectedErrorInfo(request.failCode) }] : [];
  return new ConnectError(request.failMessage, request.failCode as Code, undefined, details);
}

function toRecord(pairs: Pairs): Record<string, string> {
  const record: Record<string, string> = {};
  for (const [name, value] of pairs) {
    record[name] = name in record ? `${record[name]}, ${value}` : value;
  }
  return record;
}

/** Waits `ms`; rejects when `signal` aborts. */
async function wait(ms: number, signal: AbortSignal): Promise<void> {
  if (ms > 0) {
    await delay(ms, undefined, { signal });
  }
}

/** Padded standard base64 of a -bin value, whether it came as base64 text (any padding) or as bytes. */
const base64 = (value: string | Uint8Array) => (typeof value === "string" ? Buffer.from(value, "base64") : Buffer.from(value)).toString("base64");

// --- Entry point ---

export async function startEchoServer(options: EchoServerOptions): Promise<EchoServer> {
  return options.kind === "grpc-js" ? startGrpcJsServer(options) : startConnectNodeServer(options);
}

/** Counts what happens on the sockets and sessions of one or more http2 servers. */
class Wire {
  streams = 0;
  connections = 0;
  pings = 0;
  private closedRead = 0;
  private closedWritten = 0;
  readonly sockets = new Set<Socket>();
  readonly sessions = new Set<http2.ServerHttp2Session>();

  watch(server: http2.Http2Server | http2.Http2SecureServer) {
    server.on("connection", (socket: Socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.once("close", () => {
        this.sockets.delete(socket);
        this.closedRead += socket.bytesRead;
        this.closedWritten += socket.bytesWritten;
      });
    });
    server.on("session", (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
      session.on("ping", () => this.pings++);
    });
    server.on("stream", () => this.streams++);
  }

  get bytesReceived() {
    let sum = this.closedRead;
    for (const socket of this.sockets) sum += socket.bytesRead;
    return sum;
  }

  get bytesSent() {
    let sum = this.closedWritten;
    for (const socket of this.sockets) sum += socket.bytesWritten;
    return sum;
  }

  /** Closes every TCP connection at once, as a crashed process would. */
  destroyAll() {
    for (const socket of this.sockets) {
      socket.destroy();
    }
  }
}

function statsOf(core: EchoCore, wire: Wire): EchoServerStats {
  return {
    get calls() {
      return core.calls;
    },
    get cancelled() {
      return core.cancelled;
    },
    get lastMetadata() {
      return core.lastMetadata;
    },
    get streams() {
      return wire.streams;
    },
    get connections() {
      return wire.connections;
    },
    get openConnections() {
      return wire.sockets.size;
    },
    get pings() {
      return wire.pings;
    },
    get bytesReceived() {
      return wire.bytesReceived;
    },
    get bytesSent() {
      return wire.bytesSent;
    },
  };
}

/** Shared stop bookkeeping: shutdown, kill and stop run the server's close once. */
function lifecycle(close: (how: "graceful" | "kill") => Promise<void>) {
  let closing: Promise<void> | undefined;
  let killed = false;
  return {
    shutdown: () => (closing ??= close("graceful")),
    kill: () => {
      if (killed) return closing!;
      killed = true;
      // A kill during a graceful shutdown still drops the connections at once.
      return (closing = Promise.all([closing, close("kill")]).then(() => undefined));
    },
  };
}

// --- connect-node over node:http2 ---

async function startConnectNodeServer({ host = "127.0.0.1", port = 0, tls }: EchoServerOptions): Promise<EchoServer> {
  const core = new EchoCore();
  const wire = new Wire();
  const handler = connectNodeAdapter({
    routes: connectRoutes(core),
    acceptCompression: [compressionGzip, compressionBrotli],
    readMaxBytes: 16 * 1024 * 1024,
  });
  const server = tls
    ? http2.createSecureServer({ key: tls.key, cert: tls.cert }, withBracketedAuthority(handler))
    : http2.createServer(withBracketedAuthority(handler));
  wire.watch(server);
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, () => resolve()));
  const bound = (server.address() as { port: number }).port;
  core.address = host.includes(":") ? `[${host}]:${bound}` : `${host}:${bound}`;
  const closed = new Promise<void>((resolve) => server.once("close", resolve));
  const { shutdown, kill } = lifecycle(async (how) => {
    if (how === "kill") {
      // Destroy first: on Node 24 an HTTP/2 session that is already closing
      // gracefully ignores destroy() while a stream is open.
      wire.destroyAll();
      for (const session of wire.sessions) session.destroy();
    }
    if (server.listening) server.close();
    if (how === "graceful") {
      for (const session of wire.sessions) session.close(); // GOAWAY; open streams finish
    }
    await closed;
  });
  return { address: core.address, port: bound, kind: "connect-node", stats: statsOf(core, wire), shutdown, kill, stop: kill };
}

function connectRoutes(core: EchoCore) {
  const pairsOf = (ctx: HandlerContext): Pairs => {
    const pairs: Pairs = [];
    ctx.requestHeader.forEach((value, name) => pairs.push([name, name.endsWith("-bin") ? value.split(/,\s*/).map(base64).join(", ") : value]));
    return pairs;
  };
  /** Sends x-echo-* request metadata back as response header and trailer (-bin values stay base64 text, as on the wire). */
  const echoBack = (ctx: HandlerContext): void => {
    const echoed: Pairs = [];
    ctx.requestHeader.forEach((value, name) => name.startsWith("x-echo-") && echoed.push([name, value]));
    for (const [name, value] of echoed) {
      ctx.responseHeader.append(name, value);
      ctx.responseTrailer.append(name, value);
    }
  };
  return (router: ConnectRouter) => {
    router.service(EchoService, {
      echo(request, ctx) {
        return core.serve(ctx.signal, pairsOf(ctx), async () => {
          echoBack(ctx);
          await wait(request.delayMs, ctx.signal);
          const failure = requestedFailure(request);
          if (failure) throw failure;
          return core.echo(request, pairsOf(ctx));
        });
      },
      write(request: WriteRequest, ctx) {
        return core.serve(ctx.signal, pairsOf(ctx), async () => {
          echoBack(ctx);
          await wait(request.delayMs, ctx.signal);
          return { payload: request.payload, servedBy: core.address };
        });
      },
      serverStream(request: ServerStreamRequest, ctx) {
        echoBack(ctx);
        return core.serveStream(ctx.signal, pairsOf(ctx), (async function* () {
          yield* serverStreamMessages(core, request, ctx.signal);
          const failure = requestedFailure(request);
          if (failure) throw failure;
        })());
      },
      clientStream(requests: AsyncIterable<ClientStreamRequest>, ctx) {
        return core.serve(ctx.signal, pairsOf(ctx), async () => {
          echoBack(ctx);
          let count = 0;
          let totalBytes = 0n;
          for await (const request of requests) {
            count++;
            totalBytes += BigInt(request.payload.byteLength);
          }
          return { count, totalBytes, servedBy: core.address };
        });
      },
      bidiStream(requests: AsyncIterable<BidiStreamRequest>, ctx) {
        echoBack(ctx);
        return core.serveStream(ctx.signal, pairsOf(ctx), (async function* () {
          let index = 0;
          for await (const request of requests) {
            yield { payload: request.payload, index: index++, servedBy: core.address };
          }
        })());
      },
    });
  };
}

async function* serverStreamMessages(core: EchoCore, request: ServerStreamRequest, signal: AbortSignal) {
  for (let index = 0; index < request.count; index++) {
    await wait(request.delayMs, signal);
    yield { index, payload: patternPayload(request.payloadBytes), servedBy: core.address };
  }
}

// --- @grpc/grpc-js ---

async function startGrpcJsServer({ host = "127.0.0.1", port = 0, tls }: EchoServerOptions): Promise<EchoServer> {
  const core = new EchoCore();
  const wire = new Wire();
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
  });
  server.addService(grpcJsDefinition(), grpcJsHandlers(core));
  const credentials = tls
    ? grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }], false)
    : grpc.ServerCredentials.createInsecure();
  const listenOn = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(listenOn, credentials, (error, actual) => (error ? reject(error) : resolve(actual))),
  );
  // grpc-js does not expose its node:http2 servers; the tests count streams,
  // pings and bytes on them, and kill() needs their sockets.
  const http2Servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  if (!(http2Servers instanceof Map) || http2Servers.size === 0) {
    server.forceShutdown();
    throw new Error("@grpc/grpc-js no longer keeps its http2 servers in `http2Servers`; update support/echo-server.ts");
  }
  for (const http2Server of http2Servers.keys()) {
    wire.watch(http2Server);
  }
  core.address = host.includes(":") ? `[${host}]:${bound}` : `${host}:${bound}`;
  const { shutdown, kill } = lifecycle(async (how) => {
    if (how === "kill") {
      wire.destroyAll();
      server.forceShutdown();
      return;
    }
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });
  return { address: core.address, port: bound, kind: "grpc-js", stats: statsOf(core, wire), shutdown, kill, stop: kill };
}

/** A grpc-js service definition for EchoService, (de)serializing with protobuf-es — no proto-loader. */
function grpcJsDefinition(): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Message, Message>> = {};
  for (const method of EchoService.methods) {
    definition[method.localName] = {
      path: `/${EchoService.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    };
  }
  return definition;
}

const serializer = (desc: DescMessage) => (message: Message) => Buffer.from(toBinary(desc, message));
const deserializer = (desc: DescMessage) => (bytes: Buffer) => fromBinary(desc, bytes);

type GrpcCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;

function grpcJsHandlers(core: EchoCore): grpc.UntypedServiceImplementation {
  /** Request metadata as pairs; grpc-js removes grpc-timeout, so it is put back from the deadline it parsed. */
  const pairsOf = (call: GrpcCall): Pairs => {
    const pairs: Pairs = [];
    for (const [name, values] of Object.entries(call.metadata.toJSON())) {
      for (const value of values) pairs.push([name, name.endsWith("-bin") ? base64(value) : String(value)]);
    }
    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    if (Number.isFinite(deadlineMs)) {
      pairs.push(["grpc-timeout", `${Math.max(0, Math.round(deadlineMs - Date.now()))}m`]);
    }
    return pairs;
  };
  /** x-echo-* request metadata, for the response header and trailer. */
  const echoedOf = (call: GrpcCall): grpc.Metadata => {
    const echoed = new grpc.Metadata();
    for (const [name, values] of Object.entries(call.metadata.toJSON())) {
      if (name.startsWith("x-echo-")) for (const value of values) echoed.add(name, value);
    }
    return echoed;
  };
  /** An AbortSignal for the call, aborted when grpc-js reports it cancelled. */
  const signalOf = (call: GrpcCall): AbortSignal => {
    const controller = new AbortController();
    if (call.cancelled) controller.abort();
    else (call as EventEmitter).once("cancelled", () => controller.abort());
    return controller.signal;
  };
  /** The grpc-js status for a ConnectError, with its details in grpc-status-details-bin. */
  const statusOf = (error: ConnectError, trailer: grpc.Metadata): Partial<grpc.StatusObject> & Error => {
    const metadata = trailer.clone();
    const detailsBin = setTrailerStatus(new Headers(), error).get("grpc-status-details-bin");
    if (error.details.length > 0 && detailsBin !== null) {
      metadata.set("grpc-status-details-bin", Buffer.from(detailsBin, "base64"));
    }
    return Object.assign(new Error(error.rawMessage), { code: error.code as number as grpc.status, details: error.rawMessage, metadata });
  };
  const asStatus = (error: unknown, trailer: grpc.Metadata) =>
    statusOf(error instanceof ConnectError ? error : new ConnectError(String(error), Code.Internal), trailer);

  return {
    echo(call: grpc.ServerUnaryCall<EchoRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const signal = signalOf(call);
      const echoed = echoedOf(call);
      const metadata = pairsOf(call);
      core
        .serve(signal, metadata, async () => {
          await wait(call.request.delayMs, signal);
          const failure = requestedFailure(call.request);
          if (failure) throw failure;
          return core.echo(call.request, metadata);
        })
        .then(
          (response) => {
            call.sendMetadata(echoed);
            callback(null, create(EchoResponseSchema, response), echoed);
          },
          // No sendMetadata: a failure is a trailers-only response.
          (error: unknown) => callback(asStatus(error, echoed)),
        );
    },
    write(call: grpc.ServerUnaryCall<WriteRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const signal = signalOf(call);
      const echoed = echoedOf(call);
      core
        .serve(signal, pairsOf(call), async () => {
          await wait(call.request.delayMs, signal);
          return { payload: call.request.payload, servedBy: core.address };
        })
        .then(
          (response) => {
            call.sendMetadata(echoed);
            callback(null, create(EchoService.method.write.output, response), echoed);
          },
          (error: unknown) => callback(asStatus(error, echoed)),
        );
    },
    serverStream(call: grpc.ServerWritableStream<ServerStreamRequest, unknown>) {
      const signal = signalOf(call);
      const echoed = echoedOf(call);
      const request = call.request;
      core
        .serve(signal, pairsOf(call), async () => {
          if (request.count > 0) call.sendMetadata(echoed);
          for await (const message of serverStreamMessages(core, request, signal)) {
            if (!call.write(create(EchoService.method.serverStream.output, message))) {
              await new Promise((resolve) => call.once("drain", resolve));
            }
          }
          const failure = requestedFailure(request);
          if (failure) throw failure;
        })
        .then(
          () => call.end(echoed),
          (error: unknown) => {
            if (!signal.aborted) call.emit("error", asStatus(error, echoed));
          },
        );
    },
    clientStream(call: grpc.ServerReadableStream<ClientStreamRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const signal = signalOf(call);
      const echoed = echoedOf(call);
      core
        .serve(signal, pairsOf(call), async () => {
          let count = 0;
          let totalBytes = 0n;
          for await (const request of call as AsyncIterable<ClientStreamRequest>) {
            count++;
            totalBytes += BigInt(request.payload.byteLength);
          }
          return { count, totalBytes, servedBy: core.address };
        })
        .then(
          (response) => {
            call.sendMetadata(echoed);
            callback(null, create(EchoService.method.clientStream.output, response), echoed);
          },
          (error: unknown) => callback(asStatus(error, echoed)),
        );
    },
    bidiStream(call: grpc.ServerDuplexStream<BidiStreamRequest, unknown>) {
      const echoed = echoedOf(call);
      const signal = signalOf(call);
      call.sendMetadata(echoed);
      core
        .serve(signal, pairsOf(call), async () => {
          // 'data'/'end' rather than for await: grpc-js' duplex stream stays
          // writable, so an async iterator over it never ends.
          let index = 0;
          call.on("data", (request: BidiStreamRequest) => {
            call.write(create(EchoService.method.bidiStream.output, { payload: request.payload, index: index++, servedBy: core.address }));
          });
          await new Promise<void>((resolve, reject) => {
            call.once("end", resolve);
            signal.addEventListener("abort", () => reject(signal.reason), { once: true });
          });
        })
        .then(
          () => call.end(echoed),
          () => {}, // cancelled: nothing left to answer
        );
    },
  };
}

/** For tests that call a method the servers do not have: EchoService's Echo under another name. */
export function missingMethod(name = "Missing"): DescMethod & typeof EchoService.method.echo {
  return { ...EchoService.method.echo, name, localName: name.charAt(0).toLowerCase() + name.slice(1) };
}
