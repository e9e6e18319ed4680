// The stages stacked: subset with stand-ins, zone priority with spill-over, and a fuzz of path states.
import { describe, expect, it } from "vitest";
import { roundRobin } from "../../src/balancer/round-robin.js";
import { PickPath } from "../../src/pick/pick-path.js";
import { OutlierDetection } from "../../src/transport/outlier-detection.js";
import { Reachability } from "../../src/transport/reachability.js";
import type { Peer } from "../../src/index.js";
import { peers, urls, request } from "./peers.js";

describe("PickPath", () => {
  const served = (path: PickPath, all: readonly Peer[], calls: number) => {
    const counts = new Map<string, number>();
    for (let i = 0; i < calls; i++) {
      const url = path.over(all, 0).pick(request).peer.url;
      counts.set(url, (counts.get(url) ?? 0) + 1);
    }
    return counts;
  };

  it("balances over `size` peers, stands the next-ranked peer in for an ejected one, and keeps the others' picker order", () => {
    const all = peers(40);
    const detection = new OutlierDetection({ consecutiveFailures: 1 });
    const path = new PickPath({ balancer: roundRobin(), subsetSize: 5, zones: undefined, seed: 1 }, detection, new Reachability());
    const first = path.over(all, 0);
    expect(first.peers).toHaveLength(5);
    expect(first.members).toHaveLength(5);
    expect(path.over(all, 0)).toBe(first); // nothing changed: nothing rebuilt

    const out = first.peers[2]!;
    detection.record(out, "failed", 0, 40);
    const second = path.over(all, 0);
    expect(second.peers).toHaveLength(5);
    expect(second.peers).not.toContain(out);
    expect(second.members).toHaveLength(6); // the ejected member still shows, beside its stand-in
    expect(second.members).toContain(out);
    expect(new Set(served(path, all, 100).keys())).toEqual(new Set(urls(second.peers)));
  });

  it("keeps calls in the caller's zone while it is healthy, and spills over in proportion once it is not", () => {
    const all = [...peers(3, 0, "az1"), ...peers(3, 10, "az2"), ...peers(3, 20, "az3")];
    const detection = new OutlierDetection({ consecutiveFailures: 1, maxEjectionPercent: 100 });
    const path = new PickPath({ balancer: roundRobin(), subsetSize: 25, zones: { zone: "az1", zoneKey: "zone" } }, detection, new Reachability());
    const localUrls = new Set(urls(all.slice(0, 3)));
    const localCalls = (counts: Map<string, number>) => [...counts].filter(([url]) => localUrls.has(url)).reduce((sum, [, n]) => sum + n, 0);
    expect(localCalls(served(path, all, 3_000))).toBe(3_000);
    expect(path.over(all, 0).members).toEqual(all.slice(0, 3));

    detection.record(all[0]!, "failed", 0, 9); // 2 of 3 local: 93 % stays
    const spilled = served(path, all, 30_000);
    expect(localCalls(spilled) / 30_000).toBeCloseTo(0.933, 1);
    expect(spilled.has(all[0]!.url)).toBe(false);
    // the spill-over zones are in play now, with a subset as large as the spill needs: ⌈25 × 0.067⌉ = 2
    const members = path.over(all, 0).members;
    expect(members.slice(0, 3)).toEqual(all.slice(0, 3));
    expect(members).toHaveLength(5);

    detection.record(all[1]!, "failed", 0, 9); // 1 of 3 local: below the panic threshold, but the other zones can take the calls
    const ejected = new Set([all[0]!.url, all[1]!.url]);
    const twoOut = served(path, all, 30_000);
    expect(localCalls(twoOut) / 30_000).toBeCloseTo(0.467, 1);
    expect([...twoOut.keys()].filter((url) => ejected.has(url))).toEqual([]);

    detection.record(all[2]!, "failed", 0, 9); // no healthy local peer: all spill
    expect(localCalls(served(path, all, 3_000))).toBe(0);
    expect(path.over(all, 0).members).toEqual(all); // the caller's zone stays in stats(), out as it is
  });

  it("draws the other zones' subset only as large as the spill-over needs", () => {
    const all = [...peers(10, 0, "az1"), ...peers(40, 100, "az2")];
    const detection = new OutlierDetection({ consecutiveFailures: 1, maxEjectionPercent: 100 });
    const path = new PickPath({ balancer: roundRobin(), subsetSize: 10, zones: { zone: "az1", zoneKey: "zone" } }, detection, new Reachability());
    for (const p of all.slice(0, 4)) detection.record(p, "failed", 0, 50); // 6 of 10 local: 84 % stays, 16 % spills
    const result = path.over(all, 0);
    const spill = result.peers.filter((p) => p.metadata["zone"] === "az2");
    expect(spill).toHaveLength(2); // ⌈10 × 0.16⌉
    expect(result.peers).toHaveLength(8);
  });

  it("never takes more than `size` peers per zone priority, the local ones first", () => {
    const all = [...peers(30, 0, "az1"), ...peers(30, 100, "az2")];
    const path = new PickPath({ balancer: roundRobin(), subsetSize: 25, zones: { zone: "az1", zoneKey: "zone" } }, undefined, new Reachability());
    const result = path.over(all, 0);
    expect(result.peers).toHaveLength(25);
    expect(result.peers.every((p) => p.metadata["zone"] === "az1")).toBe(true);
  });
});

describe("PickPath under any state", () => {
  it("always hands up a picker that returns one of its peers: 20,000 random fleets, zones, subsets, ejections and reachability", () => {
    let seed = 12345;
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let run = 0; run < 20_000; run++) {
      const count = 1 + Math.floor(random() * 8);
      const all: Peer[] = peers(count).map((p) => ({ ...p, metadata: random() < 0.7 ? { zone: `az${1 + Math.floor(random() * 3)}` } : {} }) as Peer);
      const detection = new OutlierDetection({ consecutiveFailures: 1, maxEjectionPercent: 100, panicThresholdPercent: random() < 0.3 ? 0 : 50 });
      const reachability = new Reachability(() => 0.5);
      for (const p of all) {
        const state = random();
        if (state < 0.25) reachability.unreached(p, 0);
        else if (state < 0.5) detection.record(p, "failed", 0, count);
      }
      const zones = random() < 0.7 ? { zone: "az1", zoneKey: "zone" } : undefined;
      const subsetSize = random() < 0.5 ? undefined : 1 + Math.floor(random() * 4);
      const result = new PickPath({ balancer: roundRobin(), subsetSize, zones, seed: run }, detection, reachability).over(all, 0);
      const state = JSON.stringify({ run, count, zones, subsetSize });
      expect(typeof result.pick, state).toBe("function");
      for (let i = 0; i < 4; i++) expect(all, state).toContain(result.pick(request).peer);
      expect(result.members.length, state).toBeGreaterThan(0);
    }
  });
});

describe("PickPath.follow", () => {
  const keyed = (n: number, zone: string): Peer => ({ ...peers(1, n, zone)[0]!, key: `/microservices/svc/i${String(n).padStart(5, "0")}` });
  const fleetOf = (ns: readonly number[]) => ns.map((n) => keyed(n, `az${1 + (n % 3)}`));

  it("keeps the subsets as a fresh path would have them, change by change, members in key order", () => {
    for (const zones of [undefined, { zone: "az1", zoneKey: "zone" }]) {
      const options = { balancer: roundRobin(), subsetSize: 10, zones, seed: 5 };
      const path = new PickPath(options, undefined, new Reachability());
      let numbers = Array.from({ length: 400 }, (_, i) => i * 2);
      let all = fleetOf(numbers);
      path.follow(all, undefined);
      path.over(all, 0);
      for (let round = 0; round < 40; round++) {
        const gone = numbers[(round * 37) % numbers.length]!;
        const kept = all.filter((p) => p.key !== keyed(gone, "").key);
        const came = keyed(round * 2 + 1, `az${1 + (round % 3)}`); // odd: new
        const replaced = kept.map((p, i) => (i === round ? { ...p } : p)); // another object for one key
        const next = [...replaced, came].sort((a, b) => (a.key < b.key ? -1 : 1));
        const departed = [all.find((p) => p.key === keyed(gone, "").key)!, kept[round]!];
        path.follow(next, { from: all, departed, added: [replaced[round]!, came] });
        all = next;
        numbers = all.map((p) => Number(p.key.slice(-5)));
        const followed = path.over(all, 0);
        const fresh = new PickPath({ ...options, balancer: roundRobin() }, undefined, new Reachability()).over(all, 0);
        expect(followed.peers).toEqual(fresh.peers);
        expect(followed.members).toEqual(fresh.members);
        expect(followed.members.map((p) => p.key)).toEqual(followed.members.map((p) => p.key).sort());
      }
    }
  });

  it("ranks afresh after a change it cannot follow", () => {
    const path = new PickPath({ balancer: roundRobin(), subsetSize: 5, zones: undefined, seed: 2 }, undefined, new Reachability());
    const all = fleetOf([1, 2, 3, 4, 5, 6, 7, 8]);
    path.over(all, 0);
    const other = fleetOf([10, 11, 12, 13, 14, 15, 16, 17]);
    path.follow(other, { from: [], departed: [], added: [] }); // not from the peers it had
    const fresh = new PickPath({ balancer: roundRobin(), subsetSize: 5, zones: undefined, seed: 2 }, undefined, new Reachability()).over(other, 0);
    expect(path.over(other, 0).members).toEqual(fresh.members);
  });
});

describe("PickPath.follow with slow start", () => {
  it("ramps a peer the registry adds as a full look would, and nobody else", async () => {
    const { SlowStart } = await import("../../src/pick/slow-start.js");
    const keyed = (n: number): Peer => ({ ...peers(1, n)[0]!, key: `/microservices/svc/i${String(n).padStart(5, "0")}` });
    const slowStart = new SlowStart({ windowMs: 1_000 });
    const path = new PickPath({ balancer: roundRobin(), subsetSize: 5, zones: undefined, seed: 9, slowStart }, undefined, new Reachability());
    const all = Array.from({ length: 100 }, (_, i) => keyed(i * 2));
    path.over(all, 0);
    const came = keyed(51);
    const changed = { ...all[3]! };
    const next = [...all.slice(0, 3), changed, ...all.slice(4, 25), came, ...all.slice(25)];
    path.follow(next, { from: all, departed: [all[3]!], added: [changed, came] });
    path.over(next, 100);
    expect(slowStart.factor(came, 600)).toBe(0.5);
    expect(next.filter((p) => p !== came).every((p) => slowStart.factor(p, 600) === 1)).toBe(true);
  });
});
