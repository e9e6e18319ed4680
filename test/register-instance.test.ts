// registerInstance against a real etcd: what it writes (byte for byte what
// kratos writes), that callers find the server through both discoveries, and
// that the key leaves and comes back when it should.
import { createServer, type AddressInfo, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Etcd3 } from "etcd3";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, type BalancedTransport, type Discovery } from "../src/index.js";
import { etcd3Discovery, registerInstance, type RegisterInstanceOptions, type Registration, type RegistrationEvent } from "../src/node/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { eventually, grantedTtl, readKey, revokeLease, runFixture, type Child } from "./fixtures/etcd-probe.js";
import { rejection } from "./helpers.js";

let etcd: EtcdServer;
let client: Etcd3;
const servers: UserServer[] = [];
const registrations: Registration[] = [];
const transports: BalancedTransport[] = [];
const children: Child[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  client = new Etcd3({ hosts: [etcd.endpoint] });
});

afterEach(async () => {
  await Promise.all(transports.splice(0).map((transport) => transport.close()));
});

afterAll(async () => {
  await Promise.all(children.map((child) => child.kill()));
  await Promise.allSettled(registrations.map((registration) => registration.deregister()));
  await Promise.all(servers.map((server) => server.stop()));
  client?.close();
  await etcd?.stop();
});

async function server(): Promise<UserServer> {
  const started = await startUserServer();
  servers.push(started);
  return started;
}

async function register(options: Partial<RegisterInstanceOptions> & Pick<RegisterInstanceOptions, "name" | "endpoints">): Promise<Registration> {
  const registration = await registerInstance({ etcd: client, ...options });
  registrations.push(registration);
  return registration;
}

function balanced(service: string, discovery: Discovery): BalancedTransport {
  const transport = createBalancedTransport({ service, discovery, transport: (peer) => createGrpcTransport({ baseUrl: peer.url }), onEvent: () => {} });
  transports.push(transport);
  return transport;
}

/** Both discoveries, each reading etcd at least every 100 ms (etcd3Discovery also watches). */
const discoveries = (): Discovery[] => [etcdDiscovery({ endpoints: [etcd.endpoint], ttlMs: 100 }), etcd3Discovery({ client, ttlMs: 100 })];

/** The address that served a call, or undefined when the call failed. */
async function servedBy(transport: BalancedTransport): Promise<string | undefined> {
  try {
    const res = await createPeerClient(UserService, transport).getUser({ id: "1" });
    return res.message.servedBy;
  } catch {
    return undefined;
  }
}

/** Whether the next few calls all reach `address`. */
async function onlyServedBy(transport: BalancedTransport, address: string): Promise<boolean> {
  for (let call = 0; call < 4; call++) {
    if ((await servedBy(transport)) !== address) {
      return false;
    }
  }
  return true;
}

describe("registerInstance", () => {
  it("makes a server callable through etcdDiscovery and etcd3Discovery, and deregister() takes it out", async () => {
    const [a, b] = [await server(), await server()];
    const registration = await register({ name: "reg-service", version: "v2", metadata: { zone: "eu-1" }, endpoints: [`grpc://${a.address}`] });
    for (const discovery of discoveries()) {
      const res = await createPeerClient(UserService, balanced("reg-service", discovery)).getUser({ id: "7" });
      expect(res.message.servedBy).toBe(a.address);
      expect(res.peer).toMatchObject({ address: a.address, id: registration.id, name: "reg-service", version: "v2", metadata: { zone: "eu-1" } });
    }
    expect(registration.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

    // a second instance, so that the last one leaving is not ignored as an empty registry
    await register({ name: "reg-service", endpoints: [`grpc://${b.address}`] });
    await registration.deregister();
    expect(await readKey(etcd.endpoint, registration.key)).toBeUndefined();
    for (const transport of transports) {
      await eventually(async () => (await onlyServedBy(transport, b.address)) || undefined, "the deregistered server to leave the balancer");
    }
    // the caller's client is not ours to close
    expect(await client.get("anything").string()).toBeNull();
  });

  it("writes the key and value byte for byte as kratos does, under a 15 s lease by default", async () => {
    const registration = await register({
      name: "bytes-service",
      id: "fixed-id",
      version: "v1.2.3",
      metadata: { zone: "eu-1", b: "x<y&z>", a: "1" },
      endpoints: ["grpc://127.0.0.1:9000", "http://127.0.0.1:8000"],
    });
    expect(registration.key).toBe("/microservices/bytes-service/fixed-id");
    const stored = await readKey(etcd.endpoint, registration.key);
    // Go's json.Marshal of registry.ServiceInstance: declared field order, sorted map keys, HTML escaping.
    expect(stored?.value).toBe(
      '{"id":"fixed-id","name":"bytes-service","version":"v1.2.3","metadata":{"a":"1","b":"x\\u003cy\\u0026z\\u003e","zone":"eu-1"},"endpoints":["grpc://127.0.0.1:9000","http://127.0.0.1:8000"]}',
    );
    expect(await grantedTtl(etcd.endpoint, stored!.lease)).toBe(15);

    // without metadata: null, as Go writes a nil map; the same bytes as the repo's kratos writer
    const plain = await register({ name: "bytes-service", id: "plain", endpoints: ["grpc://127.0.0.1:9001"], namespace: "/ns", ttlSeconds: 3 });
    const kratos = await registerKratos(etcd.endpoint, { id: "kratos", name: "bytes-service", version: "", metadata: null, endpoints: ["grpc://127.0.0.1:9001"] }, { namespace: "/ns" });
    const ours = await readKey(etcd.endpoint, plain.key);
    const theirs = await readKey(etcd.endpoint, kratos.key);
    await kratos.deregister();
    expect(ours?.value).toBe('{"id":"plain","name":"bytes-service","version":"","metadata":null,"endpoints":["grpc://127.0.0.1:9001"]}');
    expect(ours?.value).toBe(theirs?.value.replace('"id":"kratos"', '"id":"plain"'));
    expect(await grantedTtl(etcd.endpoint, ours!.lease)).toBe(3);
  });

  it("sorts metadata keys that look like numbers by their bytes, as Go does, not numbers first as a JS object would", async () => {
    const registration = await register({
      name: "bytes-service",
      id: "numeric-keys",
      metadata: { b: "x", "10": "y", "9": "z", "-1": "n", "01": "o" },
      endpoints: ["grpc://127.0.0.1:9000"],
    });
    const stored = await readKey(etcd.endpoint, registration.key);
    // json.Marshal of the same registry.ServiceInstance in Go
    expect(stored?.value).toBe(
      '{"id":"numeric-keys","name":"bytes-service","version":"","metadata":{"-1":"n","01":"o","10":"y","9":"z","b":"x"},"endpoints":["grpc://127.0.0.1:9000"]}',
    );
  });

  it("rejects bad options with InvalidArgument naming the option", async () => {
    const good = { etcd: client, name: "x", endpoints: ["grpc://127.0.0.1:9000"] };
    const cases: [Partial<RegisterInstanceOptions>, string][] = [
      [{ name: "" }, "name"],
      [{ name: "a/b" }, "name"],
      [{ id: "" }, "id"],
      [{ endpoints: [] }, "endpoints"],
      [{ endpoints: ["127.0.0.1:9000"] }, "endpoints[0]"],
      [{ ttlSeconds: 0 }, "ttlSeconds"],
      [{ ttlSeconds: 1.5 }, "ttlSeconds"],
      [{ namespace: "/microservices/" }, "namespace"],
      [{ metadata: { weight: 5 } as never }, "metadata"],
      [{ etcd: [] }, "etcd"],
      [{ etcd: ["127.0.0.1:2379"] }, "etcd URL"],
      [{ etcd: {} as never }, "etcd"],
    ];
    for (const [bad, option] of cases) {
      const error = await rejection(registerInstance({ ...good, ...bad }));
      expect(error.code, option).toBe(Code.InvalidArgument);
      expect(error.message).toContain(`registerInstance: ${option}`);
    }
  });

  it("fails within its deadline, leaving nothing running, when etcd cannot be reached", async () => {
    const started = Date.now();
    const error = await rejection(registerInstance({ etcd: ["http://127.0.0.1:1"], name: "down-service", endpoints: ["grpc://127.0.0.1:9000"] }));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain("cannot register /microservices/down-service/");
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it("fails within its deadline against an etcd that never answers, and lets the process exit by itself", async () => {
    // accepts the connections and holds them, as a hung etcd does
    const held: Socket[] = [];
    const blackHole = createServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
    try {
      const child = runFixture("register-unanswered.ts", [`http://127.0.0.1:${(blackHole.address() as AddressInfo).port}`]);
      children.push(child);
      expect(await child.line()).toBe(`rejected ${Code.Unavailable}`);
      const rejectedAt = Date.now();
      expect(held.length).toBeGreaterThan(0);
      expect(await child.exited(10_000)).toBe(0);
      expect(Date.now() - rejectedAt).toBeLessThan(3_000);
    } finally {
      held.forEach((socket) => socket.destroy());
      blackHole.close();
    }
  });

  it("comes back by itself after its lease is revoked", async () => {
    const a = await server();
    const events: RegistrationEvent[] = [];
    const registration = await register({ name: "revoke-service", endpoints: [`grpc://${a.address}`], ttlSeconds: 2, onEvent: (event) => events.push(event) });
    const transport = balanced("revoke-service", etcdDiscovery({ endpoints: [etcd.endpoint], ttlMs: 50 }));
    expect(await servedBy(transport)).toBe(a.address);
    const first = (await readKey(etcd.endpoint, registration.key))!;

    await revokeLease(etcd.endpoint, first.lease);
    const again = await eventually(async () => {
      const stored = await readKey(etcd.endpoint, registration.key);
      return stored !== undefined && stored.lease !== first.lease ? stored : undefined;
    }, "the key under a new lease");
    expect(again.value).toBe(first.value);
    expect(events.map((event) => event.type)).toEqual(["registered", "lease_lost", "registered"]);
    expect(events[2]).toMatchObject({ again: true });
    await eventually(async () => ((await servedBy(transport)) === a.address ? true : undefined), "calls to reach it again");
  });

  it("leaves within its TTL when its process is killed", async () => {
    const survivor = await server();
    await register({ name: "killed-service", endpoints: [`grpc://${survivor.address}`] });
    const child = runFixture("registered-server.ts", [etcd.endpoint, "killed-service", "1"]);
    children.push(child);
    const [, key, address] = (await child.line()).split(" ");
    const transport = balanced("killed-service", etcd3Discovery({ client, ttlMs: 60_000 }));
    await eventually(async () => ((await servedBy(transport)) === address ? true : undefined), "a call to reach the child's server");

    await child.kill();
    const killedAt = Date.now();
    await eventually(async () => ((await readKey(etcd.endpoint, key!)) === undefined ? true : undefined), "the key to expire with its lease");
    expect(Date.now() - killedAt).toBeLessThan(5_000);
    // the watch tells the balancer, not the 60 s TTL
    await eventually(async () => (await onlyServedBy(transport, survivor.address)) || undefined, "the killed server to leave the balancer", 2_000);
  });

  it("made from URLs, closes its own client at deregister(): the process exits by itself", async () => {
    const child = runFixture("registered-server.ts", [etcd.endpoint, "exit-service", "15", "deregister"]);
    children.push(child);
    const [, key] = (await child.line()).split(" ");
    expect(await child.line()).toBe("deregistered");
    expect(await child.exited()).toBe(0);
    expect(child.stderr()).toBe("");
    expect(await readKey(etcd.endpoint, key!)).toBeUndefined();
  });

  it("is in etcd again after an etcd restart, and kept alive there", async () => {
    const a = await server();
    const events: RegistrationEvent[] = [];
    const ttlSeconds = 2;
    const registration = await register({ name: "restart-service", endpoints: [`grpc://${a.address}`], ttlSeconds, onEvent: (event) => events.push(event) });
    await etcd.restart();
    const transport = balanced("restart-service", etcdDiscovery({ endpoints: [etcd.endpoint], ttlMs: 50 }));
    await eventually(async () => ((await servedBy(transport)) === a.address ? true : undefined), "calls to reach it after the restart", 20_000);
    // not just surviving: two TTLs later the key is there under a live lease. It
    // may be a new one: etcd3's circuit breaker can hold keepalives back longer
    // than a 2 s TTL after a restart, and the lost lease is then replaced.
    const backAt = Date.now();
    await eventually(async () => (Date.now() - backAt > 2 * ttlSeconds * 1_000 ? true : undefined), "two TTLs to pass");
    await eventually(async () => {
      const stored = await readKey(etcd.endpoint, registration.key);
      return stored !== undefined && (await grantedTtl(etcd.endpoint, stored.lease)) === ttlSeconds ? true : undefined;
    }, "the key under a live lease");
    expect(events.at(-1)?.type).toBe("registered");
  });
});
