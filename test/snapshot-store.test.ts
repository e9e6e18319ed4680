// The persisted snapshot (etcdDiscovery({ snapshotStore })): written after
// reads, read only at a cold start with etcd down, checked before use.
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, type BalancedTransport, type EtcdDiscoveryOptions, type SnapshotStore } from "../src/index.js";
import { fileSnapshotStore } from "../src/node/index.js";
import { parseStoredSnapshot, serializeSnapshot } from "../src/discovery/snapshot-store.js";
import { startEtcd } from "../support/etcd.js";
import { registerKratos } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { eventRecorder, rejection, sleep } from "./helpers.js";

const servers: UserServer[] = [];
const open: BalancedTransport[] = [];
let directory: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), "ceb-store-"));
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await Promise.all(servers.map((s) => s.stop()));
  await rm(directory, { recursive: true, force: true });
});

/**
 * A transport with a fresh process-wide cache: the cache is shared per
 * discovery key, which names the store object, so a new fileSnapshotStore()
 * over the same directory starts cold, as a new process would.
 */
function coldTransport(service: string, discovery: EtcdDiscoveryOptions, onEvent: ReturnType<typeof eventRecorder>["onEvent"] = () => {}) {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ snapshotStore: fileSnapshotStore(directory), ...discovery }),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
    onEvent,
  });
  open.push(transport);
  return transport;
}

async function storedFiles(): Promise<string[]> {
  return (await readdir(directory)).filter((name) => name.endsWith(".json"));
}

describe("a cold start with etcd down", () => {
  it("serves the stored snapshot, ignores a corrupt or too old one with an event, and lets etcd win again", async () => {
    const etcd = await startEtcd();
    try {
      const a = await startUserServer();
      servers.push(a);
      await registerKratos(etcd.endpoint, { id: "a", name: "stored-service", version: "v1", metadata: null, endpoints: [`grpc://${a.address}`] });
      const endpoints = [etcd.endpoint];

      // 1. etcd up: a read, and the store is written (in the background).
      const first = coldTransport("stored-service", { endpoints });
      expect((await createPeerClient(UserService, first).getUser({ id: "1" })).peer.address).toBe(a.address);
      let files: string[] = [];
      for (let i = 0; i < 100 && files.length === 0; i++, await sleep(10)) {
        files = await storedFiles();
      }
      expect(files).toHaveLength(1);
      const file = join(directory, files[0]!);
      const stored = JSON.parse(await readFile(file, "utf8")) as { revision: number; savedAt: number; instances: { endpoints: string[] }[] };
      expect(stored.revision).toBeGreaterThan(0);
      expect(Math.abs(Date.now() - stored.savedAt)).toBeLessThan(5_000);
      expect(stored.instances.map((i) => i.endpoints)).toEqual([[`grpc://${a.address}`]]);
      const good = await readFile(file, "utf8");
      await first.close();

      // 2. etcd stopped: a new cold transport serves calls from the store.
      await etcd.stop();
      const recorder = eventRecorder();
      const second = coldTransport("stored-service", { endpoints }, recorder.onEvent);
      const users = createPeerClient(UserService, second);
      for (let i = 0; i < 3; i++) {
        expect((await users.getUser({ id: String(i) })).peer.address).toBe(a.address);
      }
      const failed = recorder.events.find((e) => e.type === "discovery_failed");
      expect(failed).toMatchObject({ serving: true });
      expect(recorder.events).toContainEqual(expect.objectContaining({ type: "snapshot", revision: stored.revision, instances: 1 }));

      // 3. a corrupt file: ignored and reported; the call fails as without a store.
      await writeFile(file, good.slice(0, good.length / 2));
      const corruptEvents = eventRecorder();
      const corrupt = await rejection(coldTransport("stored-service", { endpoints }, corruptEvents.onEvent).peers());
      expect(corrupt.code).toBe(Code.Unavailable);
      expect(corrupt.message).toContain("ECONNREFUSED");
      expect(corruptEvents.events).toContainEqual(expect.objectContaining({ type: "snapshot_store_failed", operation: "get", reason: "corrupt: not JSON" }));

      // 4. an entry older than snapshotMaxAgeMs: ignored and reported.
      await writeFile(file, JSON.stringify({ ...JSON.parse(good), savedAt: Date.now() - 2 * 3_600_000 }));
      const oldEvents = eventRecorder();
      const old = await rejection(coldTransport("stored-service", { endpoints, snapshotMaxAgeMs: 3_600_000 }, oldEvents.onEvent).peers());
      expect(old.code).toBe(Code.Unavailable);
      const ignored = oldEvents.events.find((e) => e.type === "snapshot_store_failed");
      expect(ignored).toMatchObject({ operation: "get" });
      expect(ignored && "reason" in ignored && ignored.reason).toContain("older than the maximum age of 3600000 ms");
      // …while the default maximum age (24 h) takes the same entry.
      expect((await coldTransport("stored-service", { endpoints }).peers()).map((p) => p.address)).toEqual([a.address]);

      // 5. etcd back (empty, its revisions started over) with another instance:
      // the next read replaces the stored snapshot within about a second.
      await etcd.restart();
      const b = await startUserServer();
      servers.push(b);
      await registerKratos(etcd.endpoint, { id: "b", name: "stored-service", version: "v1", metadata: null, endpoints: [`grpc://${b.address}`] });
      await sleep(1_050); // a restored snapshot is fresh for a second only
      const replaced = recorder.next("snapshot");
      await second.peers(); // stale: starts the refresh
      expect(await replaced).toMatchObject({ instances: 1 });
      expect((await second.peers()).map((p) => p.address)).toEqual([b.address]);
    } finally {
      await etcd.stop();
    }
  });
});

describe("the store key and content", () => {
  it("carry no credentials, and a warm process does not rewrite an unchanged snapshot", async () => {
    const etcd = await startEtcd(); // authentication is off: the token request is answered "not enabled"
    try {
      const a = await startUserServer();
      servers.push(a);
      await registerKratos(etcd.endpoint, { id: "a", name: "keyed-service", version: "v1", metadata: null, endpoints: [`grpc://${a.address}`] });
      const puts: [string, string][] = [];
      const store: SnapshotStore = { get: async () => null, put: async (key, value) => puts.push([key, value]) };
      const transport = createBalancedTransport({
        service: "keyed-service",
        discovery: etcdDiscovery({ endpoints: [etcd.endpoint], auth: { username: "reader-x", password: "s3cret-pw" }, ttlMs: 50, snapshotStore: store }),
        transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
      });
      open.push(transport);
      await transport.peers();
      for (let i = 0; i < 3; i++) {
        await sleep(60);
        await transport.peers(); // refreshes: same instances
      }
      await sleep(50);
      expect(puts).toHaveLength(1);
      const [key, value] = puts[0]!;
      expect(key).toMatch(/^connect-etcd-balancer\/keyed-service\/[0-9a-f]{32}$/);
      for (const secret of ["s3cret-pw", "reader-x"]) {
        expect(key).not.toContain(secret);
        expect(value).not.toContain(secret);
      }
    } finally {
      await etcd.stop();
    }
  });

  it("reports a store that cannot be written, and keeps serving", async () => {
    const etcd = await startEtcd();
    try {
      const a = await startUserServer();
      servers.push(a);
      await registerKratos(etcd.endpoint, { id: "a", name: "unwritable-service", version: "v1", metadata: null, endpoints: [`grpc://${a.address}`] });
      const recorder = eventRecorder();
      const failed = recorder.next("snapshot_store_failed");
      const transport = createBalancedTransport({
        service: "unwritable-service",
        discovery: etcdDiscovery({ endpoints: [etcd.endpoint], snapshotStore: { get: async () => null, put: () => Promise.reject(new Error("KV quota exceeded")) } }),
        transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
        onEvent: recorder.onEvent,
      });
      open.push(transport);
      expect((await transport.peers()).map((p) => p.address)).toEqual([a.address]);
      expect(await failed).toMatchObject({ operation: "put", reason: "KV quota exceeded" });
    } finally {
      await etcd.stop();
    }
  });
});

describe("fileSnapshotStore", () => {
  it("writes through a temporary file and a rename, and reads back what was put", async () => {
    const dir = join(directory, "nested", "dir"); // created on the first put
    const store = fileSnapshotStore(dir);
    expect(await store.get("connect-etcd-balancer/x/1")).toBeUndefined();
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.put("connect-etcd-balancer/x/1", `value ${i}`.repeat(1_000))));
    expect(await store.get("connect-etcd-balancer/x/1")).toMatch(/^(value \d+)+$/); // one whole write, never a mix
    expect(await readdir(dir)).toEqual(["connect-etcd-balancer%2Fx%2F1.json"]); // no temporary file left
  });
});

describe("stored snapshot parsing (pure)", () => {
  const snapshot = {
    service: "s",
    revision: 7,
    instances: [{ key: "/microservices/s/a", id: "a", name: "s", version: "v1", metadata: { zone: "eu-1" }, endpoints: [] }],
    skipped: [],
  };

  it("round-trips instances, endpoints included", () => {
    const withEndpoint = { ...snapshot, instances: [{ ...snapshot.instances[0]!, endpoints: [{ scheme: "grpcs" as const, host: "::1", port: 9000, address: "[::1]:9000", url: "https://[::1]:9000" }] }] };
    const parsed = parseStoredSnapshot(serializeSnapshot(withEndpoint, 1_000), "s", 2_000, 10_000);
    expect(parsed).toEqual({ snapshot: withEndpoint, savedAt: 1_000 });
  });

  it("refuses anything else, saying why", () => {
    const text = (change: object) => JSON.stringify({ ...JSON.parse(serializeSnapshot({ ...snapshot, instances: [] }, 1_000)), ...change });
    expect(parseStoredSnapshot("{", "s", 2_000, 10_000)).toBe("corrupt: not JSON");
    expect(parseStoredSnapshot("null", "s", 2_000, 10_000)).toBe('corrupt: not a snapshot of "s"');
    expect(parseStoredSnapshot(text({}), "other", 2_000, 10_000)).toBe('corrupt: not a snapshot of "other"');
    expect(parseStoredSnapshot(text({ revision: "7" }), "s", 2_000, 10_000)).toBe("corrupt: revision, time or instances missing");
    expect(parseStoredSnapshot(text({ instances: [{ key: "k" }] }), "s", 2_000, 10_000)).toBe("corrupt: not an instance");
    expect(parseStoredSnapshot(text({ instances: [{ key: "k", id: "a", name: "s", version: "", metadata: {}, endpoints: ["ftp://x:1"] }] }), "s", 2_000, 10_000)).toMatch(/^corrupt: no usable endpoint/);
    expect(parseStoredSnapshot(text({}), "s", 20_000, 10_000)).toMatch(/older than the maximum age of 10000 ms$/);
  });
});
