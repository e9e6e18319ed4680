// Cold starts: what a process does before it has read etcd once. A first read
// that found nothing is retried within a second; a hung etcd member is hedged,
// not waited out; a call that gives up leaves nothing running. Plus unit tests
// of the cache's acceptance rules (src/cache/acceptance.ts).
import { spawn } from "node:child_process";
import { createServer, type Server, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, type BalancedTransport, type EtcdDiscoveryOptions, type Snapshot } from "../src/index.js";
import { acceptRead, acceptRestored, initialState } from "../src/cache/acceptance.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos, type Registration } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { rejection, sleep } from "./helpers.js";

let etcd: EtcdServer;
const servers: UserServer[] = [];
const registrations: Registration[] = [];
const open: BalancedTransport[] = [];
const hung: HungServer[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await Promise.allSettled(registrations.map((r) => r.deregister()));
  await Promise.all(servers.map((s) => s.stop()));
  await Promise.all(hung.map((h) => h.stop()));
  await etcd?.stop();
});

interface HungServer {
  readonly endpoint: string;
  readonly accepted: () => number;
  stop(): Promise<void>;
}

/** An "etcd member" on 127.0.0.1 that accepts connections and never answers. */
async function hungServer(): Promise<HungServer> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const result: HungServer = {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    accepted: () => accepted,
    async stop() {
      sockets.forEach((socket) => socket.destroy());
      await new Promise((resolve) => server.close(resolve));
    },
  };
  hung.push(result);
  return result;
}

/** A fetch that records the signal of every request, to see which were aborted. */
function recordingFetch() {
  const requests: { url: string; signal: AbortSignal }[] = [];
  const fetch: typeof globalThis.fetch = (input, init) => {
    requests.push({ url: String(input), signal: init!.signal! });
    return globalThis.fetch(input, init);
  };
  return { fetch, requests };
}

function balanced(service: string, discovery: Partial<EtcdDiscoveryOptions> = {}) {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint], ...discovery }),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
    onEvent: () => {},
  });
  open.push(transport);
  return transport;
}

async function register(name: string, id: string) {
  const server = await startUserServer();
  servers.push(server);
  registrations.push(await registerKratos(etcd.endpoint, { id, name, version: "v1", metadata: null, endpoints: [`grpc://${server.address}`] }));
  return server;
}

describe("a first read that found no instances", () => {
  it("is read again within about a second, not after the TTL", async () => {
    const transport = balanced("late-service", { ttlMs: 60_000 });
    const users = createPeerClient(UserService, transport);
    const empty = await rejection(users.getUser({ id: "1" }));
    expect(empty.code).toBe(Code.Unavailable);
    expect(empty.message).toContain("late-service");

    const a = await register("late-service", "a"); // the servers register after the function's first call
    const startedAt = Date.now();
    await sleep(1_050);
    // Stale and empty: this call waits for the new read rather than failing on the old one.
    const res = await users.getUser({ id: "2" });
    expect(res.peer.address).toBe(a.address);
    expect(Date.now() - startedAt).toBeLessThan(2_000);
  });
});

describe("a first read that failed", () => {
  it("is not remembered: the next call reads etcd again", async () => {
    const own = await startEtcd();
    try {
      const transport = balanced("comeback-service", { endpoints: [own.endpoint], ttlMs: 60_000 });
      await own.stop();
      const down = await rejection(transport.peers());
      expect(down.code).toBe(Code.Unavailable);
      expect(down.message).toContain("ECONNREFUSED");

      await own.restart(); // back, empty, on the same port
      const server = await startUserServer();
      servers.push(server);
      await registerKratos(own.endpoint, { id: "a", name: "comeback-service", version: "v1", metadata: null, endpoints: [`grpc://${server.address}`] });
      expect((await transport.peers()).map((p) => p.address)).toEqual([server.address]);
    } finally {
      await own.stop();
    }
  });
});

describe("several etcd endpoints, one hung", () => {
  it("asks the next member after 300 ms, answers with it, and aborts the hung request", async () => {
    const silent = await hungServer();
    const a = await register("hedged-service", "a");
    const { fetch, requests } = recordingFetch();
    const transport = balanced("hedged-service", { endpoints: [silent.endpoint, etcd.endpoint], requestTimeoutMs: 20_000, fetch });
    const startedAt = Date.now();
    const peers = await transport.peers({ timeoutMs: 3_000 });
    const elapsed = Date.now() - startedAt;
    expect(peers.map((p) => p.address)).toEqual([a.address]);
    expect(elapsed).toBeGreaterThanOrEqual(290); // the hung member had its 300 ms
    expect(elapsed).toBeLessThan(1_500); // and not its 20 s request timeout
    expect(silent.accepted()).toBe(1);
    // The loser is aborted at once (undici may keep its socket, unref'd: see the child process tests below).
    expect(requests.map((r) => [r.url.replace(/\/v3.*/, ""), r.signal.aborted])).toEqual([
      [silent.endpoint, true],
      [etcd.endpoint, false],
    ]);
  });

  it("fails within the call's deadline when every member hangs", async () => {
    const [one, two] = [await hungServer(), await hungServer()];
    const { fetch, requests } = recordingFetch();
    const transport = balanced("all-hung-service", { endpoints: [one.endpoint, two.endpoint], requestTimeoutMs: 20_000, fetch });
    const error = await rejection(transport.peers({ timeoutMs: 600 }));
    expect(error.code).toBe(Code.DeadlineExceeded);
    expect(requests.map((r) => r.url.replace(/\/v3.*/, ""))).toEqual([one.endpoint, two.endpoint]); // the second was asked too
    // Nobody waits for the read any more: both requests are aborted.
    expect(requests.every((r) => r.signal.aborted)).toBe(true);
  });
});

describe("a call that gave up on a hung etcd", () => {
  /** Runs the fixture; resolves with its output and how long it lived after its call failed. */
  function runFixture(mode: "close" | "keep-open", endpoints: string[]) {
    const script = fileURLToPath(new URL("./fixtures/hung-etcd-call.ts", import.meta.url));
    const child = spawn(process.execPath, ["--import", "tsx", script, mode, ...endpoints], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let failedAt: number | undefined;
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      failedAt ??= stdout.includes("failed") ? Date.now() : undefined;
    });
    child.stderr.on("data", (chunk) => (stderr += chunk));
    return new Promise<{ code: number | null; stdout: string; stderr: string; livedAfterFailureMs: number }>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`the process did not exit within 20 s; output:\n${stdout}\n${stderr}`));
      }, 20_000);
      child.once("exit", (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr, livedAfterFailureMs: Date.now() - (failedAt ?? 0) });
      });
    });
  }

  for (const mode of ["close", "keep-open"] as const) {
    it(`leaves nothing that keeps the process alive (${mode === "close" ? "transport closed" : "transport left open"})`, async () => {
      const [one, two] = [await hungServer(), await hungServer()];
      const { code, stdout, stderr, livedAfterFailureMs } = await runFixture(mode, [one.endpoint, two.endpoint]);
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expect(stdout.trim()).toBe(`failed ${Code.DeadlineExceeded}`);
      expect(livedAfterFailureMs).toBeLessThan(1_000); // not the 5 s request timeout
    });
  }
});

describe("the acceptance rules (pure)", () => {
  const instance = (id: string) => ({ key: `/microservices/s/${id}`, id, name: "s", version: "v1", metadata: {}, endpoints: [] });
  const snap = (revision: number, ...ids: string[]): Snapshot => ({ service: "s", revision, instances: ids.map(instance), skipped: [] });

  it("serves a newer read, keeps the object for unchanged content, and never goes back to an older revision", () => {
    const first = acceptRead(initialState, snap(5, "a"));
    expect(first.state.snapshot?.revision).toBe(5);
    expect(first.events.map((e) => e.type)).toEqual(["snapshot"]);
    const same = acceptRead(first.state, snap(6, "a"));
    expect(same.state.snapshot).toBe(first.state.snapshot);
    expect(same.state.revision).toBe(6);
    const older = acceptRead(same.state, snap(4, "b"));
    expect(older.state.snapshot).toBe(first.state.snapshot);
    expect(older.etcdReset).toBe(false);
  });

  it("takes lower revisions read three times in a row as etcd started over", () => {
    let state = acceptRead(initialState, snap(100, "a")).state;
    state = acceptRead(state, snap(3, "b")).state;
    state = acceptRead(state, snap(3, "b")).state;
    const third = acceptRead(state, snap(4, "b"));
    expect(third.etcdReset).toBe(true);
    expect(third.state.snapshot?.instances.map((i) => i.id)).toEqual(["b"]);
  });

  it("keeps the last instances over an empty read, reported once", () => {
    const state = acceptRead(initialState, snap(5, "a")).state;
    const empty = acceptRead(state, snap(6));
    expect(empty.state.snapshot?.instances).toHaveLength(1);
    expect(empty.events.map((e) => e.type)).toEqual(["empty_registry_ignored"]);
    expect(acceptRead(empty.state, snap(7)).events).toEqual([]);
  });

  it("lets any registry read replace a restored snapshot: a lower revision, and an empty one too", () => {
    const restored = acceptRestored(initialState, snap(900, "old"));
    expect(restored.state.restored).toBe(true);
    expect(restored.state.revision).toBe(Number.NEGATIVE_INFINITY); // holds back no read
    const lower = acceptRead(restored.state, snap(2, "new"));
    expect(lower.state.snapshot?.instances.map((i) => i.id)).toEqual(["new"]);
    expect(lower.state.restored).toBe(false);
    const empty = acceptRead(restored.state, snap(2));
    expect(empty.state.snapshot?.instances).toEqual([]);
    expect(acceptRestored(lower.state, snap(900, "old")).state).toBe(lower.state); // never over a read
  });
});
