// nodeHttp2Transport() against a server that misbehaves, and against caller
// mistakes: each ends in a clear ConnectError with the right code, never a
// hang, never a peer wrongly blamed, and nothing left behind.
import * as http2 from "node:http2";
import * as net from "node:net";
import { getEventListeners } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, type Interceptor } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { EchoResponseSchema, EchoService } from "../gen/test/echo/v1/echo_pb.js";
import { createBalancedTransport, deliveryOf, staticDiscovery } from "../src/index.js";
import { nodeHttp2Transport, type NodeHttp2TransportOptions } from "../src/node/index.js";
import { gzip } from "../src/node/grpc/compression.js";
import { startEchoServer, type EchoServer } from "../support/echo-server.js";
import { eventRecorder, rejection } from "./helpers.js";

const ok = toBinary(EchoResponseSchema, create(EchoResponseSchema, { servedBy: "raw" }));
const grpc = { ":status": 200, "content-type": "application/grpc" };

function envelope(flags: number, data: Uint8Array, declaredSize = data.byteLength): Buffer {
  const out = Buffer.alloc(5 + data.byteLength);
  out[0] = flags;
  out.writeUInt32BE(declaredSize, 1);
  out.set(data, 5);
  return out;
}

function withTrailers(stream: http2.ServerHttp2Stream, headers: http2.OutgoingHttpHeaders, trailers: http2.OutgoingHttpHeaders, body?: Buffer) {
  stream.respond(headers, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers(trailers));
  stream.end(body);
}

/** What the raw server does, chosen by the request's x-behavior header. */
const behaviors: Record<string, (stream: http2.ServerHttp2Stream) => void> = {
  ok: (s) => withTrailers(s, grpc, { "grpc-status": "0" }, envelope(0, ok)),
  "html content type": (s) => {
    s.respond({ ":status": 200, "content-type": "text/html" });
    s.end("<html>");
  },
  "HTTP 503": (s) => {
    s.respond({ ":status": 503, "content-type": "text/plain" });
    s.end("busy");
  },
  "a clean end without grpc-status": (s) => {
    s.respond(grpc);
    s.end(envelope(0, ok));
  },
  "a compressed message without grpc-encoding": (s) => withTrailers(s, grpc, { "grpc-status": "0" }, envelope(1, ok)),
  "a declared length of 4 GB": (s) => {
    s.respond(grpc);
    s.write(envelope(0, new Uint8Array(10), 0xfffffff0));
  },
  "grpc-status abc": (s) => withTrailers(s, grpc, { "grpc-status": "abc" }, envelope(0, ok)),
  "a grpc-message that is not percent-encoding": (s) => withTrailers(s, grpc, { "grpc-status": "3", "grpc-message": "bad %zz% input" }),
  "two messages for a unary call": (s) => withTrailers(s, grpc, { "grpc-status": "0" }, Buffer.concat([envelope(0, ok), envelope(0, ok)])),
  "a truncated message": (s) => withTrailers(s, grpc, { "grpc-status": "0" }, envelope(0, ok).subarray(0, 4)),
  "REFUSED_STREAM": (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM),
  "RST_STREAM before the headers": (s) => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR),
  // node:http2's close(code) ends the response (END_STREAM) before it sends RST_STREAM: on the wire a clean end without trailers
  "END_STREAM then RST_STREAM after the headers": (s) => {
    s.respond(grpc);
    s.write(envelope(0, ok).subarray(0, 3), () => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  },
  // destroy(error) sends RST_STREAM(INTERNAL_ERROR) alone: a reset mid-response
  "RST_STREAM after the headers": (s) => {
    s.respond(grpc);
    s.write(envelope(0, ok).subarray(0, 3), () => s.destroy(new Error("reset on purpose")));
  },
  "an error as soon as the request starts": (s) => {
    s.once("data", () => {
      s.respond({ ...grpc, "grpc-status": "3", "grpc-message": "no" }, { endStream: true });
      s.close(0);
    });
  },
};

let server: http2.Http2Server;
let address = "";
let streamsSeen = 0;
const echoServers: EchoServer[] = [];

beforeAll(async () => {
  server = http2.createServer();
  server.on("stream", (stream, headers) => {
    streamsSeen++;
    stream.on("error", () => {});
    behaviors[String(headers["x-behavior"] ?? "ok")]!(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  address = `127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  await Promise.all(echoServers.map((s) => s.stop()));
  await new Promise((resolve) => server.close(resolve));
});

const transports: { close(): void }[] = [];
afterAll(() => transports.forEach((t) => t.close()));

function client(options: NodeHttp2TransportOptions = {}, to = address) {
  const transport = nodeHttp2Transport(options)({ url: `http://${to}`, address: to } as never);
  transports.push(transport);
  return createClient(EchoService, transport);
}

describe("a misbehaving server", () => {
  const table: [behavior: string, code: Code, message: RegExp, delivery?: string][] = [
    ["html content type", Code.Unknown, /unsupported content type text\/html/],
    ["HTTP 503", Code.Unavailable, /HTTP 503/],
    ["a clean end without grpc-status", Code.Internal, /127\.0\.0\.1:\d+ ended the response without a gRPC status/, "lost"],
    ["a compressed message without grpc-encoding", Code.Internal, /compressed output without grpc-encoding/],
    ["a declared length of 4 GB", Code.ResourceExhausted, /127\.0\.0\.1:\d+ sent a message of 4294967280 bytes, over the limit of 1048576 bytes \(readMaxBytes\)/],
    ["grpc-status abc", Code.Internal, /invalid grpc-status: abc/],
    ["a grpc-message that is not percent-encoding", Code.InvalidArgument, /bad %zz% input/],
    ["two messages for a unary call", Code.Unimplemented, /extra output message/],
    ["a truncated message", Code.Internal, /incomplete message/],
    ["REFUSED_STREAM", Code.Unavailable, /refused the stream/, "unprocessed"],
    ["RST_STREAM before the headers", Code.Unavailable, /stream to 127\.0\.0\.1:\d+ reset by the server with HTTP\/2 error code 2 \(INTERNAL_ERROR\)/, "lost"],
    ["END_STREAM then RST_STREAM after the headers", Code.Internal, /ended the response without a gRPC status/, "lost"],
    ["RST_STREAM after the headers", Code.Unavailable, /stream to 127\.0\.0\.1:\d+ reset by the server with HTTP\/2 error code 2 \(INTERNAL_ERROR\)/, "lost"],
  ];
  it.each(table)("%s → %s", async (behavior, code, message, delivery) => {
    const error = await rejection(client({ readMaxBytes: 1 << 20 }).echo({}, { headers: { "x-behavior": behavior }, timeoutMs: 5_000 }));
    expect({ code: error.code, delivery: deliveryOf(error) }).toEqual({ code, delivery });
    expect(error.message).toMatch(message);
  });

  it("ends a client stream it answered early, and returns the caller's input, also while compressing", async () => {
    const payload = new Uint8Array(256 << 10).map((_, i) => (i * 7919 + (i >> 8)) & 0xff);
    for (const options of [{ sendCompression: gzip, compressMinBytes: 1 }, {}]) {
      let inputReturned: () => void;
      const returned = new Promise<void>((resolve) => (inputReturned = resolve));
      const input = (async function* () {
        try {
          for (;;) yield { payload };
        } finally {
          inputReturned!();
        }
      })();
      const error = await rejection(client(options).clientStream(input, { headers: { "x-behavior": "an error as soon as the request starts" } }));
      // Node 22's http2 client drops a trailers-only response that RST_STREAM(NO_ERROR)
      // follows while the request is still being sent: the call then ends as lost.
      expect([Code.InvalidArgument, Code.Unavailable]).toContain(error.code);
      await returned;
    }
  });
});

describe("a peer that accepts TCP connections but never speaks HTTP/2 (a frozen process)", () => {
  it("fails a call without a deadline after connectTimeoutMs, as never sent", async () => {
    const sockets = new Set<net.Socket>();
    const frozen = net.createServer((socket) => sockets.add(socket.on("error", () => {})));
    await new Promise<void>((resolve) => frozen.listen(0, "127.0.0.1", resolve));
    const to = `127.0.0.1:${(frozen.address() as net.AddressInfo).port}`;
    try {
      const started = performance.now();
      const error = await rejection(client({ connectTimeoutMs: 300 }, to).echo({}));
      expect({ code: error.code, delivery: deliveryOf(error) }).toEqual({ code: Code.Unavailable, delivery: "unprocessed" });
      expect(error.message).toMatch(/connection not established within 300 ms/);
      expect(performance.now() - started).toBeLessThan(2_000);
    } finally {
      sockets.forEach((socket) => socket.destroy());
      await new Promise((resolve) => frozen.close(resolve));
    }
  });
});

describe("caller mistakes and edge cases", () => {
  it("names a header with a value the Fetch API refuses, but never the value (it may be a credential)", async () => {
    const headers = { authorization: "Bearer s3cr3t-token\nx" };
    const direct = await rejection(client().echo({}, { headers }));
    const balanced = createBalancedTransport({ service: "raw", discovery: staticDiscovery([`grpc://${address}`]), transport: nodeHttp2Transport() });
    const viaBalancer = await rejection(createClient(EchoService, balanced).echo({}, { headers }));
    await balanced.close();
    for (const error of [direct, viaBalancer]) {
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.message).toContain('"authorization"');
      expect(error.message).not.toContain("s3cr3t");
    }
  });

  it("refuses a connection-specific header as InvalidArgument, ejecting no peer and sending nothing", async () => {
    const recorder = eventRecorder();
    const balanced = createBalancedTransport({ service: "raw", discovery: staticDiscovery([`grpc://${address}`]), transport: nodeHttp2Transport(), onEvent: recorder.onEvent });
    const before = streamsSeen;
    const error = await rejection(createClient(EchoService, balanced).write({}, { headers: { connection: "close" } }));
    await balanced.close();
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.message).toMatch(/connection/i);
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([]);
    expect(streamsSeen).toBe(before);
  });

  it("resends calls a live peer refuses (REFUSED_STREAM), whatever the method, and holds nothing against it", async () => {
    const echo = await startEchoServer({ kind: "grpc-js" });
    echoServers.push(echo);
    const recorder = eventRecorder();
    const balanced = createBalancedTransport({
      service: "raw",
      discovery: staticDiscovery([`grpc://${address}`, `grpc://${echo.address}`]),
      transport: nodeHttp2Transport(),
      balancer: "round_robin",
      onEvent: recorder.onEvent,
    });
    const writes = await Promise.allSettled(
      Array.from({ length: 20 }, () => createClient(EchoService, balanced).write({}, { headers: { "x-behavior": "REFUSED_STREAM" } })),
    );
    await balanced.close();
    expect(writes.filter((w) => w.status === "rejected")).toEqual([]);
    expect(echo.stats.calls).toBe(20);
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([]);
  });

  it("resends an idempotent call whose stream a peer resets after its headers, or ends without a status; never a write", async () => {
    const echo = await startEchoServer({ kind: "grpc-js" });
    echoServers.push(echo);
    const balanced = () =>
      createBalancedTransport({
        service: "raw",
        discovery: staticDiscovery([`grpc://${address}`, `grpc://${echo.address}`]),
        transport: nodeHttp2Transport(),
        balancer: "round_robin",
      });
    for (const behavior of ["RST_STREAM after the headers", "END_STREAM then RST_STREAM after the headers"]) {
      const headers = { "x-behavior": behavior };
      // A transport each: the resets take the raw peer out of the first one's rotation.
      const [forEchoes, forWrites] = [balanced(), balanced()];
      const before = streamsSeen;
      const echoes = await Promise.allSettled(Array.from({ length: 10 }, () => createClient(EchoService, forEchoes).echo({}, { headers })));
      const resetEchoes = streamsSeen - before;
      const writes = await Promise.allSettled(Array.from({ length: 10 }, () => createClient(EchoService, forWrites).write({}, { headers })));
      await Promise.all([forEchoes.close(), forWrites.close()]);
      expect(resetEchoes, behavior).toBeGreaterThan(0);
      expect(echoes.filter((e) => e.status === "rejected"), behavior).toEqual([]);
      const failedWrites = writes.filter((w): w is PromiseRejectedResult => w.status === "rejected");
      expect(failedWrites.length, behavior).toBeGreaterThan(0);
      expect(failedWrites.map((w) => String(w.reason)).join("\n")).toMatch(/reset by the server|without a gRPC status/);
    }
  });

  it("refuses an invalid header name as InvalidArgument, leaving no listener on the caller's signal", async () => {
    const controller = new AbortController();
    const error = await rejection(client().echo({}, { headers: { "bad name": "x" }, signal: controller.signal, timeoutMs: 60_000 }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(getEventListeners(controller.signal, "abort")).toEqual([]);
  });

  it("cancels a call aborted while its request is being compressed", async () => {
    const controller = new AbortController();
    const before = streamsSeen;
    const payload = new Uint8Array(4 << 20).map((_, i) => (i * 7919) & 0xff);
    const call = client({ sendCompression: gzip }).echo({ payload }, { signal: controller.signal });
    setImmediate(() => controller.abort());
    const error = await rejection(call);
    expect({ code: error.code, delivery: deliveryOf(error) }).toEqual({ code: Code.Canceled, delivery: "canceled" });
    expect(streamsSeen).toBe(before);
  });

  it("takes a timeout longer than Node's longest timer (24.8 days) as a timeout, not as 1 ms", async () => {
    const res = await client().echo({}, { timeoutMs: 2 ** 31 });
    expect(res.servedBy).toBe("raw");
  });

  it("marks a caller's abort as canceled also when the options have interceptors", async () => {
    const passThrough: Interceptor = (next) => (req) => next(req);
    const controller = new AbortController();
    const call = client({ interceptors: [passThrough] }).echo({}, { signal: controller.signal, headers: { "x-behavior": "a declared length of 4 GB" } });
    setImmediate(() => controller.abort());
    const error = await rejection(call);
    expect({ code: error.code, delivery: deliveryOf(error) }).toEqual({ code: Code.Canceled, delivery: "canceled" });
  });

  it("answers next() called again before the last one settled", async () => {
    const echo = await startEchoServer({ kind: "grpc-js" });
    echoServers.push(echo);
    const transport = nodeHttp2Transport()({ url: `http://${echo.address}`, address: echo.address } as never);
    transports.push(transport);
    const input = (async function* () {
      yield { count: 3, delayMs: 20 };
    })();
    const res = await transport.stream(EchoService.method.serverStream, undefined, 5_000, undefined, input);
    const messages = res.message[Symbol.asyncIterator]();
    const results = await Promise.all([messages.next(), messages.next(), messages.next(), messages.next()]);
    expect(results.map((r) => (r.done === true ? "done" : r.value.index))).toEqual([0, 1, 2, "done"]);
  });
});
