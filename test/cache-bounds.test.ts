// The process-wide snapshot cache is bounded: an entry leaves it when its last
// transport closes (kept a while as an idle entry holding no timer, socket,
// watch or discovery), and a discovery created per request cannot grow the heap.
import { runInNewContext } from "node:vm";
import { setFlagsFromString } from "node:v8";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Transport } from "@connectrpc/connect";
import { createBalancedTransport, etcdDiscovery, staticDiscovery, type BalancedTransport, type Discovery, type EtcdDiscoveryOptions } from "../src/index.js";
import { sharedCacheSize } from "../src/cache/snapshot-cache.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { etcdRequest, putKey } from "../support/registry.js";
import { sleep } from "./helpers.js";

let etcd: EtcdServer;

beforeAll(async () => {
  etcd = await startEtcd();
  // Without a lease: the per-request loops below keep the event loop too busy for lease keep-alives.
  for (const [service, port] of [["bounded-service", 9001], ["per-request-service", 9002]] as const) {
    const instance = { id: "a", name: service, version: "v1", metadata: null, endpoints: [`grpc://127.0.0.1:${port}`] };
    await putKey(etcd.endpoint, `/microservices/${service}/a`, JSON.stringify(instance));
  }
});

afterAll(async () => {
  await etcd?.stop();
});

/** Never dialled: these tests only ask the transports for their peers. */
const unusedTransport = () => ({}) as Transport;

function balanced(service: string, discovery: Discovery): BalancedTransport {
  return createBalancedTransport({ service, discovery, transport: unusedTransport, onEvent: () => {} });
}

const fromEtcd = (options: Partial<EtcdDiscoveryOptions> = {}) => etcdDiscovery({ endpoints: [etcd.endpoint], ...options });

/**
 * Full collections (with --expose-gc or without it), each in a task of its
 * own: a WeakRef target lives until its task ends, and finalizers run in
 * tasks after the collection.
 */
async function collectGarbage(): Promise<void> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
}

/**
 * Collects until the condition holds (at most 10 rounds): when a dropped
 * object becomes collectable and when its finalizer runs is the engine's
 * choice, so one round is not always enough on a loaded machine.
 */
async function collectUntil(condition: () => boolean): Promise<void> {
  for (let round = 0; round < 10 && !condition(); round++) {
    await collectGarbage();
  }
}

/** Heap bytes grown over `run`, measured after full collections. */
async function heapGrowth(run: () => Promise<void>): Promise<number> {
  await collectGarbage();
  const before = process.memoryUsage().heapUsed;
  await run();
  await collectGarbage();
  return process.memoryUsage().heapUsed - before;
}

/** Polls etcd's watcher gauge: it notices a closed watch stream on its own schedule. */
async function watchersSettleAt(expected: number): Promise<number> {
  for (let i = 0; i < 100 && (await etcd.watcherCount()) !== expected; i++) {
    await sleep(20);
  }
  return etcd.watcherCount();
}

/** A request's transport, used once and dropped without close(): nothing but the cache could still hold it. */
async function dropWatchingTransport(): Promise<void> {
  const transport = balanced("per-request-service", fromEtcd({ ttlMs: 60_000, watch: true }));
  expect(await transport.peers()).toHaveLength(1);
}

const fiftyEndpoints = Array.from({ length: 50 }, (_, i) => `grpc://10.0.${i}.1:9000`);

/** One request of a handler that builds its discovery, and so its cache entry, per request. */
async function perRequest(close: boolean): Promise<void> {
  const transport = balanced("static-service", staticDiscovery(fiftyEndpoints));
  expect(await transport.peers()).toHaveLength(25); // the default subset of the 50
  if (close) {
    await transport.close();
  }
}

async function repeat(times: number, request: () => Promise<void>): Promise<void> {
  for (let i = 0; i < times; i++) {
    await request();
  }
}

describe("a discovery created per request", () => {
  it("closed each time: leaves at most 64 idle entries and no heap growth over 5,000 requests", async () => {
    const { held } = sharedCacheSize();
    await repeat(500, () => perRequest(true)); // warm up: the idle entries fill up
    const growth = await heapGrowth(() => repeat(5_000, () => perRequest(true)));
    expect(sharedCacheSize()).toEqual({ held, idle: 64 });
    expect(growth).toBeLessThan(8 * 2 ** 20);
  });

  it("with a decoder created per request: every watch stops, and the idle entries stay bounded", async () => {
    const watchersBefore = await etcd.watcherCount();
    const { held } = sharedCacheSize();
    for (let i = 0; i < 100; i++) {
      const transport = balanced("bounded-service", fromEtcd({ watch: true, format: (_key, value) => JSON.parse(value) }));
      expect(await transport.peers()).toHaveLength(1);
      await transport.close();
    }
    expect(sharedCacheSize()).toEqual({ held, idle: 64 });
    expect(await watchersSettleAt(watchersBefore)).toBe(watchersBefore);
  });
});

describe("a transport per request, with a discovery of the same options", () => {
  it("next to a module-scope transport: shares its entry and its snapshot, reading etcd once", async () => {
    const moduleScope = balanced("per-request-service", fromEtcd({ ttlMs: 60_000 }));
    expect(await moduleScope.peers()).toHaveLength(1);
    const rangesBefore = await etcd.rangeCount();
    const { held } = sharedCacheSize();
    for (let i = 0; i < 200; i++) {
      const transport = balanced("per-request-service", fromEtcd({ ttlMs: 60_000 }));
      expect(await transport.peers()).toHaveLength(1);
      await transport.close();
      expect(sharedCacheSize().held).toBe(held);
    }
    expect(await etcd.rangeCount()).toBe(rangesBefore);
    await moduleScope.close();
    expect(sharedCacheSize().held).toBe(held - 1);
  });

  it("alone, closed each time: reuses the released snapshot within its TTL, and leaves no watch open", async () => {
    const watchersBefore = await etcd.watcherCount();
    const rangesBefore = await etcd.rangeCount();
    const { held } = sharedCacheSize();
    for (let i = 0; i < 20; i++) {
      const transport = balanced("per-request-service", fromEtcd({ ttlMs: 60_000, watch: true }));
      expect(await transport.peers()).toHaveLength(1);
      expect(await watchersSettleAt(watchersBefore + 1)).toBe(watchersBefore + 1); // held: watched
      await transport.close();
      expect(sharedCacheSize().held).toBe(held);
      expect(await watchersSettleAt(watchersBefore)).toBe(watchersBefore); // released: not watched
    }
    expect(await etcd.rangeCount()).toBe(rangesBefore + 1);
  });
});

describe("a discovery created per request and never closed", () => {
  it("keeps at most 1,000 entries while the dropped transports live, no heap growth over 5,000 requests; an evicted entry still serves its transport", async () => {
    const { held } = sharedCacheSize();
    const first = balanced("static-service", staticDiscovery(["grpc://10.1.0.1:9000"]));
    expect(await first.peers()).toHaveLength(1);
    await repeat(1_000, () => perRequest(false)); // warm up
    const growth = await heapGrowth(async () => {
      await repeat(5_000, () => perRequest(false));
      expect(sharedCacheSize().held).toBeLessThanOrEqual(1_000);
    });
    expect(growth).toBeLessThan(8 * 2 ** 20);
    await collectUntil(() => sharedCacheSize().held === held);
    expect(sharedCacheSize()).toEqual({ held, idle: 64 }); // collected transports released theirs
    expect((await first.peers()).map((p) => p.address)).toEqual(["10.1.0.1:9000"]);
    await first.close();
  });

  it("with the same options each time: the transports dropped unclosed are collected, releasing the entry and its watch", async () => {
    const watchersBefore = await etcd.watcherCount();
    const { held } = sharedCacheSize();
    const growth = await heapGrowth(async () => {
      await repeat(5_000, dropWatchingTransport);
      await collectUntil(() => sharedCacheSize().held === held);
      expect(sharedCacheSize().held).toBe(held);
    });
    expect(growth).toBeLessThan(8 * 2 ** 20);
    expect(await watchersSettleAt(watchersBefore)).toBe(watchersBefore);
  });
});

describe("an idle entry of an etcd with authentication", () => {
  let secured: EtcdServer | undefined;
  const password = "idle-entry-password";

  beforeAll(async () => {
    secured = await startEtcd();
    const instance = { id: "a", name: "secured-service", version: "v1", metadata: null, endpoints: ["grpc://127.0.0.1:9003"] };
    await putKey(secured.endpoint, "/microservices/secured-service/a", JSON.stringify(instance));
    await etcdRequest(secured.endpoint, "/v3/auth/user/add", { name: "root", password: "root-pw" });
    await etcdRequest(secured.endpoint, "/v3/auth/user/grant", { user: "root", role: "root" });
    await etcdRequest(secured.endpoint, "/v3/auth/user/add", { name: "reader", password });
    await etcdRequest(secured.endpoint, "/v3/auth/user/grant", { user: "reader", role: "root" });
    await etcdRequest(secured.endpoint, "/v3/auth/enable", {});
  });

  afterAll(async () => {
    await secured?.stop();
  });

  /**
   * A transport that reads and watches the service, then closes; only weak
   * references to its discovery and credentials stay with the caller.
   */
  async function readAndClose(endpoint: string): Promise<{ discovery: WeakRef<Discovery>; auth: WeakRef<object> }> {
    const auth = { username: "reader", password };
    const discovery = etcdDiscovery({ endpoints: [endpoint], auth, ttlMs: 60_000, watch: true });
    const transport = balanced("secured-service", discovery);
    expect(await transport.peers()).toHaveLength(1);
    await transport.close();
    return { discovery: new WeakRef(discovery), auth: new WeakRef(auth) };
  }

  it("keeps neither the discovery nor its password once the last transport closed, and still serves an equal discovery without a read", async () => {
    const { endpoint } = secured!;
    const first = await readAndClose(endpoint);
    await collectUntil(() => first.discovery.deref() === undefined && first.auth.deref() === undefined);
    expect(first.discovery.deref()).toBeUndefined();
    expect(first.auth.deref()).toBeUndefined();

    const ranges = await secured!.rangeCount();
    const second = await readAndClose(endpoint); // the idle snapshot, within its TTL
    expect(await secured!.rangeCount()).toBe(ranges);
    await collectUntil(() => second.auth.deref() === undefined);
    expect(second.auth.deref()).toBeUndefined();
  });
});
