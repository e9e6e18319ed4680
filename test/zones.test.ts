// Zone priority against a real fleet: three zones of three servers each in a
// process of their own (test/fixtures/port-fleet.ts), registered in a real
// etcd with their zone in the kratos metadata, called through
// nodeHttp2Transport() by a client in zone az1. What a user cares about:
// calls stay in the caller's zone (no cross-zone traffic, no cross-zone bill)
// while it is healthy enough; when it is not, the share Envoy's
// overprovisioning factor (1.4) leaves there stays, the rest spills evenly
// over the other zones, and no call is lost to the failure beyond the few
// that found it.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createBalancedTransport, etcdDiscovery, type BalancedTransport, type BalancerEvent } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { callMany, growth, keepCalling, sum, sumOf } from "./fixtures/fleet-calls.js";
import { registerFleet, startPortFleet, type FleetCounts, type FleetInstance, type PortFleet } from "./fixtures/port-fleet-control.js";
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

/** Starts one server per entry of `metadata` and registers each under `service` with that metadata. */
async function fleetOf(service: string, metadata: readonly FleetInstance["metadata"][]): Promise<PortFleet> {
  const fleet = await startPortFleet(metadata.length);
  fleets.push(fleet);
  await registerFleet(etcd.endpoint, service, fleet.addresses.map((address, i) => ({ address, metadata: metadata[i] })));
  return fleet;
}

function balanced(service: string, options: Partial<Parameters<typeof createBalancedTransport>[0]> = {}) {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint] }),
    transport: nodeHttp2Transport(),
    ...options,
  });
  transports.push(transport);
  return transport;
}

const zones = ["az1", "az2", "az3"] as const;

/**
 * 3 zones × 3 servers, each zone in a process of its own (so that a zone can
 * go down at once): the addresses of each zone, and the counts of all.
 */
async function threeZones(service: string) {
  const [az1, az2, az3] = await Promise.all(zones.map(() => startPortFleet(3)));
  fleets.push(az1!, az2!, az3!);
  await registerFleet(etcd.endpoint, service, [az1!, az2!, az3!].flatMap((fleet, z) => fleet.addresses.map((address) => ({ address, metadata: { zone: zones[z]! } }))));
  const counts = async (): Promise<FleetCounts> => {
    const all = await Promise.all([az1!, az2!, az3!].map((fleet) => fleet.counts()));
    return { connections: Object.assign({}, ...all.map((c) => c.connections)), calls: Object.assign({}, ...all.map((c) => c.calls)) };
  };
  return { zone: { az1: az1!, az2: az2!, az3: az3! }, counts, all: [az1!, az2!, az3!].flatMap((f) => f.addresses), az1: az1!.addresses, az2: az2!.addresses, az3: az3!.addresses };
}

const share = (part: number, whole: number) => Math.round((part / whole) * 1000) / 1000;

describe("a client in zone az1 of a fleet in 3 zones × 3 instances", () => {
  it("sends every call to az1 while its instances are healthy", async () => {
    const { counts, az1 } = await threeZones("zones-healthy-service");
    const transport = balanced("zones-healthy-service", { zone: "az1" });
    const { served, failed } = await callMany(transport, 600, 10);
    expect(failed).toEqual([]);
    expect(sum(served)).toBe(600);
    expect(sumOf(served, az1)).toBe(600);
    // as the servers saw it: no attempt crossed the zone, round robin within it
    const { calls, connections } = await counts();
    expect(calls).toEqual(Object.fromEntries(az1.map((address) => [address, 200])));
    expect(Object.keys(connections).sort()).toEqual([...az1].sort());
    console.log(`3 zones × 3, all healthy: ${sumOf(served, az1)} of 600 calls in az1`);
  });

  it("spills about 1 − 2/3 × 1.4 (7 %) of the calls, evenly over az2 and az3 without a subset, once one az1 instance is ejected for answering Unavailable", async () => {
    const { zone, counts, all, az1, az2, az3 } = await threeZones("zones-one-failing-service");
    const recorder = eventRecorder();
    const transport = balanced("zones-one-failing-service", { zone: "az1", subset: false, onEvent: recorder.onEvent });
    expect((await callMany(transport, 60, 5)).failed).toEqual([]);

    // it fails while calls go on: after 5 consecutive failures it is ejected
    const failing = az1[0]!;
    await zone.az1.fail([failing]);
    const ejected = recorder.next("peer_ejected");
    const traffic = keepCalling(transport, 5);
    expect(await ejected).toEqual(expect.objectContaining({ address: failing, reason: "consecutive_failures" }));
    const detecting = await traffic.stop();
    // its Unavailable answers are resent to another peer (GetUser has no side effects)
    expect(detecting.failed.length).toBeLessThanOrEqual(2);

    const before = await counts();
    const calls = 3_000;
    const { served, failed } = await callMany(transport, calls, 10);
    const after = await counts();
    expect(failed).toEqual([]);
    expect(sum(served)).toBe(calls);
    const local = share(sumOf(served, az1), calls);
    const spilled = sumOf(served, [...az2, ...az3]);
    // 2 of 3 healthy × 1.4 = 93.3 % stays; σ of the share over 3,000 calls is 0.5 %
    expect(local).toBeGreaterThanOrEqual(0.88);
    expect(local).toBeLessThanOrEqual(0.98);
    // about half of the ~200 spilled calls on each (σ ≈ 3.5 %: the spill group's turns interleave with the local group's)
    expect(share(sumOf(served, az2), spilled)).toBeGreaterThanOrEqual(0.35);
    expect(share(sumOf(served, az2), spilled)).toBeLessThanOrEqual(0.65);
    // the ejected one got no call at all, and every other instance took some
    const attempts = growth(before.calls, after.calls);
    expect(attempts[failing]).toBeUndefined();
    expect(Object.keys(attempts).sort()).toEqual(all.filter((address) => address !== failing).sort());
    expect(transport.stats().find((s) => s.address === failing)).toEqual(expect.objectContaining({ ejected: true }));
    // with the default subset of 25, a client spills to only as many of the others as the spill needs: ⌈25 × 0.067⌉ = 2
    const subsettedEvents = eventRecorder();
    const subsetted = balanced("zones-one-failing-service", { zone: "az1", onEvent: subsettedEvents.onEvent });
    const failingOut = subsettedEvents.next("peer_ejected");
    const first = await callMany(subsetted, 200, 5); // it finds the failing instance too, and ejects it
    await failingOut;
    const again = await callMany(subsetted, calls, 10);
    expect(first.failed.length + again.failed.length).toBeLessThanOrEqual(2);
    const spilledTo = [...az2, ...az3].filter((address) => (again.served[address] ?? 0) > 0);
    expect(spilledTo).toHaveLength(2);
    expect(share(sumOf(again.served, az1), calls)).toBeGreaterThanOrEqual(0.88);
    console.log(
      `3 zones × 3, 1 az1 instance ejected: local share ${local} of ${calls} calls; spilled ${spilled} ` +
        `(az2 ${sumOf(served, az2)}, az3 ${sumOf(served, az3)}); ${detecting.failed.length} of ${sum(detecting.served) + detecting.failed.length} failed while it was detected`,
      detecting.failed,
    );
  });

  it("sends every call to az2 and az3 once all of az1 is down; only calls in flight at the crash can fail", async () => {
    const { zone, az1, az2, az3 } = await threeZones("zones-local-down-service");
    // how many calls had started when the transport had seen each of az1 go: those may meet the crash
    let traffic: ReturnType<typeof keepCalling> | undefined;
    let startedBeforeAllOut: number | undefined;
    const out = new Set<string>();
    const recorder = eventRecorder();
    const onEvent = (event: BalancerEvent) => {
      recorder.onEvent(event);
      if (event.type === "peer_ejected" && az1.includes(event.address) && out.add(event.address).size === az1.length) {
        startedBeforeAllOut ??= traffic?.started();
      }
    };
    const transport = balanced("zones-local-down-service", { zone: "az1", onEvent });
    expect(sumOf((await callMany(transport, 60, 5)).served, az1)).toBe(60);

    // the zone goes down at once (its process is SIGKILLed) while 5 calls at a time go on
    const concurrency = 5;
    traffic = keepCalling(transport, concurrency);
    await traffic.more(100);
    const beforeCrash = traffic.started();
    const underWayAtCrash = new Set(traffic.underWay());
    await zone.az1.kill();
    await traffic.more(300);
    const during = await traffic.stop();
    // A call in flight on a dying instance is resent (GetUser has no side effects), but its
    // second attempt may meet another dying one. No call started after the transport saw the
    // whole zone go fails, nor any started before the crash but the ones then under way.
    expect(startedBeforeAllOut).toBeDefined();
    for (const call of during.failedCalls) {
      expect(call >= beforeCrash || underWayAtCrash.has(call)).toBe(true);
      expect(call).toBeLessThan(startedBeforeAllOut!);
    }
    for (const message of during.failed) {
      expect(message).toMatch(/^\[unavailable\]/);
    }

    const { served, failed } = await callMany(transport, 1_200, 10);
    expect(failed).toEqual([]);
    expect(sumOf(served, az1)).toBe(0);
    // spread over the 6 instances of the other zones alike (round robin: 200 each)
    for (const address of [...az2, ...az3]) {
      expect(served[address]).toBeGreaterThanOrEqual(180);
      expect(served[address]).toBeLessThanOrEqual(220);
    }
    // only az1 was taken out
    expect([...new Set(recorder.events.flatMap((e) => (e.type === "peer_ejected" ? [e.address] : [])))].sort()).toEqual([...az1].sort());
    const stats = transport.stats();
    for (const address of [...az2, ...az3]) {
      expect(stats.find((s) => s.address === address)).toEqual(expect.objectContaining({ ejected: false, failures: 0 }));
    }
    console.log(
      `3 zones × 3, az1 down: ${sumOf(served, az1)} of ${sum(served)} calls local afterwards (az2 ${sumOf(served, az2)}, az3 ${sumOf(served, az3)}); ` +
        `${during.failed.length} of ${sum(during.served) + during.failed.length} calls failed around the crash ` +
        `(calls ${during.failedCalls.join(", ")}; crash at call ${beforeCrash}, whole zone seen out at call ${startedBeforeAllOut})`,
      during.failed,
    );
  });
});

describe("an instance's zone", () => {
  it("is never the caller's when the instance registered none: such instances only take calls the caller's zone cannot", async () => {
    const metadata: FleetInstance["metadata"][] = [{ zone: "az1" }, { zone: "az1" }, null, {}, { region: "az1" }];
    const fleet = await fleetOf("zoneless-service", metadata);
    const [local1, local2, ...zoneless] = fleet.addresses;
    const transport = balanced("zoneless-service", { zone: "az1" });
    const { served, failed } = await callMany(transport, 400, 10);
    expect(failed).toEqual([]);
    expect(served).toEqual({ [local1!]: 200, [local2!]: 200 });

    // a caller in a zone no instance is in spreads over all of them, zoneless ones included
    const elsewhere = balanced("zoneless-service", { zone: "az9" });
    const spread = await callMany(elsewhere, 500, 10);
    expect(spread.failed).toEqual([]);
    expect(Object.keys(spread.served).sort()).toEqual([local1!, local2!, ...zoneless].sort());
    expect(sumOf(spread.served, zoneless)).toBe(300);
  });

  it("is read from the metadata key named by zoneKey", async () => {
    // each instance carries both keys, with different zones in them
    const metadata = [
      ...Array.from({ length: 3 }, () => ({ az: "az1", zone: "az2" })),
      ...Array.from({ length: 3 }, () => ({ az: "az2", zone: "az1" })),
    ];
    const fleet = await fleetOf("zone-key-service", metadata);
    const byAz = fleet.addresses.slice(0, 3);
    const byZone = fleet.addresses.slice(3);

    const az = await callMany(balanced("zone-key-service", { zone: "az1", zoneKey: "az" }), 300, 10);
    expect(az.failed).toEqual([]);
    expect(sumOf(az.served, byAz)).toBe(300);

    const zone = await callMany(balanced("zone-key-service", { zone: "az1" }), 300, 10);
    expect(zone.failed).toEqual([]);
    expect(sumOf(zone.served, byZone)).toBe(300);
  });
});
