// Slow start on real servers and a real etcd watch: an instance registered
// after the transport's first snapshot is ramped in over the window, while
// the instances of the first snapshot get their full share from the start.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, staticDiscovery } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos, type Registration } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy, eventRecorder, rejection } from "./helpers.js";

let etcd: EtcdServer;
const servers: UserServer[] = [];
const registrations: Registration[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  servers.push(...(await Promise.all([1, 2, 3, 4].map(() => startUserServer()))));
});

afterAll(async () => {
  await Promise.all(registrations.map((r) => r.deregister()));
  await Promise.all(servers.map((s) => s.stop()));
  await etcd?.stop();
});

const register = async (i: number) =>
  registrations.push(await registerKratos(etcd.endpoint, { id: `ramp-${i}`, name: "ramp-service", version: "v1", metadata: null, endpoints: [`grpc://${servers[i]!.address}`] }));

describe("slowStart", () => {
  it("ramps in an instance registered later over the window, and gives the first snapshot's instances their share at once", { timeout: 30_000 }, async () => {
    const windowMs = 3_000;
    await Promise.all([0, 1, 2].map(register));
    const recorder = eventRecorder();
    const transport = createBalancedTransport({
      service: "ramp-service",
      discovery: etcdDiscovery({ endpoints: [etcd.endpoint], watch: true }),
      transport: nodeHttp2Transport(),
      slowStart: { windowMs },
      onEvent: recorder.onEvent,
    });
    try {
      const users = createPeerClient(UserService, transport);
      const first = await Promise.all(Array.from({ length: 300 }, async (_, i) => (await users.getUser({ id: String(i) })).peer.address));
      expect(Object.values(countBy(first))).toEqual([100, 100, 100]); // round_robin, unweighted: nobody ramps

      const seen = recorder.next("snapshot");
      await register(3);
      while ((await seen).instances !== 4) await recorder.next("snapshot");
      const newcomer = servers[3]!.address;
      // Calls, 4 at a time, until the window has passed; each noted with its time since the newcomer came in.
      const start = performance.now();
      const calls: { atMs: number; toNewcomer: boolean }[] = [];
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (performance.now() - start < windowMs * 1.4) {
            const { peer } = await users.getUser({ id: "x" });
            calls.push({ atMs: performance.now() - start, toNewcomer: peer.address === newcomer });
          }
        }),
      );
      const share = (from: number, to: number) => {
        const within = calls.filter((c) => c.atMs >= from * windowMs && c.atMs < to * windowMs);
        expect(within.length).toBeGreaterThan(100);
        return within.filter((c) => c.toNewcomer).length / within.length;
      };
      const early = share(0, 0.15); // weight ~0.1: ~3 % of calls
      const middle = share(0.45, 0.55); // weight 0.5: 0.5 / 3.5 = 14 %
      const after = share(1.05, 1.4); // full weight: 25 %
      console.log(`slow start (window ${windowMs} ms, ${calls.length} calls): newcomer's share ${(early * 100).toFixed(1)} % early, ${(middle * 100).toFixed(1)} % halfway, ${(after * 100).toFixed(1)} % after`);
      expect(early).toBeLessThan(0.08);
      expect(middle).toBeGreaterThan(0.08);
      expect(middle).toBeLessThan(0.21);
      expect(after).toBeGreaterThan(0.2);
      expect(after).toBeLessThan(0.3);
    } finally {
      await transport.close();
    }
  });

  it("is refused with ring_hash, and with a window that is not positive, naming the option", async () => {
    const make = (options: Partial<Parameters<typeof createBalancedTransport>[0]>) => async () =>
      createBalancedTransport({ service: "s", discovery: staticDiscovery(["grpc://127.0.0.1:1"]), transport: nodeHttp2Transport(), ...options });
    const ringHash = await rejection(make({ balancer: "ring_hash", slowStart: { windowMs: 1_000 } })());
    expect(ringHash.code).toBe(Code.InvalidArgument);
    expect(ringHash.message).toMatch(/slowStart does not apply to ring_hash/);
    const zero = await rejection(make({ slowStart: { windowMs: 0 } })());
    expect(zero.message).toMatch(/slowStart needs windowMs > 0/);
  });
});
