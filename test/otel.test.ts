// What a user sees in their traces with otelInterceptor() on a balanced
// transport: one CLIENT span per attempt, under the caller's span, naming the
// peer that served, ended with the attempt, and continued by the server.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { context, propagation, SpanKind, SpanStatusCode, trace, type Span } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { EchoService } from "../gen/test/echo/v1/echo_pb.js";
import { createBalancedTransport, createPeerClient, staticDiscovery, type BalancedTransportOptions, type Balancer, type InstanceInit, type Peer } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { otelInterceptor, type OtelInterceptorOptions } from "../src/otel/index.js";
import { startEchoServer, type EchoServer, type EchoServerKind } from "../support/echo-server.js";
import { freePort } from "../support/etcd.js";
import { rejection } from "./helpers.js";

const echoMethod = `${EchoService.typeName}/Echo`;
const exporter = new InMemorySpanExporter();
/** Spans started and not ended yet: a span the interceptor forgets to end stays here. */
const openSpans = new Set<ReadableSpan>();
const openSpanTracker: SpanProcessor = {
  onStart: (span) => void openSpans.add(span as unknown as ReadableSpan),
  onEnd: (span) => void openSpans.delete(span),
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter), openSpanTracker] });
const tracer = provider.getTracer("otel.test");
const servers: EchoServer[] = [];
const transports: { close(): Promise<void> }[] = [];

beforeAll(() => {
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});

afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
  exporter.reset();
  openSpans.clear();
});

afterAll(async () => {
  trace.disable();
  context.disable();
  propagation.disable();
  await provider.shutdown();
});

async function echoServer(kind: EchoServerKind = "connect-node"): Promise<EchoServer> {
  const server = await startEchoServer({ kind });
  servers.push(server);
  return server;
}

function balanced(
  instances: (string | InstanceInit)[],
  transport: (peer: Peer) => Transport,
  { otel, ...options }: Partial<BalancedTransportOptions> & { otel?: OtelInterceptorOptions } = {},
) {
  const created = createBalancedTransport({
    service: "echo",
    discovery: staticDiscovery(instances),
    transport,
    interceptors: [otelInterceptor(otel)],
    ...options,
  });
  transports.push(created);
  return created;
}

/** Runs `call` with a parent span active, as a traced request handler would. */
async function underParent<T>(call: () => Promise<T>): Promise<{ result: T; parent: Span }> {
  const parent = tracer.startSpan("handler");
  try {
    return { result: await context.with(trace.setSpan(context.active(), parent), call), parent };
  } finally {
    parent.end();
  }
}

/** The ended attempt spans, in start order; fails when any span was left open. */
function attemptSpans(): ReadableSpan[] {
  expect([...openSpans].map((s) => s.name)).toEqual([]);
  return exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT);
}

const exceptionOf = (span: ReadableSpan) => span.events.find((e) => e.name === "exception")?.attributes;

/** Picks `first` for a call's first attempt, then the others: a deterministic retry path. */
function firstThenOthers(first: string): Balancer {
  return {
    name: "first_then_others",
    build: (peers) => (request) => ({ peer: (request.attempt === 0 && peers.find((p) => p.address === first)) || peers.find((p) => p.address !== first)! }),
  };
}

describe("a unary call over gRPC", () => {
  it("gives one CLIENT span, child of the caller's span, with the method and the instance that served", async () => {
    const server = await echoServer("grpc-js");
    const client = createClient(EchoService, balanced([{ id: "echo-7", version: "v1.4.0", endpoints: [`grpc://${server.address}`] }], nodeHttp2Transport()));
    const { parent } = await underParent(() => client.echo({}));
    const [span, ...more] = attemptSpans();
    expect(more).toEqual([]);
    expect(span!.name).toBe(echoMethod);
    expect(span!.kind).toBe(SpanKind.CLIENT);
    expect(span!.spanContext().traceId).toBe(parent.spanContext().traceId);
    expect(span!.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(span!.attributes).toEqual({
      "rpc.system": "grpc",
      "rpc.service": EchoService.typeName,
      "rpc.method": "Echo",
      "server.address": "127.0.0.1",
      "server.port": server.port,
      "connect_etcd_balancer.instance.id": "echo-7",
      "connect_etcd_balancer.instance.version": "v1.4.0",
      "rpc.grpc.status_code": 0,
    });
    expect(span!.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("continues the trace on the server: the request carries the attempt span's traceparent", async () => {
    const server = await echoServer("grpc-js");
    const client = createClient(EchoService, balanced([`grpc://${server.address}`], nodeHttp2Transport()));
    const { result } = await underParent(() => client.echo({}));
    const span = attemptSpans()[0]!;
    expect(result.requestMetadata["traceparent"]).toBe(`00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`);
  });

  it("gives one span per attempt when retried: the dead peer's failed, the live peer's OK, both under the caller's span", async () => {
    const live = await echoServer();
    const deadPort = await freePort();
    const dead = `127.0.0.1:${deadPort}`;
    const client = createClient(EchoService, balanced([`grpc://${dead}`, `grpc://${live.address}`], nodeHttp2Transport(), {
      balancer: firstThenOthers(dead),
      onEvent: () => {}, // the dead peer's ejection is expected, not worth a warning
    }));
    const { result, parent } = await underParent(() => client.echo({}));
    expect(result.servedBy).toBe(live.address);
    const [failed, served, ...more] = attemptSpans();
    expect(more).toEqual([]);
    expect([failed!.parentSpanContext?.spanId, served!.parentSpanContext?.spanId]).toEqual([parent.spanContext().spanId, parent.spanContext().spanId]);
    expect(failed!.attributes).toMatchObject({ "server.port": deadPort, "rpc.grpc.status_code": Code.Unavailable });
    expect(failed!.status).toEqual({ code: SpanStatusCode.ERROR, message: expect.stringMatching(/ECONNREFUSED/) });
    expect(exceptionOf(failed!)).toMatchObject({ "exception.message": expect.stringMatching(/ECONNREFUSED/) });
    expect(served!.attributes).toMatchObject({ "server.port": live.port, "rpc.grpc.status_code": 0 });
    expect(served!.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("records an application error: error status with the server's message, its gRPC code, the exception", async () => {
    const server = await echoServer();
    const client = createClient(EchoService, balanced([`grpc://${server.address}`], nodeHttp2Transport()));
    const error = await rejection(client.echo({ failCode: Code.NotFound, failMessage: "no such user" }));
    expect(error.code).toBe(Code.NotFound);
    const [span, ...more] = attemptSpans();
    expect(more).toEqual([]);
    expect(span!.attributes["rpc.grpc.status_code"]).toBe(Code.NotFound);
    expect(span!.status).toEqual({ code: SpanStatusCode.ERROR, message: "[not_found] no such user" });
    expect(exceptionOf(span!)).toMatchObject({ "exception.message": "[not_found] no such user" });
  });
});

describe("a server stream's span", () => {
  async function streaming() {
    const server = await echoServer();
    return createClient(EchoService, balanced([`grpc://${server.address}`], nodeHttp2Transport()));
  }

  it("stays open while the caller reads, and ends OK when the stream ends", async () => {
    const client = await streaming();
    const stream = client.serverStream({ count: 3 })[Symbol.asyncIterator]();
    expect((await stream.next()).done).toBe(false);
    expect(openSpans.size).toBe(1);
    expect(exporter.getFinishedSpans()).toEqual([]);
    while (!(await stream.next()).done);
    const [span] = attemptSpans();
    expect(span!.name).toBe(`${EchoService.typeName}/ServerStream`);
    expect(span!.attributes["rpc.grpc.status_code"]).toBe(0);
    expect(span!.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("ends with the error the stream fails with", async () => {
    const client = await streaming();
    const read: number[] = [];
    const error = await rejection(
      (async () => {
        for await (const message of client.serverStream({ count: 2, failCode: Code.ResourceExhausted, failMessage: "quota" })) read.push(message.index);
      })(),
    );
    expect([read, error.code]).toEqual([[0, 1], Code.ResourceExhausted]);
    const [span] = attemptSpans();
    expect(span!.attributes["rpc.grpc.status_code"]).toBe(Code.ResourceExhausted);
    expect(span!.status).toEqual({ code: SpanStatusCode.ERROR, message: "[resource_exhausted] quota" });
  });

  it("ends, not as a failure, when the caller breaks out early", async () => {
    // createPeerClient, not createClient: connect's client hides return(), so nothing below it learns of a break
    const server = await echoServer();
    const client = createPeerClient(EchoService, balanced([`grpc://${server.address}`], nodeHttp2Transport()));
    for await (const message of (await client.serverStream({ count: 1_000, delayMs: 10 })).message) {
      expect(message.index).toBe(0);
      break;
    }
    const [span] = attemptSpans();
    expect(span!.status.code).toBe(SpanStatusCode.UNSET);
    expect(span!.attributes["rpc.grpc.status_code"]).toBeUndefined(); // the server sent no status
  });

  it("ends as Canceled when the caller aborts, though nothing reads the stream", async () => {
    const server = await echoServer();
    const transport = balanced([`grpc://${server.address}`], nodeHttp2Transport());
    const controller = new AbortController();
    const input = (async function* () {
      yield { count: 1_000, delayMs: 10 };
    })();
    await transport.stream(EchoService.method.serverStream, controller.signal, undefined, undefined, input);
    expect(openSpans.size).toBe(1);
    controller.abort();
    const [span] = attemptSpans();
    expect(span!.attributes["rpc.grpc.status_code"]).toBe(Code.Canceled);
    expect(span!.status.code).toBe(SpanStatusCode.ERROR);
  });

  describe("ends when the balanced transport closes, the stream left open", () => {
    /** The close cuts the stream as a caller's abort would: ERROR, Canceled. */
    function expectClosedAsCanceled() {
      const [span] = attemptSpans();
      expect(span!.status.code).toBe(SpanStatusCode.ERROR);
      expect(span!.attributes["rpc.grpc.status_code"]).toBe(Code.Canceled);
    }

    async function streamFrom(count: number) {
      const server = await echoServer();
      const transport = balanced([`grpc://${server.address}`], nodeHttp2Transport());
      const input = (async function* () {
        yield { count, delayMs: 10 };
      })();
      return { transport, response: await transport.stream(EchoService.method.serverStream, undefined, undefined, undefined, input) };
    }

    it("by a createClient loop that broke out (connect's client drops the return())", async () => {
      const server = await echoServer();
      const transport = balanced([`grpc://${server.address}`], nodeHttp2Transport());
      for await (const message of createClient(EchoService, transport).serverStream({ count: 1_000, delayMs: 10 })) {
        expect(message.index).toBe(0);
        break;
      }
      expect(openSpans.size).toBe(1);
      await transport.close();
      expect(openSpans.size).toBe(0);
      expectClosedAsCanceled();
    });

    it("read once and left; a later read fails with the close", async () => {
      const { transport, response } = await streamFrom(1_000);
      const stream = response.message[Symbol.asyncIterator]();
      expect((await stream.next()).done).toBe(false);
      await transport.close();
      expect(openSpans.size).toBe(0);
      expectClosedAsCanceled();
      const error = await rejection(stream.next());
      expect(error.code).toBe(Code.Canceled);
      expect(error.message).toContain("was closed");
    });

    it("never read, though the server finished it", async () => {
      const { transport } = await streamFrom(1);
      expect(openSpans.size).toBe(1);
      await transport.close();
      expect(openSpans.size).toBe(0);
      expectClosedAsCanceled();
    });
  });
});

describe("the Connect protocol", () => {
  const connectPerPeer = (peer: Peer) => createConnectTransport({ baseUrl: peer.url, httpVersion: "2" });

  it("is told by the http:// endpoint: rpc.system connect_rpc, the code name on failure, traceparent sent", async () => {
    const server = await echoServer();
    const client = createClient(EchoService, balanced([`http://${server.address}`], connectPerPeer, { schemes: ["http"] }));
    const { result } = await underParent(() => client.echo({}));
    await rejection(client.echo({ failCode: Code.NotFound, failMessage: "no such user" }));
    const [ok, failed] = attemptSpans();
    expect(ok!.attributes).toEqual({
      "rpc.system": "connect_rpc",
      "rpc.service": EchoService.typeName,
      "rpc.method": "Echo",
      "server.address": "127.0.0.1",
      "server.port": server.port,
      "connect_etcd_balancer.instance.id": "0",
    });
    expect(result.requestMetadata["traceparent"]).toBe(`00-${ok!.spanContext().traceId}-${ok!.spanContext().spanId}-01`);
    expect(failed!.attributes["rpc.connect_rpc.error_code"]).toBe("not_found");
    expect(failed!.status).toEqual({ code: SpanStatusCode.ERROR, message: "[not_found] no such user" });
  });

  it("is named by the rpcSystem option where the scheme says otherwise", async () => {
    const server = await echoServer();
    const otel = { rpcSystem: "connect_rpc" } as const;
    const client = createClient(EchoService, balanced([`grpc://${server.address}`], nodeHttp2Transport({ protocol: "connect" }), { otel }));
    await rejection(client.echo({ failCode: Code.PermissionDenied }));
    const [span] = attemptSpans();
    expect(span!.attributes).toMatchObject({ "rpc.system": "connect_rpc", "rpc.connect_rpc.error_code": "permission_denied" });
    expect(span!.attributes["rpc.grpc.status_code"]).toBeUndefined();
  });
});

describe("options", () => {
  it("sends spans to the given tracerProvider, with the attributes hook's additions", async () => {
    const server = await echoServer();
    const own = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(own)] });
    const otel: OtelInterceptorOptions = { tracerProvider, attributes: (peer) => ({ "cloud.availability_zone": peer?.metadata["zone"] }) };
    const client = createClient(EchoService, balanced([{ metadata: { zone: "eu-1" }, endpoints: [`grpc://${server.address}`] }], nodeHttp2Transport(), { otel }));
    await client.echo({});
    expect(attemptSpans()).toEqual([]);
    expect(own.getFinishedSpans().map((s) => [s.name, s.attributes["cloud.availability_zone"]])).toEqual([[echoMethod, "eu-1"]]);
    await tracerProvider.shutdown();
  });
});
