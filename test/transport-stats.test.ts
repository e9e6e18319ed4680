// transport.stats(): what the transport counted per peer, on real servers,
// under every balancer, across registry changes.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, staticDiscovery, type BalancedTransport, type BalancerName, type Discovery, type PeerStats } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy, eventRecorder, until } from "./helpers.js";

const transports: BalancedTransport[] = [];
const servers: UserServer[] = [];
afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

function balanced(discovery: Discovery, options: { balancer?: BalancerName; onEvent?: ReturnType<typeof eventRecorder>["onEvent"] } = {}) {
  const transport = createBalancedTransport({ service: "user-service", discovery, transport: nodeHttp2Transport(), ...options });
  transports.push(transport);
  return transport;
}

async function startServers(count: number, options: Parameters<typeof startUserServer>[0] = {}) {
  const started = await Promise.all(Array.from({ length: count }, () => startUserServer(options)));
  servers.push(...started);
  return started;
}

const byAddress = (stats: readonly PeerStats[]) => Object.fromEntries(stats.map((s) => [s.address, s]));

/** Server-streaming input: the one request message. */
async function* listRequest(count: number) {
  yield { count };
}

describe("transport.stats() on a steady fleet", () => {
  const fleet: UserServer[] = [];
  beforeAll(async () => {
    fleet.push(...(await Promise.all([startUserServer(), startUserServer(), startUserServer()])));
  });
  afterAll(async () => {
    await Promise.all(fleet.map((s) => s.stop()));
  });

  it.each(["round_robin", "random", "weighted_round_robin", "least_request", "p2c", "ring_hash"] as const)(
    "counts under %s the calls each peer served, with its latency, as frozen JSON-ready objects in the order of peers()",
    async (balancer) => {
      const transport = balanced(staticDiscovery(fleet.map((s) => `grpc://${s.address}`)), { balancer });
      const peers = await transport.peers();
      expect(transport.stats()).toEqual(peers.map((p) => ({ address: p.address, id: p.id, calls: 0, failures: 0, inflight: 0, latencyMs: null, ejected: false })));

      const users = createPeerClient(UserService, transport);
      const servedBy = await Promise.all(Array.from({ length: 30 }, async (_, i) => (await users.getUser({ id: String(i) })).peer.address));

      const stats = transport.stats();
      expect(stats.map((s) => s.address)).toEqual(peers.map((p) => p.address));
      const served = countBy(servedBy);
      for (const s of stats) {
        expect(s).toMatchObject({ calls: served[s.address] ?? 0, failures: 0, inflight: 0, ejected: false });
        if (s.calls > 0) expect(s.latencyMs).toBeGreaterThan(0);
        expect(Object.isFrozen(s)).toBe(true);
      }
      expect(JSON.parse(JSON.stringify(stats))).toEqual(stats);
      expect(transport.stats()).not.toBe(stats); // a fresh array each time
    },
  );

  it("counts a stream as in flight until the caller has read it to the end", async () => {
    const transport = balanced(staticDiscovery(fleet.map((s) => `grpc://${s.address}`)));
    const response = await transport.stream(UserService.method.listUsers, undefined, undefined, undefined, listRequest(3));
    const open = byAddress(transport.stats())[response.peer.address]!;
    expect(open).toMatchObject({ calls: 1, inflight: 1, latencyMs: null });
    expect(transport.stats().filter((s) => s.inflight > 0)).toHaveLength(1);

    let messages = 0;
    for await (const _ of response.message) messages++;
    expect(messages).toBe(3);
    const ended = byAddress(transport.stats())[response.peer.address]!;
    expect(ended).toMatchObject({ calls: 1, inflight: 0, failures: 0 });
    expect(ended.latencyMs).toBeGreaterThan(0); // until the response started
  });
});

describe("transport.stats() when peers fail", () => {
  it("shows an unreachable peer's failures and its ejection; the peers that served the retries show none", async () => {
    const [gone, ...up] = await startServers(3);
    const recorder = eventRecorder();
    const transport = balanced(staticDiscovery([gone!, ...up].map((s) => `grpc://${s.address}`)), { onEvent: recorder.onEvent });
    await gone!.stop();
    const ejected = recorder.next("peer_ejected");
    const users = createPeerClient(UserService, transport);
    for (let i = 0; i < 6; i++) await users.getUser({ id: String(i) }); // retried on another peer: nobody sees the failure
    await ejected;

    const stats = byAddress(transport.stats());
    expect(stats[gone!.address]).toMatchObject({ calls: 1, failures: 1, inflight: 0, latencyMs: null, ejected: true });
    for (const server of up) expect(stats[server.address]).toMatchObject({ failures: 0, ejected: false });
    expect(up.reduce((sum, s) => sum + stats[s.address]!.calls, 0)).toBe(6);
  });

  it("counts Unavailable answers as failures until the peer is ejected, and application errors (NotFound) never", async () => {
    const [broken, notFound, working] = await Promise.all([
      startUserServer({ failWith: Code.Unavailable }),
      startUserServer({ failWith: Code.NotFound }),
      startUserServer(),
    ]);
    servers.push(broken!, notFound!, working!);
    const transport = balanced(staticDiscovery([broken!, notFound!, working!].map((s) => `grpc://${s.address}`)), { onEvent: eventRecorder().onEvent });
    const users = createPeerClient(UserService, transport);
    for (let i = 0; i < 30; i++) await users.getUser({ id: String(i) }).catch(() => undefined); // NotFound for a third

    const stats = byAddress(transport.stats());
    expect(stats[broken!.address]).toMatchObject({ calls: 5, failures: 5, latencyMs: null, ejected: true }); // 5 in a row eject it
    expect(stats[notFound!.address]).toMatchObject({ failures: 0, latencyMs: null, ejected: false });
    expect(stats[notFound!.address]!.calls).toBe(notFound!.calls);
    expect(stats[working!.address]).toMatchObject({ calls: working!.calls, failures: 0, ejected: false });
  });
});

/** A registry the test changes; the transport hears of each change through a watch. */
function changingRegistry(initial: readonly string[]) {
  let urls = initial;
  let revision = 1;
  let changed: (() => void) | undefined;
  const discovery: Discovery = {
    key: `changing#${Math.random()}`,
    ttlMs: Number.POSITIVE_INFINITY,
    describe: () => "a registry the test changes",
    load: async (service, signal) => ({ ...(await staticDiscovery(urls).load(service, signal)), revision }),
    watch(_service, _after, signal, listener) {
      changed = () => listener.changed();
      listener.opened();
      return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    },
  };
  return {
    discovery,
    watched: () => changed !== undefined,
    set(next: readonly string[]) {
      urls = next;
      revision++;
      changed!();
    },
  };
}

describe("transport.stats() across registry changes", () => {
  it("keeps the counts of a peer that stays, drops a peer that left, and shows a new one at zero", async () => {
    const [stays, leaves, joins] = await startServers(3);
    const url = (s: UserServer) => `grpc://${s.address}`;
    const registry = changingRegistry([url(stays!), url(leaves!)]);
    const recorder = eventRecorder();
    const transport = balanced(registry.discovery, { onEvent: recorder.onEvent });
    const users = createPeerClient(UserService, transport);
    await Promise.all(Array.from({ length: 10 }, (_, i) => users.getUser({ id: String(i) })));
    const before = byAddress(transport.stats())[stays!.address]!;
    expect(before.calls).toBe(5);

    await until(registry.watched, { what: "the registry watch" });
    const snapshot = recorder.next("snapshot");
    registry.set([url(stays!), url(joins!)]);
    await snapshot;
    await transport.peers();

    const after = transport.stats();
    expect(after.map((s) => s.address)).toEqual([stays!.address, joins!.address]);
    expect(after[0]).toEqual(before);
    expect(after[1]).toMatchObject({ calls: 0, failures: 0, inflight: 0, latencyMs: null, ejected: false });
  });
});
