// Conformance of nodeHttp2Transport(), the library's own gRPC client on
// node:http2, against the reference gRPC server (@grpc/grpc-js) and connect-node:
// metadata, deadlines, cancellation, status codes and details, compression,
// size limits, streaming, GOAWAY, crashes, keepalive, TLS and IPv6 — and what
// became of each failed request (deliveryOf), which the balancer's retries rely on.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  createClient,
  createContextValues,
  decodeBinaryHeader,
  encodeBinaryHeader,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { compressionGzip } from "@connectrpc/connect-node";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { EchoService, type BidiStreamRequestSchema } from "../gen/test/echo/v1/echo_pb.js";
import { createBalancedTransport, deliveryOf, peerKey, staticDiscovery, type Peer } from "../src/index.js";
import { nodeHttp2Transport, type NodeHttp2TransportOptions } from "../src/node/index.js";
import {
  ErrorInfoSchema,
  expectedErrorInfo,
  missingMethod,
  patternPayload,
  startEchoServer,
  type EchoServer,
  type EchoServerKind,
  type EchoServerOptions,
} from "../support/echo-server.js";
import { makeTestCertificates, type TestCertificates } from "../support/tls.js";
import { countBy, pushable, rejection, until } from "./helpers.js";

type Options = NodeHttp2TransportOptions;
type PeerTransport = Transport & { close(): void };

const kinds: EchoServerKind[] = ["grpc-js", "connect-node"];
/** grpc-js' server never compresses responses; connect-node does when the client accepts gzip. */
const compressesResponses: Record<EchoServerKind, boolean> = { "grpc-js": false, "connect-node": true };
/** grpc-js answers an error before any message trailers-only (one HEADERS frame with END_STREAM); connect-node sends headers, then trailers. */
const trailersOnly: Record<EchoServerKind, string> = { "grpc-js": "trailers-only", "connect-node": "headers, then trailers" };
const unicodeMessage = "bad ✓ 100% %41";

// --- shared helpers: every server and transport a test makes is stopped after it ---

const servers: EchoServer[] = [];
const transports: PeerTransport[] = [];
let certs: TestCertificates;

beforeAll(async () => {
  certs = await makeTestCertificates();
});

afterEach(async () => {
  for (const transport of transports.splice(0)) transport.close();
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

async function startServer(kind: EchoServerKind, options: Omit<EchoServerOptions, "kind"> = {}): Promise<EchoServer> {
  const server = await startEchoServer({ kind, ...options });
  servers.push(server);
  return server;
}

/** The frozen Peer the balancer would build for a server's endpoint. */
function peerOf({ address, port }: { address: string; port: number }, scheme: "grpc" | "grpcs" = "grpc"): Peer {
  return Object.freeze({
    address,
    host: address.startsWith("[") ? address.slice(1, address.indexOf("]")) : address.slice(0, address.lastIndexOf(":")),
    port,
    url: `${scheme === "grpcs" ? "https" : "http"}://${address}`,
    scheme,
    key: `/microservices/echo/${address}`,
    id: address,
    name: "echo",
    version: "v1",
    metadata: Object.freeze({}),
    weight: 100,
  });
}

function transportTo(server: { address: string; port: number }, options?: Options, scheme?: "grpc" | "grpcs"): PeerTransport {
  const transport = nodeHttp2Transport(options)(peerOf(server, scheme));
  transports.push(transport);
  return transport;
}

function echoClient(server: { address: string; port: number }, options?: Options, scheme?: "grpc" | "grpcs") {
  return createClient(EchoService, transportTo(server, options, scheme));
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const listener = createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const { port } = listener.address() as { port: number };
  await new Promise((resolve) => listener.close(resolve));
  return port;
}

/** Reads a stream to its end; resolves with the messages read and the error it ended with (undefined when none). */
async function drain<T>(stream: AsyncIterable<T>): Promise<{ received: T[]; error: unknown }> {
  const received: T[] = [];
  try {
    for await (const message of stream) received.push(message);
    return { received, error: undefined };
  } catch (error) {
    return { received, error };
  }
}

async function* oneMessage<T>(message: T) {
  yield message;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Byte equality; toEqual on megabytes of Uint8Array is slow. */
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

// --- the conformance table, against both servers ---

describe.each(kinds)("nodeHttp2Transport against a %s server", (kind) => {
  describe("messages", () => {
    it("echoes a payload, served by the peer it dialled", async () => {
      const server = await startServer(kind);
      const res = await echoClient(server).echo({ payload: new Uint8Array([1, 2, 3]) });
      expect(res.servedBy).toBe(server.address);
      expect(sameBytes(res.payload, new Uint8Array([1, 2, 3]))).toBe(true);
    });

    it("decodes bytes fields as plain Uint8Array, as protobuf-es and connect-node do", async () => {
      const server = await startServer(kind);
      const res = await echoClient(server).echo({ payload: new Uint8Array([1, 2, 3]) });
      expect(res.payload).toEqual(new Uint8Array([1, 2, 3]));
      expect(Object.getPrototypeOf(res.payload)).toBe(Uint8Array.prototype);
    });
  });

  describe("metadata", () => {
    it("sends request metadata, -bin values as binary", async () => {
      const server = await startServer(kind);
      const blob = new Uint8Array([0, 1, 2, 253, 254, 255]);
      const res = await echoClient(server).echo({}, { headers: { "x-custom": "hello", "x-blob-bin": encodeBinaryHeader(blob) } });
      expect(res.requestMetadata["x-custom"]).toBe("hello");
      expect(res.requestMetadata["x-blob-bin"]).toBe(Buffer.from(blob).toString("base64"));
      expect(res.servedBy).toBe(server.address);
    });

    it("receives response headers and trailers, -bin values decoded", async () => {
      const server = await startServer(kind);
      const blob = new Uint8Array([9, 0, 255, 128]);
      let header: Headers | undefined;
      let trailer: Headers | undefined;
      await echoClient(server).echo(
        {},
        { headers: { "x-echo-token": "t-1", "x-echo-blob-bin": encodeBinaryHeader(blob) }, onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
      );
      for (const received of [header!, trailer!]) {
        expect(received.get("x-echo-token")).toBe("t-1");
        expect(decodeBinaryHeader(received.get("x-echo-blob-bin")!)).toEqual(blob);
      }
    });

    it("runs the interceptors of its options", async () => {
      const server = await startServer(kind);
      const stamp: Interceptor = (next) => (req) => {
        req.header.set("x-stamped", req.method.name);
        return next(req);
      };
      const res = await echoClient(server, { interceptors: [stamp] }).echo({});
      expect(res.requestMetadata["x-stamped"]).toBe("Echo");
    });
  });

  describe("deadlines and cancellation", () => {
    it("sends the timeout as grpc-timeout", async () => {
      const server = await startServer(kind);
      const res = await echoClient(server).echo({}, { timeoutMs: 5_000 });
      const [, value, unit] = /^(\d{1,8})([HMSmun])$/.exec(res.requestMetadata["grpc-timeout"] ?? "") ?? [];
      expect(unit).toBe("m");
      expect(Number(value)).toBeGreaterThan(4_000);
      expect(Number(value)).toBeLessThanOrEqual(5_000);
    });

    it("fails with DeadlineExceeded on time, and the server stops waiting", async () => {
      const server = await startServer(kind);
      const started = performance.now();
      const error = await rejection(echoClient(server).echo({ delayMs: 5_000 }, { timeoutMs: 200 }));
      expect(error.code).toBe(Code.DeadlineExceeded);
      expect(performance.now() - started).toBeGreaterThanOrEqual(180);
      expect(performance.now() - started).toBeLessThan(1_500);
      await until(() => server.stats.cancelled === 1);
    });

    it("applies defaultTimeoutMs", async () => {
      const server = await startServer(kind);
      const error = await rejection(echoClient(server, { defaultTimeoutMs: 200 }).echo({ delayMs: 5_000 }));
      expect(error.code).toBe(Code.DeadlineExceeded);
    });

    it("cancels on the caller's abort: Canceled, delivery canceled, and the server sees it", async () => {
      const server = await startServer(kind);
      const controller = new AbortController();
      const call = rejection(echoClient(server).echo({ delayMs: 5_000 }, { signal: controller.signal }));
      await until(() => server.stats.calls === 1);
      controller.abort();
      const error = await call;
      expect(error.code).toBe(Code.Canceled);
      expect(deliveryOf(error)).toBe("canceled");
      await until(() => server.stats.cancelled === 1);
    });

    it("cancels a server stream on the caller's abort", async () => {
      const server = await startServer(kind);
      const controller = new AbortController();
      const { received, error } = await drain(
        (async function* () {
          for await (const message of echoClient(server).serverStream({ count: 1_000, delayMs: 10 }, { signal: controller.signal })) {
            if (message.index === 2) controller.abort();
            yield message;
          }
        })(),
      );
      expect(received).toHaveLength(3);
      expect(error).toMatchObject({ code: Code.Canceled });
      expect(deliveryOf(error)).toBe("canceled");
      await until(() => server.stats.cancelled === 1);
    });

    it("cancels a server stream the caller stops reading (return() on the transport's response)", async () => {
      // createClient's iterators have no return(), so a `break` there does not reach the transport.
      const server = await startServer(kind);
      const response = await transportTo(server).stream(EchoService.method.serverStream, undefined, undefined, undefined, oneMessage({ count: 1_000, delayMs: 10 }));
      let read = 0;
      for await (const message of response.message) {
        expect(message.index).toBe(read++);
        if (read === 3) break;
      }
      await until(() => server.stats.cancelled === 1);
    });
  });

  describe("status", () => {
    it(`delivers an error before any message (${trailersOnly[kind]}) with its code, message and metadata`, async () => {
      const server = await startServer(kind);
      const error = await rejection(echoClient(server).echo({ failCode: Code.NotFound, failMessage: "no such echo" }, { headers: { "x-echo-id": "42" } }));
      expect([error.code, error.rawMessage]).toEqual([Code.NotFound, "no such echo"]);
      expect(error.metadata.get("x-echo-id")).toMatch(/^42(, 42)?$/);
      expect(deliveryOf(error)).toBeUndefined();
    });

    it(`delivers a server stream failing before any message (${trailersOnly[kind]})`, async () => {
      const server = await startServer(kind);
      const { received, error } = await drain(echoClient(server).serverStream({ count: 0, failCode: Code.PermissionDenied, failMessage: "nope" }));
      expect(received).toEqual([]);
      expect(error).toMatchObject({ code: Code.PermissionDenied, rawMessage: "nope" });
    });

    it("carries every status code 1..16 with unicode and percent signs in the message", async () => {
      const server = await startServer(kind);
      const client = echoClient(server);
      const codes = range(16).map((i) => (i + 1) as Code);
      const errors = await Promise.all(codes.map((code) => rejection(client.echo({ failCode: code, failMessage: `${unicodeMessage} ${Code[code]}` }))));
      expect(errors.map((e) => [e.code, e.rawMessage])).toEqual(codes.map((code) => [code, `${unicodeMessage} ${Code[code]}`]));
      expect(errors.map((e) => deliveryOf(e))).toEqual(codes.map(() => undefined));
    });

    it("decodes error details", async () => {
      const server = await startServer(kind);
      const error = await rejection(echoClient(server).echo({ failCode: Code.FailedPrecondition, failMessage: unicodeMessage, failWithDetails: true }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toBe(unicodeMessage);
      expect(error.findDetails(ErrorInfoSchema)).toEqual([expect.objectContaining(expectedErrorInfo(Code.FailedPrecondition))]);
    });

    it("fails a method the server does not have with Unimplemented", async () => {
      const server = await startServer(kind);
      const error = await rejection(transportTo(server).unary(missingMethod(), undefined, undefined, undefined, {}));
      expect(error.code).toBe(Code.Unimplemented);
    });
  });

  describe("compression and size limits", () => {
    it("sends gzip-compressed requests (100 KB in far fewer bytes)", async () => {
      const server = await startServer(kind);
      const payload = patternPayload(100_000);
      const res = await echoClient(server, { sendCompression: compressionGzip }).echo({ payload, responseBytes: 1 });
      expect(res.payload.byteLength).toBe(1);
      expect(server.stats.bytesReceived).toBeLessThan(10_000);
      const plain = await echoClient(server).echo({ payload });
      expect(sameBytes(plain.payload, payload)).toBe(true);
      expect(server.stats.bytesReceived).toBeGreaterThan(100_000);
    });

    it(`receives ${compressesResponses[kind] ? "gzip-compressed" : "uncompressed"} responses, as the server chooses`, async () => {
      const server = await startServer(kind);
      let encoding: string | null = null;
      const res = await echoClient(server).echo({ responseBytes: 100_000 }, { onHeader: (header) => (encoding = header.get("grpc-encoding")) });
      expect(sameBytes(res.payload, patternPayload(100_000))).toBe(true);
      expect(encoding ?? "identity").toBe(compressesResponses[kind] ? "gzip" : "identity");
      expect(server.stats.bytesSent < 10_000).toBe(compressesResponses[kind]);
    });

    it("gets no compressed response when it accepts no compression", async () => {
      const server = await startServer(kind);
      let encoding: string | null = null;
      const res = await echoClient(server, { acceptCompression: [] }).echo({ responseBytes: 100_000 }, { onHeader: (header) => (encoding = header.get("grpc-encoding")) });
      expect(sameBytes(res.payload, patternPayload(100_000))).toBe(true);
      expect(encoding ?? "identity").toBe("identity");
      expect(server.stats.bytesSent).toBeGreaterThan(100_000);
    });

    it("fails a response above readMaxBytes with ResourceExhausted", async () => {
      const server = await startServer(kind);
      const error = await rejection(echoClient(server, { readMaxBytes: 1_024 }).echo({ responseBytes: 4_096 }));
      expect(error.code).toBe(Code.ResourceExhausted);
    });

    it("fails a request above writeMaxBytes with ResourceExhausted, sending nothing", async () => {
      const server = await startServer(kind);
      const client = echoClient(server, { writeMaxBytes: 1_024 });
      const error = await rejection(client.echo({ payload: new Uint8Array(4_096) }));
      expect(error.code).toBe(Code.ResourceExhausted);
      await client.echo({ payload: new Uint8Array(16) }); // on the same connection, after anything the failed call might have sent
      expect([server.stats.streams, server.stats.calls]).toEqual([1, 1]);
    });

    it("carries 3 MB messages both ways", async () => {
      const server = await startServer(kind);
      const client = echoClient(server);
      const payload = new Uint8Array(randomBytes(3 * 1024 * 1024));
      const echoed = await client.echo({ payload });
      expect(sameBytes(echoed.payload, payload)).toBe(true);
      const big = await client.echo({ responseBytes: 3_000_000 });
      expect(sameBytes(big.payload, patternPayload(3_000_000))).toBe(true);
    });
  });

  describe("streaming", () => {
    it("receives a server stream of 1,000 messages", async () => {
      const server = await startServer(kind);
      const { received, error } = await drain(echoClient(server).serverStream({ count: 1_000, payloadBytes: 100 }));
      expect(error).toBeUndefined();
      expect(received.map((m) => m.index)).toEqual(range(1_000));
      expect(received.every((m) => m.payload.byteLength === 100 && m.servedBy === server.address)).toBe(true);
    });

    it("receives the messages of a failing server stream, then its error", async () => {
      const server = await startServer(kind);
      const { received, error } = await drain(echoClient(server).serverStream({ count: 10, failCode: Code.Aborted, failMessage: unicodeMessage }));
      expect(received.map((m) => m.index)).toEqual(range(10));
      expect(error).toMatchObject({ code: Code.Aborted, rawMessage: unicodeMessage });
      expect(deliveryOf(error)).toBeUndefined();
    });

    it("sends a client stream", async () => {
      const server = await startServer(kind);
      async function* requests() {
        for (let i = 0; i < 50; i++) yield { payload: new Uint8Array(1_000) };
      }
      const res = await echoClient(server).clientStream(requests());
      expect(res).toMatchObject({ count: 50, totalBytes: 50_000n, servedBy: server.address });
    });

    it("interleaves a bidi stream: send one, read one", async () => {
      const server = await startServer(kind);
      const input = pushable<MessageInitShape<typeof BidiStreamRequestSchema>>();
      const responses = echoClient(server).bidiStream(input)[Symbol.asyncIterator]();
      for (let i = 0; i < 5; i++) {
        input.push({ payload: new Uint8Array([i, i]) });
        const { value } = await responses.next();
        expect(value).toMatchObject({ index: i, servedBy: server.address });
        expect(sameBytes(value!.payload, new Uint8Array([i, i]))).toBe(true);
      }
      input.end();
      expect((await responses.next()).done).toBe(true);
    });
  });

  describe("connections", () => {
    it("lets a call in flight finish on graceful shutdown also with keepalive pings on (a closing session cannot ping)", async () => {
      const server = await startServer(kind);
      const client = echoClient(server, { pingIntervalMs: 50 });
      await client.echo({});
      const inFlight = client.echo({ delayMs: 500 });
      await until(() => server.stats.calls === 2, { what: "the second call in flight" });
      const closing = server.shutdown();
      expect((await inFlight).servedBy).toBe(server.address);
      await closing;
    });

    it("lets calls in flight finish on graceful shutdown (GOAWAY); new calls fail unprocessed", async () => {
      const server = await startServer(kind);
      const client = echoClient(server);
      const inFlight = range(3).map(() => client.echo({ delayMs: 300 }));
      await until(() => server.stats.calls === 3);
      const closing = server.shutdown();
      const late = await rejection(client.echo({}));
      expect([late.code, deliveryOf(late)]).toEqual([Code.Unavailable, "unprocessed"]);
      expect((await Promise.all(inFlight)).map((res) => res.servedBy)).toEqual(range(3).map(() => server.address));
      await closing;
      const after = await rejection(client.echo({}));
      expect([after.code, deliveryOf(after)]).toEqual([Code.Unavailable, "unprocessed"]);
      expect(server.stats.calls).toBe(3);
    });

    it("fails calls in flight on a killed server as Unavailable, delivery lost", async () => {
      const server = await startServer(kind);
      const client = echoClient(server);
      const inFlight = range(3).map(() => rejection(client.echo({ delayMs: 5_000 })));
      await until(() => server.stats.calls === 3);
      await server.kill();
      const errors = await Promise.all(inFlight);
      expect(errors.map((e) => [e.code, deliveryOf(e)])).toEqual(range(3).map(() => [Code.Unavailable, "lost"]));
    });

    it("fails a server stream cut by a killed server as Unavailable, delivery lost", async () => {
      const server = await startServer(kind);
      let read = 0;
      const { error } = await drain(
        (async function* () {
          for await (const message of echoClient(server).serverStream({ count: 1_000, delayMs: 10 })) {
            if (++read === 2) void server.kill();
            yield message;
          }
        })(),
      );
      expect(read).toBeGreaterThanOrEqual(2);
      expect(error).toMatchObject({ code: Code.Unavailable });
      expect(deliveryOf(error)).toBe("lost");
    });

    it("runs 500 concurrent calls on one connection", async () => {
      const server = await startServer(kind);
      const client = echoClient(server);
      const responses = await Promise.all(range(500).map((i) => client.echo({ payload: new Uint8Array([i % 256, i >> 8]) })));
      expect(responses.map((res) => [res.payload[0], res.payload[1]])).toEqual(range(500).map((i) => [i % 256, i >> 8]));
      expect(responses.every((res) => res.servedBy === server.address)).toBe(true);
      expect(server.stats.connections).toBe(1);
    });

    it("keeps an idle connection alive with pings, and uses it again", async () => {
      const server = await startServer(kind);
      const client = echoClient(server, { pingIntervalMs: 100, pingTimeoutMs: 2_000, pingIdleConnection: true });
      await client.echo({});
      await until(() => server.stats.pings >= 3, { what: "3 pings on the idle connection" });
      const res = await client.echo({});
      expect(res.servedBy).toBe(server.address);
      expect(server.stats.connections).toBe(1);
    });

    it("closes a connection idle for idleConnectionTimeoutMs, and reconnects for the next call", async () => {
      const server = await startServer(kind);
      const client = echoClient(server, { idleConnectionTimeoutMs: 100 });
      await client.echo({});
      await until(() => server.stats.openConnections === 0, { what: "the idle connection to close" });
      await client.echo({});
      expect(server.stats.connections).toBe(2);
    });

    it("calls a grpcs:// peer with a custom CA and servername", async () => {
      const server = await startServer(kind, { tls: certs });
      const res = await echoClient(server, { nodeOptions: { ca: certs.ca, servername: "echo.test" } }, "grpcs").echo({});
      expect(res.servedBy).toBe(server.address);
    });

    it("fails a grpcs:// peer whose certificate it cannot verify as Unavailable, unprocessed", async () => {
      const server = await startServer(kind, { tls: certs });
      const error = await rejection(echoClient(server, {}, "grpcs").echo({}));
      expect([error.code, deliveryOf(error)]).toEqual([Code.Unavailable, "unprocessed"]);
      expect(server.stats.calls).toBe(0);
    });

    it("calls an IPv6 peer", async () => {
      const server = await startServer(kind, { host: "::1" });
      expect(server.address).toMatch(/^\[::1\]:\d+$/);
      const res = await echoClient(server).echo({});
      expect(res.servedBy).toBe(server.address);
    });
  });

  describe("behind createBalancedTransport", () => {
    function balanced(endpoints: string[], options?: Options) {
      return createBalancedTransport({ service: "echo", discovery: staticDiscovery(endpoints), transport: nodeHttp2Transport(options), onEvent: () => {} });
    }

    it("spreads calls over the peers, each served by the peer in the context values", async () => {
      const [a, b] = [await startServer(kind), await startServer(kind)];
      const transport = balanced([`grpc://${a.address}`, `grpc://${b.address}`]);
      try {
        const client = createClient(EchoService, transport);
        const served: string[] = [];
        for (let i = 0; i < 4; i++) {
          const contextValues = createContextValues();
          const res = await client.echo({}, { contextValues });
          expect(contextValues.get(peerKey)?.address).toBe(res.servedBy);
          served.push(res.servedBy);
        }
        expect(countBy(served)).toEqual({ [a.address]: 2, [b.address]: 2 });
      } finally {
        await transport.close();
      }
    });

    it("resends an idempotent call lost on a killed peer to the other peer, but not a Write", async () => {
      const [a, b] = [await startServer(kind), await startServer(kind)];
      const transport = balanced([`grpc://${a.address}`, `grpc://${b.address}`]);
      try {
        const client = createClient(EchoService, transport);
        const echoes = range(2).map(() => client.echo({ delayMs: 300 }));
        const writes = range(2).map(() => client.write({ delayMs: 5_000 }).catch((error: unknown) => error));
        await until(() => a.stats.calls === 2 && b.stats.calls === 2);
        await a.kill();
        expect((await Promise.all(echoes)).map((res) => res.servedBy)).toEqual([b.address, b.address]);
        const lost = await Promise.race(writes); // the Write on the killed peer; the other is still waiting
        expect(lost).toMatchObject({ code: Code.Unavailable });
        expect(deliveryOf(lost)).toBe("lost");
      } finally {
        await transport.close();
      }
    });

    it("calls grpcs:// endpoints with the factory's nodeOptions", async () => {
      const server = await startServer(kind, { tls: certs });
      const transport = balanced([`grpcs://127.0.0.1:${server.port}`], { nodeOptions: { ca: certs.ca, servername: "echo.test" } });
      try {
        const res = await createClient(EchoService, transport).echo({});
        expect(res.servedBy).toBe(server.address);
      } finally {
        await transport.close();
      }
    });
  });
});

describe("nodeHttp2Transport, whatever the server", () => {
  it("fails a call to a closed port as Unavailable, unprocessed", async () => {
    const port = await closedPort();
    const error = await rejection(echoClient({ address: `127.0.0.1:${port}`, port }).echo({}));
    expect([error.code, deliveryOf(error)]).toEqual([Code.Unavailable, "unprocessed"]);
  });

  it("lets a Node process exit by itself after close(), pings configured", async () => {
    const server = await startServer("connect-node");
    const script = `
      import { createClient } from "@connectrpc/connect";
      import { nodeHttp2Transport } from ${JSON.stringify(fileURLToPath(new URL("../src/node/index.ts", import.meta.url)))};
      import { EchoService } from ${JSON.stringify(fileURLToPath(new URL("../gen/test/echo/v1/echo_pb.ts", import.meta.url)))};
      const peer = ${JSON.stringify(peerOf(server))};
      const transport = nodeHttp2Transport({ pingIntervalMs: 50, pingIdleConnection: true })(peer);
      const res = await createClient(EchoService, transport).echo({});
      console.log(res.servedBy);
      transport.close();
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "--eval", script], {
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`the process did not exit within 10 s after close(); output:\n${output}`));
      }, 10_000);
      child.once("exit", (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    expect({ code, output: output.trim() }).toEqual({ code: 0, output: server.address });
  });
});
