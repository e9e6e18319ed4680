// The core flow against real processes: an etcd server, HTTP/2 servers on
// loopback, and registrations written exactly as go-kratos writes them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, createContextValues, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import {
  createBalancedTransport,
  createPeerClient,
  etcdDiscovery,
  peerKey,
  staticDiscovery,
  type BalancedTransport,
  type Balancer,
  type Peer,
} from "../src/index.js";
import { startCluster, type Cluster } from "../support/cluster.js";
import { freePort } from "../support/etcd.js";
import { countBy, eventRecorder, rejection } from "./helpers.js";

let cluster: Cluster;
const open: BalancedTransport[] = [];

beforeAll(async () => {
  cluster = await startCluster({ service: "user-service", instances: 3 });
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await cluster?.stop();
});

function balanced(options: Partial<Parameters<typeof createBalancedTransport>[0]> = {}): BalancedTransport {
  const transport = createBalancedTransport({
    service: "user-service",
    discovery: etcdDiscovery({ endpoints: [cluster.etcd.endpoint] }),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
    ...options,
  });
  open.push(transport);
  return transport;
}

describe("a typed client over etcd-discovered kratos instances", () => {
  it("spreads calls evenly with round robin and the context names the server that answered", async () => {
    const users = createClient(UserService, balanced());
    const servedBy: string[] = [];
    for (let i = 0; i < 30; i++) {
      const contextValues = createContextValues();
      const response = await users.getUser({ id: String(i) }, { contextValues });
      expect(contextValues.get(peerKey)?.address).toBe(response.servedBy);
      servedBy.push(response.servedBy);
    }
    expect(countBy(servedBy)).toEqual(Object.fromEntries(cluster.servers.map((s) => [s.address, 10])));
  });

  it("gives res.peer, the context and interceptors the same peer, the one that served", async () => {
    const seenByInterceptor: { peer: Peer | undefined; url: string }[] = [];
    const recordPeer: Interceptor = (next) => async (request) => {
      seenByInterceptor.push({ peer: request.contextValues.get(peerKey), url: request.url });
      return next(request);
    };
    const users = createPeerClient(UserService, balanced({ interceptors: [recordPeer] }));
    for (let i = 0; i < 6; i++) {
      const contextValues = createContextValues();
      const res = await users.getUser({ id: "7" }, { contextValues });
      expect(res.peer.address).toBe(res.message.servedBy);
      expect(contextValues.get(peerKey)).toBe(res.peer);
      expect(seenByInterceptor[i]?.peer).toBe(res.peer);
      expect(seenByInterceptor[i]?.url).toBe(`http://${res.message.servedBy}/demo.user.v1.UserService/GetUser`);
      expect(res.header).toBeInstanceOf(Headers);
      expect(res.trailer).toBeInstanceOf(Headers);
      expect(res.peer).toMatchObject({
        scheme: "grpc",
        name: "user-service",
        version: "v1.0.0",
        weight: 100,
        url: `http://${res.message.servedBy}`,
      });
      expect(Object.isFrozen(res.peer)).toBe(true);
    }
    expect(new Set(seenByInterceptor.map((s) => s.peer?.address)).size).toBe(3);
  });

  it("returns the peer from the raw transport, for writes too", async () => {
    const transport = balanced();
    const res = await transport.unary(UserService.method.updateUser, undefined, undefined, undefined, { id: "1", name: "Ada" });
    expect(res.message.user?.name).toBe("Ada");
    expect(res.peer.address).toBe(res.message.servedBy);
  });

  it("streams every message from the peer it reports", async () => {
    const users = createPeerClient(UserService, balanced());
    const addresses = new Set<string>();
    for (let call = 0; call < 3; call++) {
      const res = await users.listUsers({ count: 5 });
      const messages = [];
      for await (const message of res.message) {
        messages.push(message);
      }
      expect(messages).toHaveLength(5);
      expect(new Set(messages.map((m) => m.servedBy))).toEqual(new Set([res.peer.address]));
      addresses.add(res.peer.address);
    }
    expect(addresses.size).toBe(3);

    const contextValues = createContextValues();
    const plain = createClient(UserService, balanced());
    const streamed = [];
    for await (const message of plain.listUsers({ count: 2 }, { contextValues })) {
      streamed.push(message.servedBy);
    }
    expect(streamed).toEqual([contextValues.get(peerKey)?.address, contextValues.get(peerKey)?.address]);
  });

  it("creates one transport per peer, reuses it, and closes them all on close()", async () => {
    const created: string[] = [];
    const closed: string[] = [];
    const transport = balanced({
      transport: (peer) => {
        created.push(peer.address);
        return { ...createGrpcTransport({ baseUrl: peer.url }), close: () => void closed.push(peer.address) };
      },
    });
    const users = createClient(UserService, transport);
    for (let i = 0; i < 12; i++) {
      await users.getUser({ id: "1" });
    }
    expect(created.sort()).toEqual(cluster.servers.map((s) => s.address).sort());
    await transport.close();
    expect(closed.sort()).toEqual(created);
    const error = await rejection(users.getUser({ id: "1" }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.message).toContain("closed");
  });
});

describe("the built-in balancers by name", () => {
  for (const balancer of ["round_robin", "random", "weighted_round_robin", "least_request", "p2c", "ring_hash"] as const) {
    it(`${balancer} serves every call and reports the peer that answered`, async () => {
      const users = createPeerClient(UserService, balanced({ balancer }));
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => users.getUser({ id: String(i) })));
      for (const res of results) {
        expect(res.peer.address).toBe(res.message.servedBy);
      }
      expect(cluster.servers.map((s) => s.address)).toEqual(expect.arrayContaining([...new Set(results.map((r) => r.peer.address))]));
    });
  }
});

describe("streams", () => {
  it("end their call when the caller stops before reading a message", async () => {
    let picks = 0;
    let dones = 0;
    const counting: Balancer = {
      name: "counting",
      build(peers) {
        let next = 0;
        return () => {
          picks++;
          return { peer: peers[next++ % peers.length]!, done: () => void dones++ };
        };
      },
    };
    const users = createPeerClient(UserService, balanced({ balancer: counting }));
    const abandoned = await users.listUsers({ count: 3 });
    await abandoned.message[Symbol.asyncIterator]().return?.();
    const read = await users.listUsers({ count: 2 });
    for await (const message of read.message) {
      expect(message.servedBy).toBe(read.peer.address);
    }
    expect([picks, dones]).toEqual([2, 2]);
  });
});

describe("failures", () => {
  it("leaves the peer it tried in the context and names it in the error", async () => {
    const deadPort = await freePort();
    const users = createClient(
      UserService,
      balanced({ service: "gone-service", discovery: staticDiscovery([`grpc://127.0.0.1:${deadPort}`]) }),
    );
    const contextValues = createContextValues();
    const error = await rejection(users.getUser({ id: "1" }, { contextValues }));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain(`peer 127.0.0.1:${deadPort} of "gone-service"`);
    expect(contextValues.get(peerKey)?.address).toBe(`127.0.0.1:${deadPort}`);
  });

  it("says Unavailable, naming service, namespace and etcd but never the password, when nothing is registered", async () => {
    const users = createClient(
      UserService,
      balanced({
        service: "discovery:///nobody-service",
        discovery: etcdDiscovery({
          endpoints: [cluster.etcd.endpoint],
          namespace: "/prod",
          auth: { username: "reader", password: "s3cret-pw" },
        }),
      }),
    );
    const error = await rejection(users.getUser({ id: "1" }));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain('service "nobody-service"');
    expect(error.message).toContain('namespace "/prod"');
    expect(error.message).toContain(cluster.etcd.endpoint);
    expect(error.message).not.toContain("s3cret-pw");
  });

  it("explains when instances exist but register no endpoint the transport can dial", async () => {
    const transport = balanced({ schemes: ["https"] });
    const error = await rejection(transport.peers());
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain("3 instances of service \"user-service\"");
    expect(error.message).toContain("scheme https");
    expect(error.message).toContain("they register grpc");
  });

  it("rejects bad options with InvalidArgument", () => {
    const discovery = staticDiscovery(["grpc://127.0.0.1:1"]);
    const transport = () => createGrpcTransport({ baseUrl: "http://127.0.0.1:1" });
    const attempts = [
      () => createBalancedTransport({ service: "", discovery, transport }),
      () => createBalancedTransport({ service: "discovery://", discovery, transport }),
      () => createBalancedTransport({ service: "a", discovery, transport, balancer: "fastest" as never }),
      () => createBalancedTransport({ service: "a", discovery, transport, schemes: [] }),
      () => etcdDiscovery({ endpoints: [] }),
      () => etcdDiscovery({ endpoints: ["127.0.0.1:2379"] }),
      () => etcdDiscovery({ endpoints: ["http://root:pw@127.0.0.1:2379"] }),
      () => etcdDiscovery({ endpoints: ["http://127.0.0.1:2379"], ttlMs: -1 }),
      () => staticDiscovery(["grpc://127.0.0.1:99999"]),
    ];
    for (const attempt of attempts) {
      expect(attempt).toThrow(expect.objectContaining({ code: Code.InvalidArgument }));
    }
    expect(attempts[6]).toThrow(expect.not.objectContaining({ message: expect.stringContaining(":pw@") }));
    for (const leaky of [
      () => etcdDiscovery({ endpoints: ["http://root:s3cret@etcd:23x79"] }),
      () => staticDiscovery(["grpc://svc:s3cret@10.0.0.1:99999"]),
    ]) {
      expect(leaky).toThrow(expect.objectContaining({ code: Code.InvalidArgument, message: expect.not.stringContaining("s3cret") }));
    }
  });
});

describe("events", () => {
  it("reports each new snapshot once", async () => {
    const recorder = eventRecorder();
    const transport = balanced({
      service: "user-service",
      discovery: etcdDiscovery({ endpoints: [cluster.etcd.endpoint], ttlMs: 60_000 }),
      onEvent: recorder.onEvent,
    });
    await transport.peers();
    await transport.peers();
    expect(recorder.events.filter((e) => e.type === "snapshot")).toEqual([
      expect.objectContaining({ type: "snapshot", service: "user-service", instances: 3 }),
    ]);
  });
});
