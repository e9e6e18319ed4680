// etcdDiscovery over TLS (issue 7, item 9): an etcd serving https:// client
// URLs with a server certificate signed by a CA the test generates. With a
// `fetch` that trusts that CA, discovery (reads and the watch) works; without
// it, calls fail with Unavailable naming the endpoint, and nothing secret leaks.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, type BalancedTransport, type EtcdDiscoveryOptions } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { httpsFetch, makeTestCertificates, type TestCertificates } from "../support/tls.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { eventRecorder, rejection } from "./helpers.js";

let certs: TestCertificates;
let etcd: EtcdServer;
let trusting: typeof globalThis.fetch;
const servers: UserServer[] = [];
const open: BalancedTransport[] = [];

beforeAll(async () => {
  certs = await makeTestCertificates();
  etcd = await startEtcd({ tls: certs });
  trusting = httpsFetch({ ca: certs.ca });
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await Promise.allSettled(servers.map((s) => s.stop()));
  await etcd?.stop();
});

const base64 = (text: string) => Buffer.from(text).toString("base64");

/** Writes a kratos registration through the TLS endpoint (no lease: the etcd lives as long as the file). */
async function register(service: string, id: string): Promise<UserServer> {
  const server = await startUserServer();
  servers.push(server);
  const value = JSON.stringify({ id, name: service, version: "v1", metadata: null, endpoints: [`grpc://${server.address}`] });
  const response = await trusting(`${etcd.endpoint}/v3/kv/put`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key: base64(`/microservices/${service}/${id}`), value: base64(value) }),
  });
  expect(response.status).toBe(200);
  await response.text();
  return server;
}

function balanced(service: string, discovery: Partial<EtcdDiscoveryOptions>, onEvent?: Parameters<typeof createBalancedTransport>[0]["onEvent"]) {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint], ...discovery }),
    transport: nodeHttp2Transport(),
    onEvent,
  });
  open.push(transport);
  return transport;
}

describe("etcdDiscovery over https with a custom CA", () => {
  it("serves the etcd client URL over https", () => {
    expect(etcd.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it("reads the registry through a fetch that trusts the test CA", async () => {
    const [a, b] = [await register("tls-read", "a"), await register("tls-read", "b")];
    const users = createPeerClient(UserService, balanced("tls-read", { fetch: trusting }));
    const served = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const res = await users.getUser({ id: String(i) });
      expect(res.message.servedBy).toBe(res.peer.address);
      served.add(res.peer.address);
    }
    expect([...served].sort()).toEqual([a.address, b.address].sort());
  });

  it("watches over https: a new registration is seen without waiting for the TTL", async () => {
    const a = await register("tls-watch", "a");
    const recorder = eventRecorder();
    const users = createPeerClient(UserService, balanced("tls-watch", { fetch: trusting, watch: true, ttlMs: 60_000 }, recorder.onEvent));
    expect((await users.getUser({ id: "1" })).peer.address).toBe(a.address);

    const grown = recorder.next("snapshot");
    const b = await register("tls-watch", "b");
    expect((await grown).instances).toBe(2);
    const served = new Set<string>();
    for (let i = 0; i < 4; i++) {
      served.add((await users.getUser({ id: String(i) })).peer.address);
    }
    expect([...served].sort()).toEqual([a.address, b.address].sort());
    expect(recorder.events.filter((e) => e.type === "discovery_failed")).toEqual([]);
  });

  it("without the CA, calls fail with Unavailable naming the endpoint and the certificate problem, and leak no password", async () => {
    await register("tls-untrusted", "a");
    const password = "pa55-word-that-must-not-leak";
    const cases: [string, Partial<EtcdDiscoveryOptions>][] = [
      ["Node's global fetch", {}],
      ["a fetch trusting another CA", { fetch: httpsFetch({ ca: (await makeTestCertificates()).ca }) }],
    ];
    for (const [what, options] of cases) {
      const recorder = eventRecorder();
      const users = createPeerClient(UserService, balanced("tls-untrusted", { ...options, auth: { username: "reader", password } }, recorder.onEvent));
      const error = await rejection(users.getUser({ id: "1" }));
      expect(error.code, what).toBe(Code.Unavailable);
      expect(error.message, what).toContain(etcd.endpoint);
      expect(error.message, what).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify|self[- ]signed|certificate/i);
      const failed = recorder.events.find((e) => e.type === "discovery_failed");
      for (const text of [error.message, String(error.cause), JSON.stringify(recorder.events), failed?.error.message ?? ""]) {
        expect(text, what).not.toContain(password);
        expect(text, what).not.toContain("PRIVATE KEY");
      }
    }
  });
});
