// Discovery and the snapshot cache against a real etcd: what is read, when,
// how often, and what happens when etcd or its entries go wrong.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import {
  createBalancedTransport,
  createPeerClient,
  etcdDiscovery,
  type BalancedTransport,
  type Discovery,
  type EtcdDiscoveryOptions,
  type Snapshot,
} from "../src/index.js";
import { startEtcd, freePort, type EtcdServer } from "../support/etcd.js";
import { etcdRequest, putKey, registerKratos, type Registration } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy, eventRecorder, rejection, sleep } from "./helpers.js";
import { createServer, type Server, type Socket } from "node:net";

let etcd: EtcdServer;
const servers: UserServer[] = [];
const registrations: Registration[] = [];
const open: BalancedTransport[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await Promise.allSettled(registrations.map((r) => r.deregister()));
  await Promise.all(servers.map((s) => s.stop()));
  await etcd?.stop();
});

async function server(options?: Parameters<typeof startUserServer>[0]) {
  const started = await startUserServer(options);
  servers.push(started);
  return started;
}

async function register(name: string, id: string, endpoints: string[], metadata: Record<string, string> | null = null) {
  const registration = await registerKratos(etcd.endpoint, { id, name, version: "v1", metadata, endpoints });
  registrations.push(registration);
  return registration;
}

function balanced(service: string, discovery: Partial<EtcdDiscoveryOptions> = {}, options: Partial<Parameters<typeof createBalancedTransport>[0]> = {}) {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint], ...discovery }),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
    ...options,
  });
  open.push(transport);
  return transport;
}

async function servedBy(transport: BalancedTransport, calls: number): Promise<string[]> {
  const users = createPeerClient(UserService, transport);
  const addresses: string[] = [];
  for (let i = 0; i < calls; i++) {
    const res = await users.getUser({ id: String(i) });
    expect(res.peer.address).toBe(res.message.servedBy);
    addresses.push(res.message.servedBy);
  }
  return addresses;
}

/** An instance of service "s" on 127.0.0.1:port, as a discovery would decode it. */
function instanceAt(port: number) {
  return {
    key: `k${port}`, id: `k${port}`, name: "s", version: "", metadata: {},
    endpoints: [{ scheme: "grpc" as const, host: "127.0.0.1", port, address: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}` }],
  };
}

/** A transport over a hand-written registry that is never fresh (TTL 0), recording its refreshes and events. */
function overTestRegistry(key: string, load: () => Promise<Snapshot>) {
  const discovery: Discovery = { key, ttlMs: 0, describe: () => "a test registry", load };
  const refreshes: Promise<unknown>[] = [];
  const recorder = eventRecorder();
  const transport = createBalancedTransport({
    service: "s",
    discovery,
    transport: () => createGrpcTransport({ baseUrl: "http://127.0.0.1:1" }),
    waitUntil: (refresh) => void refreshes.push(refresh),
    onEvent: recorder.onEvent,
  });
  open.push(transport);
  return { transport, refreshes, recorder };
}

describe("the snapshot cache", () => {
  it("reads etcd once for concurrent cold calls and not at all within the TTL (counted by etcd)", async () => {
    const [a, b] = [await server(), await server()];
    await register("ttl-service", "a", [`grpc://${a.address}`]);
    await register("ttl-service", "b", [`grpc://${b.address}`]);
    const transport = balanced("ttl-service", { ttlMs: 60_000 });
    const users = createClient(UserService, transport);

    const before = await etcd.rangeCount();
    await Promise.all(Array.from({ length: 20 }, (_, i) => users.getUser({ id: String(i) })));
    expect(await etcd.rangeCount()).toBe(before + 1);

    await servedBy(transport, 40);
    // a second transport with the same discovery settings shares the process-wide snapshot
    await servedBy(balanced("ttl-service", { ttlMs: 60_000 }), 10);
    expect(await etcd.rangeCount()).toBe(before + 1);
  });

  it("notices an instance added and one removed once the TTL has passed", async () => {
    const ttlMs = 300;
    const [a, b, c] = [await server(), await server(), await server()];
    const regA = await register("change-service", "a", [`grpc://${a.address}`]);
    await register("change-service", "b", [`grpc://${b.address}`]);
    const recorder = eventRecorder();
    const transport = balanced("change-service", { ttlMs }, { onEvent: recorder.onEvent });
    expect(new Set(await servedBy(transport, 4))).toEqual(new Set([a.address, b.address]));

    await register("change-service", "c", [`grpc://${c.address}`]);
    // still fresh: the cached snapshot serves, c is not called yet
    expect(new Set(await servedBy(transport, 4))).toEqual(new Set([a.address, b.address]));

    await sleep(ttlMs + 10); // timers may fire a millisecond early
    const refreshed = recorder.next("snapshot");
    await servedBy(transport, 1); // served from the stale snapshot while one refresh runs
    expect((await refreshed).instances).toBe(3);
    expect(countBy(await servedBy(transport, 9))).toEqual({ [a.address]: 3, [b.address]: 3, [c.address]: 3 });

    await regA.deregister();
    await sleep(ttlMs + 10); // timers may fire a millisecond early
    const shrunk = recorder.next("snapshot");
    await servedBy(transport, 1);
    expect((await shrunk).instances).toBe(2);
    expect(new Set(await servedBy(transport, 6))).toEqual(new Set([b.address, c.address]));
  });

  it("serves a transport created after the last one closed mid-read", async () => {
    const a = await server();
    await register("reopen-service", "a", [`grpc://${a.address}`]);
    const first = balanced("reopen-service");
    const abandoned = first.peers(); // a read in flight, then every transport closes
    await first.close();
    await expect(abandoned).rejects.toThrow();
    const second = balanced("reopen-service");
    expect((await second.peers()).map((p) => p.address)).toEqual([a.address]);
  });

  it("keeps a shared read going when one of the transports sharing it closes", async () => {
    const a = await server();
    await register("shared-service", "a", [`grpc://${a.address}`]);
    const first = balanced("shared-service");
    const second = balanced("shared-service");
    const pending = second.peers(); // the cold read both share is now in flight
    await first.close();
    expect((await pending).map((p) => p.address)).toEqual([a.address]);
  });

  it("with watch, sees registry changes at once without any call, and stops watching on close()", async () => {
    const [a, b] = [await server(), await server()];
    await register("watched-service", "a", [`grpc://${a.address}`]);
    const recorder = eventRecorder();
    const watchersBefore = await etcd.watcherCount();
    const transport = balanced("watched-service", { ttlMs: 3_600_000, watch: true }, { onEvent: recorder.onEvent });
    expect(await servedBy(transport, 2)).toEqual([a.address, a.address]);

    const added = recorder.next("snapshot");
    const registration = await register("watched-service", "b", [`grpc://${b.address}`]);
    expect((await added).instances).toBe(2);
    expect(new Set(await servedBy(transport, 4))).toEqual(new Set([a.address, b.address]));

    const removed = recorder.next("snapshot");
    await registration.deregister();
    expect((await removed).instances).toBe(1);
    expect(await servedBy(transport, 2)).toEqual([a.address, a.address]);
    expect(await etcd.watcherCount()).toBe(watchersBefore + 1);

    await transport.close();
    // etcd notices the closed stream on its own schedule: poll its gauge, bounded
    for (let i = 0; i < 100 && (await etcd.watcherCount()) !== watchersBefore; i++) {
      await sleep(20);
    }
    expect(await etcd.watcherCount()).toBe(watchersBefore);
  });

  it("with watch, follows the registry again after etcd restarts", async () => {
    const own = await startEtcd();
    try {
      const [a, b] = [await server(), await server()];
      await registerKratos(own.endpoint, { id: "a", name: "restart-service", version: "v1", metadata: null, endpoints: [`grpc://${a.address}`] });
      const recorder = eventRecorder();
      const transport = balanced("restart-service", { endpoints: [own.endpoint], ttlMs: 3_600_000, watch: true }, { onEvent: recorder.onEvent });
      expect(await servedBy(transport, 1)).toEqual([a.address]);
      const broken = recorder.next("discovery_failed");
      await own.restart();
      expect((await broken).serving).toBe(true);
      const added = recorder.next("snapshot");
      await registerKratos(own.endpoint, { id: "b", name: "restart-service", version: "v1", metadata: null, endpoints: [`grpc://${b.address}`] });
      expect((await added).instances).toBe(2);
      await transport.close();
    } finally {
      await own.stop();
    }
  });

  it("hands the background refresh to waitUntil, once per refresh", async () => {
    const a = await server();
    await register("wait-service", "a", [`grpc://${a.address}`]);
    const ttlMs = 100;
    const handed: Promise<unknown>[] = [];
    const recorder = eventRecorder();
    const transport = balanced("wait-service", { ttlMs }, { waitUntil: (p) => void handed.push(p), onEvent: recorder.onEvent });
    await servedBy(transport, 3); // the cold read is awaited by the call itself
    expect(handed).toHaveLength(0);
    await sleep(ttlMs + 10); // timers may fire a millisecond early
    const b = await server();
    await register("wait-service", "b", [`grpc://${b.address}`]);
    await servedBy(transport, 3); // stale: the first of these starts one refresh
    expect(handed).toHaveLength(1);
    await handed[0];
    expect(recorder.events.filter((e) => e.type === "snapshot").map((e) => e.type === "snapshot" && e.instances)).toEqual([1, 2]);
  });

  it("keeps the last instances when the registry suddenly lists none, as kratos does", async () => {
    const a = await server();
    const registration = await register("vanish-service", "a", [`grpc://${a.address}`]);
    const ttlMs = 100;
    const refreshes: Promise<unknown>[] = [];
    const recorder = eventRecorder();
    const transport = balanced("vanish-service", { ttlMs }, { waitUntil: (p) => void refreshes.push(p), onEvent: recorder.onEvent });
    expect(await servedBy(transport, 1)).toEqual([a.address]);
    await registration.deregister();
    for (let i = 0; i < 2; i++) {
      await sleep(ttlMs + 10); // timers may fire a millisecond early
      expect(await servedBy(transport, 1)).toEqual([a.address]);
      await refreshes.at(-1);
    }
    expect(refreshes).toHaveLength(2);
    expect(await servedBy(transport, 2)).toEqual([a.address, a.address]);
    expect(recorder.events.filter((e) => e.type === "empty_registry_ignored")).toEqual([
      expect.objectContaining({ service: "vanish-service", instances: 1 }),
    ]);
  });

  it("never lets an older revision replace a newer one", async () => {
    // Reads finish out of order: the read that started later saw revision 7, the earlier one revision 5.
    const answers: Snapshot[] = [
      { service: "s", revision: 7, instances: [instanceAt(7)], skipped: [] },
      { service: "s", revision: 5, instances: [instanceAt(5)], skipped: [] },
    ];
    const { transport, refreshes, recorder } = overTestRegistry("out-of-order", async () => answers.shift()!);
    expect((await transport.peers()).map((p) => p.port)).toEqual([7]);
    await transport.peers(); // stale (TTL 0): starts the read that answers revision 5
    await refreshes[0];
    expect(answers).toHaveLength(0);
    expect((await transport.peers()).map((p) => p.port)).toEqual([7]);
    expect(recorder.events.filter((e) => e.type === "snapshot")).toEqual([expect.objectContaining({ revision: 7 })]);
  });

  it("fails a read whose revision is not a non-negative integer, from any discovery, and keeps serving the last good one", async () => {
    const revisions = [3, Number.NaN, -1, 1.5, Number.MAX_SAFE_INTEGER + 2];
    const { transport, refreshes, recorder } = overTestRegistry("bad-revisions", async () => ({
      service: "s", revision: revisions.shift()!, instances: [instanceAt(7)], skipped: [],
    }));
    await transport.peers();
    for (let i = 0; i < 4; i++) {
      await transport.peers(); // stale (TTL 0): a refresh with a bad revision
      await refreshes[i];
    }
    expect(revisions).toHaveLength(0);
    const failures = recorder.events.filter((e) => e.type === "discovery_failed");
    expect(failures).toHaveLength(4);
    for (const failure of failures) {
      expect(failure).toMatchObject({ serving: true, error: { code: Code.Internal } });
      expect(failure.error.message).toMatch(/revision .* not a non-negative integer/);
    }
    expect(recorder.events.filter((e) => e.type === "snapshot")).toEqual([expect.objectContaining({ revision: 3 })]);
    expect((await transport.peers()).map((p) => p.port)).toEqual([7]);
  });
});

describe("kratos registry entries", () => {
  it("does not mix up hello and helloworld", async () => {
    const [hello, helloworld] = [await server(), await server()];
    await register("helloworld", "hw-1", [`grpc://${helloworld.address}`]);
    const empty = await rejection(balanced("hello").peers());
    expect(empty.code).toBe(Code.Unavailable);
    expect(empty.message).toContain('no instances of service "hello"');

    await register("hello", "h-1", [`grpc://${hello.address}`]);
    expect(new Set(await servedBy(balanced("hello", { ttlMs: 1 }), 5))).toEqual(new Set([hello.address]));
    expect(new Set(await servedBy(balanced("helloworld", { ttlMs: 1 }), 5))).toEqual(new Set([helloworld.address]));
  });

  it("skips malformed entries, reports each with its key, and serves the valid ones", async () => {
    const good = await server();
    const httpOnly = await server({ httpVersion: "1.1" });
    await register("mixed-service", "good", [`http://${httpOnly.address}`, `grpc://${good.address}?isSecure=false`], { weight: "20", zone: "a" });
    await putKey(etcd.endpoint, "/microservices/mixed-service/bad-json", "{not json");
    await putKey(etcd.endpoint, "/microservices/mixed-service/bad-port", JSON.stringify({ id: "x", name: "mixed-service", version: "", metadata: null, endpoints: ["grpc://127.0.0.1:99999"] }));
    await putKey(etcd.endpoint, "/microservices/mixed-service/wrong-name", JSON.stringify({ id: "y", name: "other", version: "", metadata: null, endpoints: ["grpc://127.0.0.1:1"] }));
    await putKey(etcd.endpoint, "/microservices/mixed-service/no-endpoints", JSON.stringify({ id: "z", name: "mixed-service", version: "", metadata: null, endpoints: [] }));
    const recorder = eventRecorder();
    const transport = balanced("mixed-service", {}, { onEvent: recorder.onEvent });
    const peers = await transport.peers();
    expect(peers).toHaveLength(1);
    expect(peers[0]).toMatchObject({ address: good.address, id: "good", weight: 20, metadata: { weight: "20", zone: "a" } });
    expect(new Set(await servedBy(transport, 3))).toEqual(new Set([good.address]));
    const skipped = recorder.events.filter((e) => e.type === "entry_skipped");
    expect(skipped.map((e) => e.type === "entry_skipped" && [e.key, e.reason])).toEqual([
      ["/microservices/mixed-service/bad-json", expect.stringContaining("not JSON")],
      ["/microservices/mixed-service/bad-port", expect.stringContaining('bad port "99999"')],
      ["/microservices/mixed-service/no-endpoints", "no endpoints"],
      ["/microservices/mixed-service/wrong-name", expect.stringContaining('"other"')],
    ]);
  });

  it("calls only the instances the filter accepts, and says so when it accepts none", async () => {
    const [v1, v2, v2eu] = [await server(), await server(), await server()];
    for (const [id, s, version, zone] of [["a", v1, "v1", "us"], ["b", v2, "v2", "us"], ["c", v2eu, "v2", "eu"]] as const) {
      await registerKratos(etcd.endpoint, { id, name: "versioned-service", version, metadata: { zone }, endpoints: [`grpc://${s.address}`] });
    }
    const v2only = balanced("versioned-service", {}, { filter: (peer) => peer.version === "v2" });
    expect(new Set(await servedBy(v2only, 6))).toEqual(new Set([v2.address, v2eu.address]));
    const euV2 = balanced("versioned-service", {}, { filter: (peer) => peer.version === "v2" && peer.metadata["zone"] === "eu" });
    expect(await servedBy(euV2, 3)).toEqual([v2eu.address, v2eu.address, v2eu.address]);
    const error = await rejection(balanced("versioned-service", {}, { filter: (peer) => peer.version === "v3" }).peers());
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain("the filter option accepts none of them (versions: v1, v2)");
  });

  it("dials the Connect protocol over HTTP/1.1 when the transport asks for http endpoints", async () => {
    const h1 = await server({ httpVersion: "1.1" });
    const h2 = await server();
    await register("connect-service", "c1", [`grpc://${h2.address}`, `http://${h1.address}`]);
    const transport = balanced("connect-service", {}, {
      schemes: ["http"],
      transport: (peer) => createConnectTransport({ baseUrl: peer.url, httpVersion: "1.1" }),
    });
    expect(await servedBy(transport, 3)).toEqual([h1.address, h1.address, h1.address]);
  });

  it("calls instances registered on IPv6 loopback", async () => {
    const v6 = await server({ host: "::1" });
    await register("v6-service", "v6", [`grpc://${v6.address}`]);
    const transport = balanced("v6-service");
    const [peer] = await transport.peers();
    expect(peer).toMatchObject({ host: "::1", port: v6.port, address: `[::1]:${v6.port}`, url: `http://[::1]:${v6.port}` });
    expect(await servedBy(transport, 2)).toEqual([v6.address, v6.address]);
  });
});

describe("other registry formats", () => {
  it("reads grpc-go's etcd-naming entries", async () => {
    const [a, b] = [await server(), await server()];
    for (const s of [a, b]) {
      await putKey(etcd.endpoint, `naming/billing/${s.address}`, JSON.stringify({ Op: 0, Addr: s.address, Metadata: null }));
    }
    const transport = balanced("naming/billing", { format: "etcd-naming" });
    expect(new Set(await servedBy(transport, 4))).toEqual(new Set([a.address, b.address]));
  });

  it("takes a custom decoder", async () => {
    const a = await server();
    await putKey(etcd.endpoint, "/custom/orders/1", `${a.address}|blue`);
    await putKey(etcd.endpoint, "/custom/orders/2", "garbage");
    const recorder = eventRecorder();
    const transport = balanced(
      "orders",
      {
        namespace: "/custom",
        format: (key, value) => {
          const [address, color] = value.split("|");
          if (color === undefined) {
            throw new Error(`no color in ${key}`);
          }
          return { endpoints: [`grpc://${address}`], metadata: { color } };
        },
      },
      { onEvent: recorder.onEvent },
    );
    const peers = await transport.peers();
    expect(peers.map((p) => [p.address, p.metadata["color"], p.id])).toEqual([[a.address, "blue", "1"]]);
    expect(recorder.events).toContainEqual(expect.objectContaining({ type: "entry_skipped", key: "/custom/orders/2", reason: "decoder threw: no color in /custom/orders/2" }));
  });
});

describe("when etcd is down", () => {
  it("fails a cold call with Unavailable and the cause", async () => {
    const port = await freePort();
    const error = await rejection(balanced("any", { endpoints: [`http://127.0.0.1:${port}`] }).peers());
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain(`http://127.0.0.1:${port}`);
    expect(error.message).toContain("ECONNREFUSED");
  });

  it("fails a cold call within the call's deadline when etcd does not answer", async () => {
    const sockets = new Set<Socket>();
    const silent: Server = createServer((socket) => void sockets.add(socket)); // accepts connections, never answers
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      const users = createClient(UserService, balanced("any", { endpoints: [`http://127.0.0.1:${port}`], requestTimeoutMs: 20_000 }));
      const error = await rejection(users.getUser({ id: "1" }, { timeoutMs: 200 }));
      expect(error.code).toBe(Code.DeadlineExceeded);
      expect(error.message).toContain("200 ms");
    } finally {
      sockets.forEach((socket) => socket.destroy());
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("fails over to the next etcd endpoint", async () => {
    const a = await server();
    await register("failover-service", "a", [`grpc://${a.address}`]);
    const dead = `http://127.0.0.1:${await freePort()}`;
    const transport = balanced("failover-service", { endpoints: [dead, etcd.endpoint] });
    expect(await servedBy(transport, 2)).toEqual([a.address, a.address]);
  });

  it("keeps serving the last good snapshot when etcd goes away, and reports the failure", async () => {
    const own = await startEtcd();
    try {
      const a = await server();
      await registerKratos(own.endpoint, { id: "a", name: "warm-service", version: "v1", metadata: null, endpoints: [`grpc://${a.address}`] });
      const recorder = eventRecorder();
      const ttlMs = 100;
      const transport = balanced("warm-service", { endpoints: [own.endpoint], ttlMs }, { onEvent: recorder.onEvent });
      expect(await servedBy(transport, 2)).toEqual([a.address, a.address]);
      await own.stop();
      await sleep(ttlMs + 10); // timers may fire a millisecond early
      const failed = recorder.next("discovery_failed");
      expect(await servedBy(transport, 5)).toEqual(Array(5).fill(a.address));
      const event = await failed;
      expect(event.serving).toBe(true);
      expect(event.error.code).toBe(Code.Unavailable);
      expect(event.error.message).toContain(own.endpoint);
      expect(await servedBy(transport, 3)).toEqual(Array(3).fill(a.address));
    } finally {
      await own.stop();
    }
  });
});

describe("etcd with authentication", () => {
  it("reads with a user's token and rejects a wrong password without revealing it", async () => {
    const own = await startEtcd();
    try {
      const a = await server();
      await registerKratos(own.endpoint, { id: "a", name: "secure-service", version: "v1", metadata: null, endpoints: [`grpc://${a.address}`] });
      await etcdRequest(own.endpoint, "/v3/auth/user/add", { name: "root", password: "root-pw" });
      await etcdRequest(own.endpoint, "/v3/auth/user/grant", { user: "root", role: "root" });
      await etcdRequest(own.endpoint, "/v3/auth/user/add", { name: "reader", password: "reader-pw" });
      await etcdRequest(own.endpoint, "/v3/auth/role/add", { name: "discovery" });
      await etcdRequest(own.endpoint, "/v3/auth/role/grant", {
        name: "discovery",
        perm: { permType: "READ", key: btoa("/microservices/"), range_end: btoa("/microservices0") },
      });
      await etcdRequest(own.endpoint, "/v3/auth/user/grant", { user: "reader", role: "discovery" });
      await etcdRequest(own.endpoint, "/v3/auth/enable", {});

      const anonymous = await rejection(balanced("secure-service", { endpoints: [own.endpoint] }).peers());
      expect(anonymous.code).toBe(Code.Unauthenticated);
      expect(anonymous.message).toContain("requires authentication");

      const reader = balanced("secure-service", { endpoints: [own.endpoint], auth: { username: "reader", password: "reader-pw" } });
      expect(await servedBy(reader, 2)).toEqual([a.address, a.address]);

      const wrong = await rejection(
        balanced("secure-service", { endpoints: [own.endpoint], auth: { username: "reader", password: "not-the-pw" } }).peers(),
      );
      expect(wrong.code).toBe(Code.Unauthenticated);
      expect(wrong.message).toContain('user "reader"');
      expect(wrong.message).not.toContain("not-the-pw");

      const outside = await rejection(
        balanced("secure-service", { endpoints: [own.endpoint], namespace: "/elsewhere", auth: { username: "reader", password: "reader-pw" } }).peers(),
      );
      expect(outside.code).toBe(Code.PermissionDenied);
      expect(outside.message).toContain('"/elsewhere/secure-service/"');
    } finally {
      await own.stop();
    }
  });
});
