// Subsetting against a real fleet: servers on thousands of loopback ports in a
// process of their own (test/fixtures/port-fleet.ts), registered in a real
// etcd as kratos registers them, called through nodeHttp2Transport(). What a
// user cares about: a client of a big fleet holds `subset.size` connections,
// not one per instance; a registry change or a dead member moves at most one
// member, and the others keep their connections and statistics.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, hashKey, type BalancedTransport, type BalancerEvent } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { deleteKey } from "../support/registry.js";
import { registerFleet, startPortFleet, type PortFleet } from "./fixtures/port-fleet-control.js";
import { callMany, growth, keepCalling, sum } from "./fixtures/fleet-calls.js";
import { eventRecorder } from "./helpers.js";

let etcd: EtcdServer;
const fleets: PortFleet[] = [];
const transports: BalancedTransport[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(fleets.splice(0).map((f) => f.close()));
});

afterAll(async () => {
  await etcd?.stop();
});

async function fleetOf(count: number): Promise<PortFleet> {
  const fleet = await startPortFleet(count);
  fleets.push(fleet);
  return fleet;
}

function balanced(service: string, options: Partial<Parameters<typeof createBalancedTransport>[0]> = {}, watch = false) {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint], watch }),
    transport: nodeHttp2Transport(),
    ...options,
  });
  transports.push(transport);
  return transport;
}

const sorted = (list: Iterable<string>) => [...list].sort();

describe("a client of 5,000 instances", () => {
  let fleet: PortFleet;
  const service = "huge-fleet-service";

  beforeAll(async () => {
    fleet = await startPortFleet(5_000);
    await registerFleet(etcd.endpoint, service, fleet.addresses.map((address) => ({ address })));
  }, 60_000);

  afterAll(async () => {
    await fleet?.close();
  });

  it("that called 10,000 times holds exactly 25 connections by default, to the 25 peers it lists", { timeout: 60_000 }, async () => {
    const before = await fleet.counts();
    const transport = balanced(service);
    const started = performance.now();
    const { served, failed } = await callMany(transport, 10_000, 50);
    const after = await fleet.counts();
    console.log(`5,000 instances, default subset: 10,000 calls in ${Math.round(performance.now() - started)} ms over ${Object.keys(served).length} peers`);

    expect(failed).toEqual([]);
    expect(sum(served)).toBe(10_000);
    const connections = growth(before.connections, after.connections);
    expect(Object.keys(served)).toHaveLength(25);
    expect(sum(connections)).toBe(25);
    expect(sorted(Object.keys(connections))).toEqual(sorted(Object.keys(served)));
    // the servers saw the same calls the client counted (no attempt went elsewhere)
    expect(growth(before.calls, after.calls)).toEqual(served);
    // round robin over the subset: 400 each
    for (const n of Object.values(served)) {
      expect(n).toBeGreaterThanOrEqual(380);
      expect(n).toBeLessThanOrEqual(420);
    }

    const peers = await transport.peers();
    expect(peers).toHaveLength(25);
    expect(sorted(peers.map((p) => p.address))).toEqual(sorted(Object.keys(served)));
    const stats = transport.stats();
    expect(stats).toHaveLength(25);
    expect(sorted(stats.map((s) => s.address))).toEqual(sorted(Object.keys(served)));
    expect(Object.fromEntries(stats.map((s) => [s.address, s.calls]))).toEqual(served);
    expect(stats.every((s) => s.failures === 0 && !s.ejected)).toBe(true);
  });

  it("with subset size 10 holds exactly 10 connections, and another client draws another subset", { timeout: 60_000 }, async () => {
    const first = balanced(service, { subset: { size: 10 } });
    const second = balanced(service, { subset: { size: 10 } });
    const subsets: string[][] = [];
    for (const transport of [first, second]) {
      const before = await fleet.counts();
      const { served, failed } = await callMany(transport, 2_000, 20);
      const after = await fleet.counts();
      expect(failed).toEqual([]);
      expect(Object.keys(served)).toHaveLength(10);
      const connections = growth(before.connections, after.connections);
      expect(sum(connections)).toBe(10);
      expect(sorted(Object.keys(connections))).toEqual(sorted(Object.keys(served)));
      expect(transport.stats()).toHaveLength(10);
      expect(await transport.peers()).toHaveLength(10);
      subsets.push(sorted(Object.keys(served)));
    }
    // a random seed per client: two clients of 5,000 instances practically never share a subset
    expect(subsets[0]).not.toEqual(subsets[1]);
    const shared = subsets[0]!.filter((address) => subsets[1]!.includes(address));
    expect(shared.length).toBeLessThanOrEqual(2);
  });
});

/** Adds the counts of `more` into `into`. */
function addInto(into: Record<string, number>, more: Record<string, number>) {
  for (const [address, n] of Object.entries(more)) {
    into[address] = (into[address] ?? 0) + n;
  }
}

/** Resolves with the first snapshot event (recorded or to come) that lists `instances` instances. */
function awaitSnapshot(recorder: ReturnType<typeof eventRecorder>, instances: number): Promise<BalancerEvent> {
  return new Promise((resolve) => {
    const check = () => {
      const found = recorder.events.find((e) => e.type === "snapshot" && e.instances === instances);
      found === undefined ? void recorder.next("snapshot").then(check) : resolve(found);
    };
    check();
  });
}

describe("a subset of 5 of 30 instances, following etcd by watch", () => {
  it("swaps exactly one member when a member deregisters: the 4 others keep their connections and counts; a non-member changes nothing", { timeout: 30_000 }, async () => {
    const service = "subset-watch-service";
    const fleet = await fleetOf(30);
    const keys = await registerFleet(etcd.endpoint, service, fleet.addresses.map((address) => ({ address })));
    const keyOf = (address: string) => keys[fleet.addresses.indexOf(address)]!;
    const recorder = eventRecorder();
    const transport = balanced(service, { subset: { size: 5 }, onEvent: recorder.onEvent }, true);
    const servedInAll: Record<string, number> = {};

    // 1. the calls spread over 5 peers, which are what peers() lists
    const first = await callMany(transport, 500, 10);
    addInto(servedInAll, first.served);
    expect(first.failed).toEqual([]);
    const members = sorted(Object.keys(first.served));
    expect(members).toHaveLength(5);
    expect(sorted((await transport.peers()).map((p) => p.address))).toEqual(members);
    const countsBefore = await fleet.counts();

    // 2. one member deregisters while calls go on
    const leaving = members[0]!;
    const traffic = keepCalling(transport, 5);
    await traffic.more(200);
    const seen = awaitSnapshot(recorder, 29);
    await deleteKey(etcd.endpoint, keyOf(leaving));
    await seen;
    await traffic.more(300); // calls after the change reached the transport
    const during = await traffic.stop();
    addInto(servedInAll, during.served);
    expect(during.failed).toEqual([]);
    const second = await callMany(transport, 500, 10);
    addInto(servedInAll, second.served);
    expect(second.failed).toEqual([]);
    const afterLeave = sorted(Object.keys(second.served));
    const survivors = members.filter((address) => address !== leaving);
    expect(afterLeave).toHaveLength(5);
    expect(afterLeave.filter((address) => members.includes(address))).toEqual(survivors);
    const standIn = afterLeave.find((address) => !members.includes(address))!;
    expect(sorted((await transport.peers()).map((p) => p.address))).toEqual(afterLeave);

    // the survivors accepted no new connection; the one that joined accepted one
    const countsAfter = await fleet.counts();
    const newConnections = growth(countsBefore.connections, countsAfter.connections);
    expect(newConnections).toEqual({ [standIn]: 1 });
    // their statistics were kept: every call they ever served is counted
    const stats = Object.fromEntries(transport.stats().map((s) => [s.address, s]));
    expect(sorted(Object.keys(stats))).toEqual(afterLeave);
    for (const address of afterLeave) {
      expect(stats[address]!.calls).toBe(servedInAll[address]);
    }
    for (const address of survivors) {
      expect(stats[address]!.calls).toBeGreaterThan(second.served[address]!); // not reset at the change
    }
    console.log(
      `subset 5 of 30: ${leaving} left, ${standIn} stood in; calls per member ${JSON.stringify(Object.values(stats).map((s) => s.calls))}; ` +
        `calls during the change ${sum(during.served)}`,
    );

    // 3. a non-member deregisters: nothing changes
    const outsider = fleet.addresses.find((address) => !members.includes(address) && address !== standIn)!;
    const countsBeforeOutsider = await fleet.counts();
    const statsBeforeOutsider = transport.stats();
    const seenAgain = awaitSnapshot(recorder, 28);
    await deleteKey(etcd.endpoint, keyOf(outsider));
    await seenAgain;
    const third = await callMany(transport, 500, 10);
    expect(third.failed).toEqual([]);
    expect(sorted(Object.keys(third.served))).toEqual(afterLeave);
    expect(growth(countsBeforeOutsider.connections, (await fleet.counts()).connections)).toEqual({});
    expect(transport.stats().map((s) => [s.address, s.calls - third.served[s.address]!])).toEqual(statsBeforeOutsider.map((s) => [s.address, s.calls]));
  });
});

describe("a subset member that dies", () => {
  it("is stood in for by one other peer while it is out: calls keep going to 5 healthy peers, none fails", { timeout: 30_000 }, async () => {
    const service = "subset-dead-member-service";
    const fleet = await fleetOf(30);
    await registerFleet(etcd.endpoint, service, fleet.addresses.map((address) => ({ address })));
    const recorder = eventRecorder();
    const transport = balanced(service, { subset: { size: 5 }, onEvent: recorder.onEvent });

    const first = await callMany(transport, 500, 10);
    expect(first.failed).toEqual([]);
    const members = sorted(Object.keys(first.served));
    expect(members).toHaveLength(5);
    const countsBefore = await fleet.counts();

    // it crashes while calls go on: it stays registered, as a crashed kratos instance until its lease expires
    const dead = members[0]!;
    const traffic = keepCalling(transport, 5);
    await traffic.more(200);
    const ejected = recorder.next("peer_ejected");
    await fleet.stop([dead]);
    expect(await ejected).toEqual(expect.objectContaining({ address: dead, reason: "unreachable" }));
    await traffic.more(500);
    const during = await traffic.stop();
    const after = await callMany(transport, 1_000, 10);

    const failed = [...during.failed, ...after.failed];
    expect(failed.length).toBeLessThanOrEqual(2);
    const servedAfter = sorted(Object.keys(after.served));
    const survivors = members.filter((address) => address !== dead);
    expect(servedAfter).toHaveLength(5);
    expect(servedAfter.filter((address) => members.includes(address))).toEqual(survivors);
    const standIn = servedAfter.find((address) => !members.includes(address))!;
    // one stand-in, not a new peer for each call: the survivors kept their connection, the stand-in made one
    expect(growth(countsBefore.connections, (await fleet.counts()).connections)).toEqual({ [standIn]: 1 });
    // round robin over the 5 healthy ones
    for (const n of Object.values(after.served)) {
      expect(n).toBeGreaterThanOrEqual(180);
      expect(n).toBeLessThanOrEqual(220);
    }

    // the dead member is listed, out, beside its stand-in
    const stats = transport.stats();
    expect(sorted(stats.map((s) => s.address))).toEqual(sorted([...members, standIn]));
    expect(stats.find((s) => s.address === dead)).toEqual(expect.objectContaining({ ejected: true }));
    expect(stats.find((s) => s.address === standIn)).toEqual(expect.objectContaining({ ejected: false, failures: 0 }));
    expect(stats.filter((s) => s.ejected)).toHaveLength(1);
    expect(sorted((await transport.peers()).map((p) => p.address))).toEqual(sorted([...members, standIn]));
    console.log(`subset 5 of 30, ${dead} died: ${failed.length} failed calls, ${standIn} stood in; ${JSON.stringify(stats.map((s) => [s.calls, s.failures, s.ejected]))}`);
  });
});

describe("ring_hash", () => {
  it("is never subset: 40 instances are all peers, every one gets keys, and two clients send each key to the same peer", { timeout: 30_000 }, async () => {
    const service = "ring-hash-fleet-service";
    const fleet = await fleetOf(40);
    await registerFleet(etcd.endpoint, service, fleet.addresses.map((address) => ({ address })));
    const first = balanced(service, { balancer: "ring_hash" });
    const second = balanced(service, { balancer: "ring_hash" });
    expect(await first.peers()).toHaveLength(40);
    expect(await second.peers()).toHaveLength(40);

    const ownerOf = async (transport: BalancedTransport) => {
      const users = createPeerClient(UserService, transport);
      const owners: string[] = [];
      for (let i = 0; i < 2_000; i += 50) {
        const batch = Array.from({ length: 50 }, (_, k) => users.getUser({ id: "1" }, { contextValues: createContextValues().set(hashKey, `user-${i + k}`), timeoutMs: 5_000 }));
        owners.push(...(await Promise.all(batch)).map((res) => res.message.servedBy));
      }
      return owners;
    };
    const before = await fleet.counts();
    const owners = await ownerOf(first);
    expect(new Set(owners).size).toBe(40);
    expect(await ownerOf(second)).toEqual(owners);
    // each client connected to every instance, once
    const connections = growth(before.connections, (await fleet.counts()).connections);
    expect(Object.keys(connections)).toHaveLength(40);
    expect(Object.values(connections).every((n) => n === 2)).toBe(true);
    expect(first.stats()).toHaveLength(40);
  });
});
