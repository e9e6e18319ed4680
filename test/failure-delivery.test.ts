// What the balancer does with what became of a failed request: calls lost on
// an instance that crashed are resent when that is safe, requests that never
// reached a server are resent whatever the method and the retry budget, and
// a call that failed everywhere says how it failed on each peer.
import { afterEach, describe, expect, it } from "vitest";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { EchoService } from "../gen/test/echo/v1/echo_pb.js";
import { createBalancedTransport, deliveryOf, etcdDiscovery, staticDiscovery, type Balancer, type BalancedTransport, type Peer } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { freePort, startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos } from "../support/registry.js";
import { startEchoServer, type EchoServer } from "../support/echo-server.js";
import { eventRecorder, rejection, until } from "./helpers.js";

const servers: EchoServer[] = [];
const transports: BalancedTransport[] = [];

afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function echoServers(count: number): Promise<EchoServer[]> {
  const started = await Promise.all(Array.from({ length: count }, () => startEchoServer({ kind: "connect-node" })));
  servers.push(...started);
  return started;
}

const factories: [string, (peer: Peer) => Transport][] = [
  ["nodeHttp2Transport()", nodeHttp2Transport()],
  ["connect-node's createGrpcTransport", (peer) => createGrpcTransport({ baseUrl: peer.url })],
];

function balanced(endpoints: string[], transport: (peer: Peer) => Transport, onEvent = eventRecorder().onEvent) {
  const created = createBalancedTransport({ service: "echo", discovery: staticDiscovery(endpoints), transport, onEvent });
  transports.push(created);
  return created;
}

describe.each(factories)("an instance that crashes with calls in flight, per-peer transports from %s", (_name, factory) => {
  it("costs no idempotent call: each is resent to a live peer, and the dead one is ejected", async () => {
    const [doomed, ...live] = await echoServers(3);
    const recorder = eventRecorder();
    const client = createClient(EchoService, balanced(servers.map((s) => `grpc://${s.address}`), factory, recorder.onEvent));
    const ejected = recorder.next("peer_ejected");
    const calls = Array.from({ length: 30 }, () => client.echo({ delayMs: 300 }));
    await until(() => doomed!.stats.calls >= 5, { what: "calls in flight on the doomed instance" });
    await doomed!.kill();
    const answers = await Promise.all(calls);
    expect(answers.filter((a) => a.servedBy === doomed!.address)).toEqual([]);
    expect(new Set(answers.map((a) => a.servedBy))).toEqual(new Set(live.map((s) => s.address)));
    expect((await ejected).address).toBe(doomed!.address);
  });

  it("fails a Write in flight as Unavailable, connection lost — not as the caller's Canceled — and does not resend it", async () => {
    const [doomed] = await echoServers(2);
    const client = createClient(EchoService, balanced(servers.map((s) => `grpc://${s.address}`), factory));
    const writes = Array.from({ length: 10 }, () => client.write({ delayMs: 300 }).then(() => undefined, (error: unknown) => error));
    await until(() => doomed!.stats.calls >= 1, { what: "a write in flight on the doomed instance" });
    await doomed!.kill();
    const failures = (await Promise.all(writes)).filter((error) => error !== undefined);
    expect(failures.length).toBe(doomed!.stats.calls);
    for (const failure of failures) {
      const error = await rejection(Promise.reject(failure));
      expect(error.code).toBe(Code.Unavailable);
      expect(deliveryOf(error)).toBe("lost");
      expect(error.message).toContain(`(peer ${doomed!.address} of "echo")`);
    }
    expect(servers[1]!.stats.calls).toBe(10 - failures.length);
  });
});

describe("a server's own ABORTED or CANCELLED status", () => {
  const protocols: [string, (peer: Peer) => Transport][] = [
    ...factories,
    ["nodeHttp2Transport({ protocol: \"connect\" })", nodeHttp2Transport({ protocol: "connect" })],
    ["connect-node's createConnectTransport", (peer) => createConnectTransport({ baseUrl: peer.url, httpVersion: "2" })],
  ];
  it.each(protocols)("stays as it is, sent once, blaming no peer (%s)", async (_name, factory) => {
    await echoServers(2);
    const recorder = eventRecorder();
    const client = createClient(EchoService, balanced(servers.map((s) => `grpc://${s.address}`), factory, recorder.onEvent));
    for (const code of [Code.Aborted, Code.Canceled]) {
      const error = await rejection(client.echo({ failCode: code, failMessage: "conflict" }));
      expect({ code: error.code, delivery: deliveryOf(error) }).toEqual({ code, delivery: undefined });
    }
    expect(servers[0]!.stats.calls + servers[1]!.stats.calls).toBe(2);
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([]);
  });
});

describe("requests that never reached a server", () => {
  it("are resent whatever the method and beyond the retry budget: 60 concurrent Writes, one instance of three refusing connections", async () => {
    const live = await echoServers(2);
    const dead = `127.0.0.1:${await freePort()}`;
    const client = createClient(EchoService, balanced([`grpc://${dead}`, ...live.map((s) => `grpc://${s.address}`)], nodeHttp2Transport()));
    // A fifth of 60 calls in flight may be retries; a third of them start on the dead instance.
    const results = await Promise.allSettled(Array.from({ length: 60 }, () => client.write({})));
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    expect(live[0]!.stats.calls + live[1]!.stats.calls).toBe(60);
  });
});

describe("a call that failed on every peer it tried", () => {
  it("says how it failed on each", async () => {
    const first = `127.0.0.1:${await freePort()}`;
    const second = `127.0.0.1:${await freePort()}`;
    const client = createClient(EchoService, balanced([`grpc://${first}`, `grpc://${second}`], nodeHttp2Transport()));
    const error = await rejection(client.echo({}));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toMatch(/2 peers tried, earlier: 127\.0\.0\.1:\d+: \[unavailable\] cannot connect to 127\.0\.0\.1:\d+: connect ECONNREFUSED/);
    expect(error.message).toContain(first);
    expect(error.message).toContain(second);
  });
});

describe.each(factories)("an instance shutting down gracefully (GOAWAY), per-peer transports from %s", (_name, factory) => {
  it("costs no call of any method: calls in flight finish, new ones go to the others", async () => {
    const [leaving, ...staying] = await echoServers(3);
    const client = createClient(EchoService, balanced(servers.map((s) => `grpc://${s.address}`), factory));
    let shutdown: Promise<void> | undefined;
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, async (_, caller) => {
        const served: string[] = [];
        for (let i = 0; i < 25; i++) {
          served.push((await client.write({ delayMs: 5 })).servedBy);
          if (caller === 0 && i === 5) shutdown = leaving!.shutdown();
        }
        return served;
      }),
    );
    await shutdown;
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    const served = results.flatMap((r) => (r.status === "fulfilled" ? r.value : []));
    expect(served).toHaveLength(200);
    expect(staying[0]!.stats.calls + staying[1]!.stats.calls + leaving!.stats.calls).toBe(200);
  });
});

describe("the pick of a server stream that nobody reads to the end", () => {
  /** A round-robin policy that records how each pick ended. */
  function recordingBalancer() {
    const ended: (Code | "ok")[] = [];
    const balancer: Balancer = {
      name: "recording",
      build: (peers) => {
        let next = 0;
        return () => ({ peer: peers[next++ % peers.length]!, done: (result) => ended.push(result.error?.code ?? "ok") });
      },
    };
    return { balancer, ended };
  }

  async function openStream(transport: BalancedTransport, signal?: AbortSignal) {
    const input = (async function* () {
      yield { count: 1_000, delayMs: 50 };
    })();
    return transport.stream(EchoService.method.serverStream, signal, undefined, undefined, input);
  }

  it.each(factories)("ends when the caller aborts, though the stream is never iterated (%s)", async (_name, factory) => {
    const [server] = await echoServers(1);
    const { balancer, ended } = recordingBalancer();
    const transport = createBalancedTransport({ service: "echo", discovery: staticDiscovery([`grpc://${server!.address}`]), transport: factory, balancer });
    transports.push(transport);
    const controller = new AbortController();
    const response = await openStream(transport, controller.signal);
    expect(response.peer.address).toBe(server!.address);
    expect(ended).toEqual([]);
    controller.abort();
    expect(ended).toEqual([Code.Canceled]);
  });

  it.each(factories)("ends when the balanced transport closes (%s)", async (_name, factory) => {
    const [server] = await echoServers(1);
    const { balancer, ended } = recordingBalancer();
    const transport = createBalancedTransport({ service: "echo", discovery: staticDiscovery([`grpc://${server!.address}`]), transport: factory, balancer });
    await openStream(transport);
    await openStream(transport);
    await transport.close();
    expect(ended).toEqual([Code.Canceled, Code.Canceled]);
    if (factory === factories[0]![1]) {
      // nodeHttp2Transport() has close(): the connection goes, and the server sees both streams end
      await until(() => server!.stats.cancelled === 2, { what: "the server seeing both streams cancelled" });
    }
  });
});

describe("a peer that leaves the registry with a stream nobody reads", () => {
  let etcd: EtcdServer | undefined;
  afterEach(async () => {
    await etcd?.stop();
    etcd = undefined;
  });

  it("ends the stream's pick once its drain ran out, and closes the peer's connection (the server sees the stream cancelled)", async () => {
    etcd = await startEtcd();
    const started = await echoServers(2);
    const registrations = await Promise.all(
      started.map((s, i) => registerKratos(etcd!.endpoint, { id: `echo-${i}`, name: "leaving-echo", version: "v1", metadata: null, endpoints: [`grpc://${s.address}`] })),
    );
    // records how the stream's pick ends; the calls after it are not recorded
    const ended: (Code | "ok")[] = [];
    let streamPicked = false;
    const recording: Balancer = {
      name: "record-the-first-pick",
      build: (peers) => () => {
        const first = !streamPicked;
        streamPicked = true;
        return { peer: peers[0]!, done: (result) => void (first && ended.push(result.error?.code ?? "ok")) };
      },
    };
    const recorder = eventRecorder();
    const transport = createBalancedTransport({
      service: "leaving-echo",
      discovery: etcdDiscovery({ endpoints: [etcd.endpoint], ttlMs: 50 }),
      transport: nodeHttp2Transport(),
      balancer: recording,
      drainMs: 0,
      onEvent: recorder.onEvent,
    });
    transports.push(transport);
    const input = (async function* () {
      yield { count: 1_000, delayMs: 50 };
    })();
    const response = await transport.stream(EchoService.method.serverStream, undefined, undefined, undefined, input);
    const gone = started.find((s) => s.address === response.peer.address)!;
    await registrations[started.indexOf(gone)]!.deregister();
    // calls read the registry again once the 50 ms TTL passed; the one that sees the new
    // snapshot retires the departed peer: its stream is ended (drainMs 0) and its connection closed
    let seen = false;
    void recorder.next("snapshot").then(() => (seen = true));
    const client = createClient(EchoService, transport);
    for (let i = 0; i < 500 && (!seen || ended.length === 0); i++) {
      await client.echo({});
    }
    expect(ended).toEqual([Code.Unavailable]); // as for a server gone: the caller opens a new stream elsewhere
    await until(() => gone.stats.cancelled === 1, { what: "the departed server seeing its stream cancelled" });
    await Promise.all(registrations.map((r) => r.deregister().catch(() => {})));
  });
});
