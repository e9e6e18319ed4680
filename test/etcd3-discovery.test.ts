// etcd3Discovery against a real etcd: it follows the registry by watch
// through restarts and compactions, leaves no watcher behind, lets the
// process exit, and etcd3 stays an optional dependency.
import { createServer, connect, type Server, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Etcd3 } from "etcd3";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, type BalancedTransport, type Discovery } from "../src/index.js";
import { etcd3Discovery } from "../src/node/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos, type Registration } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { compactAll, eventually, runFixture } from "./fixtures/etcd-probe.js";
import { fileURLToPath } from "node:url";

let etcd: EtcdServer;
let client: Etcd3;
const servers: UserServer[] = [];
const registrations: Registration[] = [];
const transports: BalancedTransport[] = [];
const clients: Etcd3[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  client = etcd3Client(etcd.endpoint);
});

afterEach(async () => {
  await Promise.all(transports.splice(0).map((transport) => transport.close()));
});

afterAll(async () => {
  await Promise.allSettled(registrations.map((registration) => registration.deregister()));
  await Promise.all(servers.map((server) => server.stop()));
  clients.forEach((c) => c.close());
  await etcd?.stop();
});

function etcd3Client(endpoint: string): Etcd3 {
  const created = new Etcd3({ hosts: [endpoint] });
  clients.push(created);
  return created;
}

/** A server registered kratos-style through the gateway: independent of the code under test. */
async function instance(service: string, id: string): Promise<{ server: UserServer; registration: Registration }> {
  const server = await startUserServer();
  servers.push(server);
  const registration = await registerKratos(etcd.endpoint, { id, name: service, version: "v1", metadata: null, endpoints: [`grpc://${server.address}`] });
  registrations.push(registration);
  return { server, registration };
}

/** A transport that only the watch can keep current: its snapshots stay fresh for a minute. */
function watching(service: string, discovery: Discovery = etcd3Discovery({ client, ttlMs: 60_000 })): BalancedTransport {
  const transport = createBalancedTransport({ service, discovery, transport: (peer) => createGrpcTransport({ baseUrl: peer.url }), onEvent: () => {} });
  transports.push(transport);
  return transport;
}

/** Resolves once the transport's peers are exactly these servers. */
async function peersBecome(transport: BalancedTransport, servers: readonly UserServer[], timeoutMs = 1_000): Promise<void> {
  const wanted = servers.map((s) => s.address).sort().join(" ");
  await eventually(async () => ((await transport.peers()).map((p) => p.address).sort().join(" ") === wanted ? true : undefined), `peers ${wanted}`, timeoutMs);
}

const watchers = () => etcd.watcherCount();

describe("etcd3Discovery", () => {
  it("follows additions and removals by watch, within a second", async () => {
    const a = await instance("follow-service", "a");
    const transport = watching("follow-service");
    const res = await createPeerClient(UserService, transport).getUser({ id: "1" });
    expect(res.peer.address).toBe(a.server.address);

    const b = await instance("follow-service", "b");
    await peersBecome(transport, [a.server, b.server]);
    await a.registration.deregister();
    await peersBecome(transport, [b.server]);
  });

  it("keeps following after etcd restarts", async () => {
    const a = await instance("restart-follow", "a");
    const transport = watching("restart-follow");
    await peersBecome(transport, [a.server]);
    await etcd.restart();
    const b = await instance("restart-follow", "b");
    await peersBecome(transport, [a.server, b.server], 20_000);
  });

  it("misses nothing when its watch resumes at a compacted revision", async () => {
    const proxy = await tcpProxy(Number(new URL(etcd.endpoint).port));
    try {
      const a = await instance("compact-service", "a");
      const transport = watching("compact-service", etcd3Discovery({ client: etcd3Client(proxy.endpoint), ttlMs: 60_000 }));
      await peersBecome(transport, [a.server]);
      proxy.cut(); // the watch breaks while the registry changes and its history is compacted
      const b = await instance("compact-service", "b");
      await compactAll(etcd.endpoint);
      proxy.restore();
      await peersBecome(transport, [a.server, b.server], 20_000);
    } finally {
      await proxy.close();
    }
  });

  it("rejects a watch from a compacted revision, so that the cache reads afresh", async () => {
    const discovery = etcd3Discovery({ client });
    const { revision } = await discovery.load("compacted-service", AbortSignal.timeout(5_000));
    await instance("compacted-service", "a");
    await compactAll(etcd.endpoint);
    const listener = { opened: () => {}, changed: () => {} };
    await expect(discovery.watch!("compacted-service", revision, new AbortController().signal, listener)).rejects.toThrow(/cancelled the watch/);
    expect((await discovery.load("compacted-service", AbortSignal.timeout(5_000))).instances.map((i) => i.id)).toEqual(["a"]);
  });

  it("leaves no watcher on etcd after close(), also when closed while its watch connects", async () => {
    await instance("close-service", "a");
    const before = await watchers();
    const transport = watching("close-service");
    await transport.peers();
    await eventually(async () => ((await watchers()) === before + 1 ? true : undefined), "the watch to open on etcd");
    await transport.close();
    await eventually(async () => ((await watchers()) === before ? true : undefined), "the watcher to be cancelled");

    // cancelled at every stage of connecting, on a client whose watch stream is new
    const fresh = etcd3Client(etcd.endpoint);
    const discovery = etcd3Discovery({ client: fresh });
    const { revision } = await discovery.load("close-service", AbortSignal.timeout(5_000));
    for (const delayMs of [0, 1, 2, 5, 10, 20, 50]) {
      const controller = new AbortController();
      const watch = discovery.watch!("close-service", revision, controller.signal, { opened: () => {}, changed: () => {} });
      setTimeout(() => controller.abort(), delayMs);
      await watch; // resolves: an aborted watch is not a failure
    }
    await eventually(async () => ((await watchers()) === before ? true : undefined), "every early-cancelled watcher to be gone");
  });

  it("lets the process exit once the transports and the client are closed", async () => {
    const { server } = await instance("exit-service", "a");
    const child = runFixture("etcd3-discovery-close.ts", [etcd.endpoint, "exit-service"]);
    try {
      expect(await child.line()).toBe(`served ${server.address} ${server.address}`);
      expect(await child.line()).toBe("closed");
      expect(await child.exited()).toBe(0);
      expect(child.stderr()).toBe("");
    } finally {
      await child.kill();
    }
  });

  it("keys its cache by client without showing its settings", () => {
    const secret = new Etcd3({ hosts: ["http://127.0.0.1:1"], auth: { username: "root", password: "s3cret-pw" } });
    clients.push(secret);
    const [one, two, same] = [etcd3Discovery({ client }), etcd3Discovery({ client: secret }), etcd3Discovery({ client })];
    expect(one.key).not.toBe(two.key);
    expect(one.key).toBe(same.key);
    expect(two.key + two.describe("x")).not.toMatch(/s3cret|root|127\.0\.0\.1/);
    expect(one.describe("x")).toBe('etcd3 client (namespace "/microservices", kratos format)');
  });

  it("does not need etcd3 installed: both entries load, and only registerInstance with URLs asks for it", async () => {
    const hook = fileURLToPath(new URL("./fixtures/no-etcd3.mjs", import.meta.url));
    const child = runFixture("without-etcd3.ts", [], { execArgv: ["--import", hook] });
    try {
      expect(await child.line()).toBe("exports function function");
      expect(await child.line()).toBe('register FailedPrecondition registerInstance needs the "etcd3" package to talk to etcd: npm install etcd3');
      expect(await child.exited()).toBe(0);
    } finally {
      await child.kill();
    }
  });
});

/** A TCP proxy to a loopback port whose connections can be cut and refused, like a network partition. */
async function tcpProxy(targetPort: number): Promise<{ endpoint: string; cut(): void; restore(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let refusing = false;
  const server: Server = createServer((inbound) => {
    if (refusing) {
      inbound.destroy();
      return;
    }
    const outbound = connect(targetPort, "127.0.0.1");
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket)).on("error", () => {});
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const cut = () => sockets.forEach((socket) => socket.destroy());
  return {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    cut() {
      refusing = true;
      cut();
    },
    restore: () => (refusing = false),
    async close() {
      cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
