// How a balanced transport ends the calls it cuts: streams over a per-peer
// transport without close() (connect-node's), and calls in flight at close().
import { afterEach, describe, expect, it } from "vitest";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EchoService } from "../gen/test/echo/v1/echo_pb.js";
import { createBalancedTransport, deliveryOf, staticDiscovery, type BalancedTransport, type Balancer, type Peer } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startEchoServer, type EchoServer } from "../support/echo-server.js";
import { eventRecorder, rejection, sleep, until } from "./helpers.js";

const servers: EchoServer[] = [];
const transports: BalancedTransport[] = [];

afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function echoServer(): Promise<EchoServer> {
  const server = await startEchoServer({ kind: "connect-node" });
  servers.push(server);
  return server;
}

// connect-node's own transport has no close(): only an abort reaches its HTTP/2 stream
const connectNodeGrpc = (peer: Peer): Transport => createGrpcTransport({ baseUrl: peer.url });

function balanced(server: EchoServer, transport: (peer: Peer) => Transport, extra: { balancer?: Balancer; onEvent?: ReturnType<typeof eventRecorder>["onEvent"] } = {}) {
  const created = createBalancedTransport({ service: "echo", discovery: staticDiscovery([`grpc://${server.address}`]), transport, ...extra });
  transports.push(created);
  return created;
}

/** A request input that never ends, saying how often it was read and whether it was finalized. */
function endlessInput() {
  const state = { pulled: 0, finalized: false };
  const messages = (async function* () {
    try {
      for (;;) {
        state.pulled++;
        yield { payload: new Uint8Array(10) };
        await sleep(20);
      }
    } finally {
      state.finalized = true;
    }
  })();
  return { state, messages };
}

describe("a stream over connect-node's createGrpcTransport, cut by close()", () => {
  it("fails a pending read at once, and the server sees the stream cancelled", async () => {
    const server = await echoServer();
    const transport = balanced(server, connectNodeGrpc);
    const input = (async function* () {
      yield { count: 2, delayMs: 400 }; // connect-node answers with the first message; the second is 400 ms later
    })();
    const response = await transport.stream(EchoService.method.serverStream, undefined, undefined, undefined, input);
    const stream = response.message[Symbol.asyncIterator]();
    expect((await stream.next()).done).toBe(false);
    const pending = rejection(stream.next());
    const cancelledBefore = server.stats.cancelled;
    await transport.close();
    const error = await Promise.race([pending, sleep(150).then(() => undefined)]);
    expect(error?.code).toBe(Code.Canceled);
    expect(error?.message).toContain("was closed");
    await until(() => server.stats.cancelled === cancelledBefore + 1, { what: "the server seeing the stream cancelled" });
  });

  it("stops reading a bidi stream's input and finalizes it", async () => {
    const server = await echoServer();
    const transport = balanced(server, connectNodeGrpc);
    const { state, messages } = endlessInput();
    const response = await transport.stream(EchoService.method.bidiStream, undefined, undefined, undefined, messages);
    const stream = response.message[Symbol.asyncIterator]();
    await stream.next();
    const pending = rejection(stream.next());
    await transport.close();
    expect((await pending).code).toBe(Code.Canceled);
    await until(() => state.finalized, { what: "the input generator finalized" });
    const pulled = state.pulled;
    await sleep(200);
    expect(state.pulled).toBe(pulled);
  });

  it("rejects a client stream still waiting for its response", async () => {
    const server = await echoServer();
    const transport = balanced(server, connectNodeGrpc);
    const { state, messages } = endlessInput();
    const response = rejection(transport.stream(EchoService.method.clientStream, undefined, undefined, undefined, messages));
    await sleep(100);
    await transport.close();
    const error = await Promise.race([response, sleep(1_000).then(() => undefined)]);
    expect([error?.code, deliveryOf(error)]).toEqual([Code.Canceled, "canceled"]);
    expect(error?.message).toContain("was closed");
    await until(() => state.finalized, { what: "the input generator finalized" });
  });
});

describe("close() with calls in flight", () => {
  it("cancels them as closed: no failure of the peer, no ejection, no retry", async () => {
    const server = await echoServer();
    const recorder = eventRecorder();
    const transport = balanced(server, nodeHttp2Transport(), { onEvent: recorder.onEvent });
    const client = createClient(EchoService, transport);
    await client.echo({});
    const unary = Array.from({ length: 4 }, () => rejection(client.echo({ delayMs: 1_000 })));
    const stream = rejection(transport.stream(EchoService.method.clientStream, undefined, undefined, undefined, endlessInput().messages));
    await sleep(100);
    await transport.close();
    for (const error of await Promise.all([...unary, stream])) {
      expect([error.code, deliveryOf(error)]).toEqual([Code.Canceled, "canceled"]);
      expect(error.message).toContain(`the balanced transport of "echo" was closed`);
    }
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([]);
  });

  it("leaves stats() empty: the counters go with the per-peer transports", async () => {
    const server = await echoServer();
    const transport = balanced(server, nodeHttp2Transport(), { onEvent: () => {} });
    const client = createClient(EchoService, transport);
    await client.echo({});
    expect(transport.stats()).toHaveLength(1);
    await transport.close();
    expect(transport.stats()).toEqual([]);
  });
});

describe("throw() on a stream's iterator", () => {
  it("ends the attempt as canceled by the caller: no latency sample, no failure", async () => {
    const server = await echoServer();
    const ended: (Code | "ok")[] = [];
    const balancer: Balancer = { name: "recording", build: (peers) => () => ({ peer: peers[0]!, done: (result) => ended.push(result.error?.code ?? "ok") }) };
    const transport = balanced(server, nodeHttp2Transport(), { balancer });
    const input = (async function* () {
      yield { count: 1_000, delayMs: 10 };
    })();
    const response = await transport.stream(EchoService.method.serverStream, undefined, undefined, undefined, input);
    const stream = response.message[Symbol.asyncIterator]();
    await stream.next();
    await stream.throw!(new Error("the consumer failed")).catch(() => {});
    expect(ended).toEqual([Code.Canceled]);
    expect(transport.stats()).toMatchObject([{ calls: 1, failures: 0, inflight: 0, latencyMs: null }]);
  });
});
