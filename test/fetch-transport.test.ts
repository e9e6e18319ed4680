// Per-peer transports over fetch (the way edge runtimes call), against real
// HTTP/1.1 Connect servers registered with http:// endpoints.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, type BalancedTransport } from "../src/index.js";
import { fetchTransport } from "../src/fetch/index.js";
import { startEtcd, freePort, type EtcdServer } from "../support/etcd.js";
import { registerKratos } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy, rejection } from "./helpers.js";

let etcd: EtcdServer;
let servers: UserServer[] = [];
const open: BalancedTransport[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  servers = await Promise.all([1, 2, 3].map(() => startUserServer({ httpVersion: "1.1" })));
  for (const [i, server] of servers.entries()) {
    await registerKratos(etcd.endpoint, {
      id: `web-${i}`,
      name: "web-service",
      version: "v1",
      metadata: null,
      endpoints: [`grpc://127.0.0.1:1`, `http://${server.address}`],
    });
  }
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await Promise.all(servers.map((s) => s.stop()));
  await etcd?.stop();
});

function balanced(protocol: "connect" | "grpc-web", service = "web-service") {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint] }),
    schemes: ["http", "https"],
    transport: fetchTransport({ protocol }),
  });
  open.push(transport);
  return transport;
}

describe("fetchTransport", () => {
  for (const protocol of ["connect", "grpc-web"] as const) {
    it(`calls every instance over ${protocol} and reports the peer that answered`, async () => {
      const users = createPeerClient(UserService, balanced(protocol));
      const served: string[] = [];
      for (let i = 0; i < 9; i++) {
        const res = await users.getUser({ id: String(i) });
        expect(res.peer.address).toBe(res.message.servedBy);
        expect(res.peer.scheme).toBe("http");
        served.push(res.message.servedBy);
      }
      expect(countBy(served)).toEqual(Object.fromEntries(servers.map((s) => [s.address, 3])));

      const stream = await users.listUsers({ count: 3 });
      const messages = [];
      for await (const message of stream.message) {
        messages.push(message.servedBy);
      }
      expect(messages).toEqual([stream.peer.address, stream.peer.address, stream.peer.address]);
    });
  }

  it("sends no redirect option and asks for uncompressed responses", async () => {
    const seen: RequestInit[] = [];
    const transport = createBalancedTransport({
      service: "web-service",
      discovery: etcdDiscovery({ endpoints: [etcd.endpoint] }),
      schemes: ["http"],
      transport: fetchTransport({
        fetch: (input, init) => {
          seen.push(init ?? {});
          return fetch(input, init);
        },
      }),
    });
    open.push(transport);
    await createPeerClient(UserService, transport).getUser({ id: "1" });
    expect(seen).toHaveLength(1);
    expect(seen[0]).not.toHaveProperty("redirect");
    expect(new Headers(seen[0]!.headers).get("accept-encoding")).toBe("identity");
  });

  it("names the peer when fetch cannot connect", async () => {
    const port = await freePort();
    await registerKratos(etcd.endpoint, { id: "dead", name: "dead-web", version: "v1", metadata: null, endpoints: [`http://127.0.0.1:${port}`] });
    const error = await rejection(createPeerClient(UserService, balanced("connect", "dead-web")).getUser({ id: "1" }));
    expect(error.code).toBe(Code.Unknown); // fetch reports a network failure as a TypeError
    expect(error.message).toContain(`peer 127.0.0.1:${port} of "dead-web"`);
  });
});
