// What a caller sees when instances die or fail: a crashed kratos instance
// stays registered until its lease expires, and calls must not pay for it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createContextValues } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, hashKey, peerKey, staticDiscovery, type BalancedTransport, type Discovery } from "../src/index.js";
import { fetchTransport } from "../src/fetch/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { rangeCountAt, startEtcd, type EtcdServer } from "../support/etcd.js";
import { deleteKey, registerKratos } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy, eventRecorder, rejection } from "./helpers.js";

let etcd: EtcdServer;
const servers: UserServer[] = [];
const open: BalancedTransport[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await Promise.all(servers.map((s) => s.stop()));
  await etcd?.stop();
});

async function instances(service: string, options: Parameters<typeof startUserServer>[0][]) {
  const started: UserServer[] = [];
  for (const [i, serverOptions] of options.entries()) {
    const server = await startUserServer(serverOptions);
    servers.push(server);
    started.push(server);
    const scheme = serverOptions?.httpVersion === "1.1" ? "http" : "grpc";
    await registerKratos(etcd.endpoint, { id: `${service}-${i}`, name: service, version: "v1", metadata: null, endpoints: [`${scheme}://${server.address}`] });
  }
  return started;
}

function balanced(service: string, options: Partial<Parameters<typeof createBalancedTransport>[0]> = {}) {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint] }),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
    ...options,
  });
  open.push(transport);
  return transport;
}

describe("an instance that crashed but is still registered", () => {
  it("costs no failed call: it is retried elsewhere once, and leaves the picker until it can be reached", async () => {
    const [dead, ...live] = await instances("crash-service", [{}, {}, {}]);
    await dead!.stop();
    const recorder = eventRecorder();
    const users = createPeerClient(UserService, balanced("crash-service", { onEvent: recorder.onEvent }));
    const served: string[] = [];
    for (let i = 0; i < 20; i++) {
      const contextValues = createContextValues();
      const read = await users.getUser({ id: String(i) }, { contextValues });
      expect(contextValues.get(peerKey)).toBe(read.peer);
      // a write is safe to resend too: the dead peer never received it
      const write = await users.updateUser({ id: String(i), name: "n" });
      served.push(read.message.servedBy, write.message.servedBy);
    }
    for (let i = 0; i < 6; i++) {
      const stream = await users.listUsers({ count: 2 }); // server streams too, until the response starts
      for await (const message of stream.message) {
        expect(message.servedBy).toBe(stream.peer.address);
        served.push(message.servedBy);
      }
    }
    // the dead one serves nothing; the two live ones take turns (the picker is rebuilt over them once the dead one is out)
    const counts = countBy(served);
    expect(Object.keys(counts).sort()).toEqual(live.map((s) => s.address).sort());
    expect(Math.abs(counts[live[0]!.address]! - counts[live[1]!.address]!)).toBeLessThanOrEqual(2);
    const ejected = recorder.events.filter((e) => e.type === "peer_ejected");
    // out for gRPC's first reconnect backoff, 1 s ± 20 %; each later refusal doubles it roughly (× 1.6)
    expect(ejected.length).toBeGreaterThanOrEqual(1);
    expect(ejected[0]).toEqual(expect.objectContaining({ address: dead!.address, reason: "unreachable" }));
    const forMs = (ejected[0] as { forMs: number }).forMs;
    expect(forMs).toBeGreaterThanOrEqual(800);
    expect(forMs).toBeLessThanOrEqual(1_200);
  });

  it("gets server streams resent before their response starts", async () => {
    const [dead, live] = await instances("stream-crash-service", [{}, {}]);
    await dead!.stop();
    // no ejection: every other stream is first sent to the dead instance
    const users = createPeerClient(UserService, balanced("stream-crash-service", { outlierDetection: false, onEvent: () => {} }));
    for (let i = 0; i < 6; i++) {
      const stream = await users.listUsers({ count: 3 });
      const servedBy = [];
      for await (const message of stream.message) {
        servedBy.push(message.servedBy);
      }
      expect(stream.peer.address).toBe(live!.address);
      expect(servedBy).toEqual([live!.address, live!.address, live!.address]);
    }
  });

  it("never sends a call twice to one peer, nor more than maxAttempts times to peers that answer, even with random picks", async () => {
    const started = await instances("random-failing-service", [{ failWith: Code.Unavailable }, { failWith: Code.Unavailable }, { failWith: Code.Unavailable }]);
    const attemptsPerCall = new Map<string, string[]>();
    const users = createPeerClient(
      UserService,
      balanced("random-failing-service", {
        balancer: "random",
        outlierDetection: false,
        onEvent: () => {},
        interceptors: [
          (next) => async (req) => {
            const id = req.header.get("x-call")!;
            attemptsPerCall.set(id, [...(attemptsPerCall.get(id) ?? []), req.contextValues.get(peerKey)!.address]);
            return next(req);
          },
        ],
      }),
    );
    for (let i = 0; i < 40; i++) {
      await rejection(users.getUser({ id: "1" }, { headers: { "x-call": String(i) } }));
    }
    expect(attemptsPerCall.size).toBe(40);
    for (const peersTried of attemptsPerCall.values()) {
      expect(peersTried).toHaveLength(2);
      expect(new Set(peersTried).size).toBe(2);
    }
    expect(started.reduce((sum, s) => sum + s.calls, 0)).toBeLessThanOrEqual(80);
  });

  it("with every peer refusing connections, tries each once per call (refusals cost no attempt), reads etcd again, and names them", async () => {
    const started = await instances("all-refusing-service", [{}, {}, {}]);
    await Promise.all(started.map((s) => s.stop()));
    const attempted: string[][] = [];
    const recorder = eventRecorder();
    const users = createPeerClient(
      UserService,
      balanced("all-refusing-service", {
        maxAttempts: 1,
        onEvent: recorder.onEvent,
        interceptors: [(next) => async (req) => (attempted.at(-1)!.push(req.contextValues.get(peerKey)!.address), next(req))],
      }),
    );
    const readsBefore = await rangeCountAt(etcd.endpoint);
    for (let i = 0; i < 10; i++) {
      attempted.push([]);
      const error = await rejection(users.getUser({ id: "1" }));
      expect(error.code).toBe(Code.Unavailable);
      expect(error.message).toMatch(/ECONNREFUSED.*3 peers tried/);
    }
    for (const peersTried of attempted) {
      expect(new Set(peersTried).size).toBe(peersTried.length);
      expect(peersTried).toHaveLength(3);
    }
    // the first read, then early reads: no more than one a second (these calls take far less)
    const reads = (await rangeCountAt(etcd.endpoint)) - readsBefore;
    expect(reads).toBeGreaterThanOrEqual(2);
    expect(reads).toBeLessThanOrEqual(3);
    // the outlier-detection cap (10 %, but one) does not hold back peers that cannot be reached
    const out = new Set(recorder.events.filter((e) => e.type === "peer_ejected").map((e) => (e as { address: string }).address));
    expect(out.size).toBe(3);
  });

  it("ends a call waiting for a fresh registry read when the transport closes: Canceled, not the refusal", async () => {
    const [server] = await instances("closed-while-rereading-service", [{}]);
    await server!.stop();
    const base = staticDiscovery([`grpc://${server!.address}`]);
    let reread: () => void;
    const rereading = new Promise<void>((resolve) => (reread = resolve));
    let loads = 0;
    const discovery: Discovery = {
      ...base,
      ttlMs: 60_000,
      // the first read finds the departed instance; the next one hangs, as an etcd that stopped answering
      load: (service, signal) =>
        ++loads === 1 ? base.load(service, signal) : new Promise((_, reject) => (reread(), signal.addEventListener("abort", () => reject(signal.reason)))),
    };
    const transport = balanced("closed-while-rereading-service", { discovery, onEvent: () => {} });
    const call = rejection(createPeerClient(UserService, transport).getUser({ id: "1" }, { timeoutMs: 30_000 }));
    await rereading;
    const closed = performance.now();
    await transport.close();
    const error = await call;
    expect(performance.now() - closed).toBeLessThan(1_000);
    expect(error.code).toBe(Code.Canceled);
    expect(error.message).toMatch(/the balanced transport of "closed-while-rereading-service" was closed/);
  });

  it("survives onEvent listeners that throw or reject", async () => {
    const [dead, live] = await instances("listener-service", [{}, {}]);
    await dead!.stop();
    const users = createPeerClient(
      UserService,
      balanced("listener-service", {
        onEvent: () => {
          throw new Error("broken logger");
        },
      }),
    );
    for (let i = 0; i < 4; i++) {
      expect((await users.getUser({ id: "1" })).message.servedBy).toBe(live!.address);
    }
    // an async listener's rejection must not become an unhandled rejection either
    const rejecting = createPeerClient(
      UserService,
      balanced("listener-service", { outlierDetection: false, onEvent: async () => Promise.reject(new Error("broken async logger")) }),
    );
    for (let i = 0; i < 4; i++) {
      expect((await rejecting.getUser({ id: "1" })).message.servedBy).toBe(live!.address);
    }
  });

  it("fails the call when retries are turned off, naming the dead peer", async () => {
    const [dead] = await instances("no-retry-service", [{}]);
    await dead!.stop();
    const error = await rejection(createPeerClient(UserService, balanced("no-retry-service", { maxAttempts: 1 })).getUser({ id: "1" }));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain(dead!.address);
  });

  it("is treated the same when calls go over fetch, where the failure is a TypeError", async () => {
    const [dead, live] = await instances("fetch-crash-service", [{ httpVersion: "1.1" }, { httpVersion: "1.1" }]);
    await dead!.stop();
    const recorder = eventRecorder();
    const users = createPeerClient(
      UserService,
      balanced("fetch-crash-service", { schemes: ["http"], transport: fetchTransport(), onEvent: recorder.onEvent }),
    );
    for (let i = 0; i < 6; i++) {
      expect((await users.getUser({ id: "1" })).message.servedBy).toBe(live!.address);
    }
    expect(recorder.events.filter((e) => e.type === "peer_ejected").map((e) => e.type === "peer_ejected" && e.address)).toEqual([dead!.address]);
  });
});

describe("an instance that deregistered and stopped, with the default polling (ttlMs 10 s)", () => {
  it("makes the transport read etcd early: the instance registered meanwhile gets calls at once, not after the TTL", async () => {
    const service = "replaced-service";
    const [old] = await instances(service, [{}]);
    const users = createPeerClient(UserService, balanced(service, { transport: nodeHttp2Transport(), onEvent: () => {} }));
    expect((await users.getUser({ id: "1" })).message.servedBy).toBe(old!.address); // the snapshot is read
    const readsBefore = await rangeCountAt(etcd.endpoint);
    // a rolling deploy: the new instance registers, the old one deregisters and stops
    const fresh = await startUserServer();
    servers.push(fresh);
    await registerKratos(etcd.endpoint, { id: `${service}-new`, name: service, version: "v1", metadata: null, endpoints: [`grpc://${fresh.address}`] });
    await deleteKey(etcd.endpoint, `/microservices/${service}/${service}-0`);
    await old!.stop();
    const started = performance.now();
    // the cached snapshot lists only the old instance: the refusal brings the read, and the call waits for it
    expect((await users.getUser({ id: "2" }, { timeoutMs: 2_000 })).message.servedBy).toBe(fresh.address);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect((await rangeCountAt(etcd.endpoint)) - readsBefore).toBe(1);
  });
});

describe("ring_hash over real servers", () => {
  it("keeps a key on one instance, and moves it to the next one on the ring when that instance dies", async () => {
    const started = await instances("sticky-service", [{}, {}, {}]);
    const users = createPeerClient(UserService, balanced("sticky-service", { balancer: "ring_hash", onEvent: () => {} }));
    const callAs = async (user: string) => {
      const contextValues = createContextValues();
      contextValues.set(hashKey, user);
      return (await users.getUser({ id: user }, { contextValues })).message.servedBy;
    };
    const owner = await callAs("alice");
    for (let i = 0; i < 5; i++) {
      expect(await callAs("alice")).toBe(owner);
    }
    await started.find((s) => s.address === owner)!.stop();
    const successor = await callAs("alice"); // the retry walks the ring
    expect(successor).not.toBe(owner);
    for (let i = 0; i < 5; i++) {
      expect(await callAs("alice")).toBe(successor); // the owner is ejected: the successor keeps the key
    }
  });
});

describe("an instance that answers with errors", () => {
  it("gets idempotent reads retried elsewhere but never a write it may have applied", async () => {
    const [failing, healthy] = await instances("flaky-service", [{ failWith: Code.Unavailable }, {}]);
    const users = createPeerClient(UserService, balanced("flaky-service", { outlierDetection: false }));
    for (let i = 0; i < 6; i++) {
      expect((await users.getUser({ id: "1" })).message.servedBy).toBe(healthy!.address);
    }
    const writes = await Promise.allSettled(Array.from({ length: 6 }, () => users.updateUser({ id: "1", name: "n" })));
    const failed = writes.filter((w) => w.status === "rejected");
    expect(failed).toHaveLength(3); // round robin sends every other write to the failing peer
    for (const w of failed) {
      expect((w as PromiseRejectedResult).reason).toMatchObject({ code: Code.Unavailable, message: expect.stringContaining(`peer ${failing!.address}`) });
    }
  });

  it("keeps retries to a budget when the whole fleet fails", async () => {
    const [a, b] = await instances("overloaded-service", [{ failWith: Code.Unavailable }, { failWith: Code.Unavailable }]);
    const users = createPeerClient(UserService, balanced("overloaded-service"));
    await users.getUser({ id: "warm" }).catch(() => {}); // read the registry first, so the 40 calls start together
    const before = a!.calls + b!.calls;
    const results = await Promise.allSettled(Array.from({ length: 40 }, () => users.getUser({ id: "1" })));
    expect(results.every((r) => r.status === "rejected")).toBe(true);
    const sent = a!.calls + b!.calls - before;
    // unbounded, every call would be sent twice (80); the budget allows retries for 20 % of
    // the calls in flight (48 here when all 40 failures arrive before any retry ends)
    expect(sent).toBeGreaterThan(40);
    expect(sent).toBeLessThan(60);
  });

  it("does not retry errors that another peer would answer the same way", async () => {
    const [a, b] = await instances("invalid-service", [{ failWith: Code.InvalidArgument }, { failWith: Code.InvalidArgument }]);
    await rejection(createPeerClient(UserService, balanced("invalid-service")).getUser({ id: "1" }));
    expect(a!.calls + b!.calls).toBe(1);
  });
});
