// The pure stages between a snapshot's peers and the user's policy: the
// rendezvous ranking, the subset, health, zone priority, and the path that
// stacks them.
import { describe, expect, it } from "vitest";
import type { Peer } from "../src/index.js";
import { roundRobin } from "../src/balancer/round-robin.js";
import { healthOf } from "../src/pick/health.js";
import { PickPath } from "../src/pick/pick-path.js";
import { RendezvousRanking, rendezvousScore } from "../src/pick/rendezvous.js";
import { SlowStart, validSlowStart } from "../src/pick/slow-start.js";
import { takeSubset } from "../src/pick/subset.js";
import { fullyAvailable, localShare, splitByZone } from "../src/pick/zones.js";
import { OutlierDetection } from "../src/transport/outlier-detection.js";
import { Reachability } from "../src/transport/reachability.js";

const peer = (n: number, zone?: string): Peer =>
  ({ url: `http://10.${n >> 8}.${n & 255}.1:9000`, address: `10.${n >> 8}.${n & 255}.1:9000`, metadata: zone === undefined ? {} : { zone }, weight: 1 }) as unknown as Peer;
const peers = (count: number, from = 0, zone?: string) => Array.from({ length: count }, (_, i) => peer(from + i, zone));
const urls = (list: readonly Peer[]) => list.map((p) => p.url);

describe("rendezvousScore", () => {
  it("is the same for the same address and seed, and differs across seeds", () => {
    expect(rendezvousScore("http://10.0.0.1:9000", 7)).toBe(rendezvousScore("http://10.0.0.1:9000", 7));
    expect(rendezvousScore("http://10.0.0.1:9000", 7)).not.toBe(rendezvousScore("http://10.0.0.1:9000", 8));
    expect(Number.isSafeInteger(rendezvousScore("x", 0xffffffff))).toBe(true);
  });

  it("puts each of 300 instances first for about 1 in 300 of 30,000 seeds", () => {
    const fleet = urls(peers(300));
    const firsts = new Map<string, number>();
    for (let seed = 0; seed < 30_000; seed++) {
      let best = "";
      let bestScore = -1;
      for (const url of fleet) {
        const score = rendezvousScore(url, seed);
        if (score > bestScore) [best, bestScore] = [url, score];
      }
      firsts.set(best, (firsts.get(best) ?? 0) + 1);
    }
    // 100 expected each; a uniform hash stays within ± 50 % for every instance (p ≈ 1e-5 each)
    expect(firsts.size).toBe(300);
    expect(Math.max(...firsts.values())).toBeLessThan(150);
    expect(Math.min(...firsts.values())).toBeGreaterThan(50);
  });
});

describe("RendezvousRanking", () => {
  it("changes at most one member of a 25-subset when one instance joins or leaves, for any seed", () => {
    const fleet = peers(200);
    for (let seed = 0; seed < 200; seed++) {
      const before = new Set(urls(new RendezvousRanking(seed).rank(fleet).slice(0, 25)));
      const leaving = fleet[seed % fleet.length]!;
      const left = urls(new RendezvousRanking(seed).rank(fleet.filter((p) => p !== leaving)).slice(0, 25));
      expect(left.filter((url) => !before.has(url)).length).toBeLessThanOrEqual(1);
      const joined = urls(new RendezvousRanking(seed).rank([...fleet, peer(1_000)]).slice(0, 25));
      expect(joined.filter((url) => !before.has(url)).length).toBeLessThanOrEqual(1);
    }
  });

  it("returns the same ranking while the peers array is the same, whatever their order", () => {
    const ranking = new RendezvousRanking(42);
    const fleet = peers(50);
    const order = ranking.rank(fleet);
    expect(ranking.rank(fleet)).toBe(order);
    expect(urls(ranking.rank([...fleet].reverse()))).toEqual(urls(order));
  });
});

describe("takeSubset", () => {
  const ranked = peers(6);
  it("takes the first `size` usable peers, and lists the members they stand in for", () => {
    const [a, b, c, d, e] = ranked;
    const usable = ranked.filter((p) => p !== b && p !== c); // b and c out of order
    const subset = takeSubset(ranked, usable, 3);
    expect(subset.chosen).toEqual([a, d, e]);
    expect(subset.members).toEqual([a, b, c, d, e]);
  });

  it("keeps every peer a member when no more than `size` are usable", () => {
    const subset = takeSubset(ranked, ranked.slice(0, 2), 3);
    expect(subset.chosen).toEqual(ranked.slice(0, 2));
    expect(subset.members).toBe(ranked);
  });
});

describe("healthOf", () => {
  it("leaves out unreachable peers whatever their number, and keeps them all when none is reachable", () => {
    const group = peers(4);
    const reachability = new Reachability(() => 0.5);
    for (const p of group.slice(0, 3)) reachability.unreached(p, 0);
    expect(healthOf(group, undefined, reachability, true)).toEqual({ usable: [group[3]], healthy: 1, noneReachable: false });
    reachability.unreached(group[3]!, 0);
    expect(healthOf(group, undefined, reachability, true)).toEqual({ usable: group, healthy: 0, noneReachable: true });
  });

  it("leaves out ejected peers down to the panic threshold, then spreads over every reachable one", () => {
    const group = peers(4);
    const detection = new OutlierDetection({ maxEjectionPercent: 100, consecutiveFailures: 1 });
    const reachability = new Reachability();
    detection.record(group[0]!, "failed", 0, 4);
    expect(healthOf(group, detection, reachability, true)).toEqual({ usable: group.slice(1), healthy: 3, noneReachable: false });
    detection.record(group[1]!, "failed", 0, 4);
    detection.record(group[2]!, "failed", 0, 4); // 1 of 4 healthy: below 50 %
    expect(healthOf(group, detection, reachability, true)).toEqual({ usable: group, healthy: 1, noneReachable: false });
  });
});

describe("zones", () => {
  it("has the zones fully available while Σ min(1, 1.4 × healthy ÷ total) ≥ 1", () => {
    expect(fullyAvailable([{ healthy: 1, total: 3 }, { healthy: 6, total: 6 }])).toBe(true);
    expect(fullyAvailable([{ healthy: 1, total: 3 }, { healthy: 2, total: 6 }])).toBe(false); // 0.47 + 0.47
    expect(fullyAvailable([{ healthy: 0, total: 0 }, { healthy: 5, total: 6 }])).toBe(true);
  });

  it("puts a peer without the zone key in no zone, never the local one", () => {
    const [a, b, c] = [peer(1, "az1"), peer(2, "az2"), peer(3)];
    expect(splitByZone([a, b, c], { zone: "az1", zoneKey: "zone" })).toEqual({ local: [a], others: [b, c] });
    expect(splitByZone([a, b, c], { zone: "az1", zoneKey: "az" })).toEqual({ local: [], others: [a, b, c] });
  });

  it("keeps every call local down to 72 % healthy, then that share × 1.4, and none with no healthy local peer", () => {
    const others = { usable: [], healthy: 6, noneReachable: false };
    const local = (healthy: number, total = 3) => ({ usable: [], healthy, total, noneReachable: false });
    expect(localShare(local(3), others)).toBe(1);
    expect(localShare(local(8, 10), others)).toBe(1);
    expect(localShare(local(2), others)).toBeCloseTo(0.933, 3);
    expect(localShare(local(1), others)).toBeCloseTo(0.467, 3);
    expect(localShare(local(0), others)).toBe(0);
    expect(localShare(local(0, 0), others)).toBe(0);
  });

  it("keeps the calls local when no other zone has a healthy peer, unless the local zone cannot be reached and another can", () => {
    const none = { usable: [], healthy: 0, noneReachable: false };
    expect(localShare({ usable: [], healthy: 1, total: 3, noneReachable: false }, none)).toBe(1);
    expect(localShare({ usable: [], healthy: 0, total: 3, noneReachable: true }, none)).toBe(0);
    expect(localShare({ usable: [], healthy: 0, total: 3, noneReachable: true }, { ...none, noneReachable: true })).toBe(1);
  });
});

describe("SlowStart", () => {
  const request = { method: {} as never, header: new Headers(), contextValues: {} as never, attempt: 0 };

  it("gives a ramping peer max(minWeightPercent, (t / window)^(1 / aggression)) of its share, and all of it after the window", () => {
    const [old, fresh] = peers(2);
    const linear = new SlowStart({ windowMs: 1_000 });
    linear.look([old!], 0);
    linear.look([old!, fresh!], 0);
    expect([0, 50, 500, 999, 1_000].map((t) => linear.factor(fresh!, t))).toEqual([0.1, 0.1, 0.5, 0.999, 1]);
    expect(linear.factor(old!, 0)).toBe(1);
    const aggressive = new SlowStart({ windowMs: 1_000, aggression: 2, minWeightPercent: 0 });
    aggressive.look([], 0);
    aggressive.look([fresh!], 0);
    expect(aggressive.factor(fresh!, 250)).toBeCloseTo(0.5, 9);
  });

  it("does not ramp the peers of the first look, and ramps one that comes back into rotation", () => {
    const group = peers(3);
    const slowStart = new SlowStart({ windowMs: 1_000 });
    slowStart.look(group, 0);
    expect(group.map((p) => slowStart.factor(p, 0))).toEqual([1, 1, 1]);
    slowStart.look(group.slice(1), 10); // the first one ejected
    slowStart.look(group, 20); // … and back
    expect(slowStart.factor(group[0]!, 520)).toBe(0.5);
    expect(slowStart.factor(group[1]!, 520)).toBe(1);
  });

  it("weighs any policy's picks by the ramp, and hands back the policy's own picker once no peer ramps", () => {
    const group = peers(4);
    const slowStart = new SlowStart({ windowMs: 1e9 });
    slowStart.look(group.slice(1), 0);
    slowStart.look(group, performance.now() - 5e8); // group[0] halfway through its ramp
    const inner = roundRobin().build(group);
    const pick = slowStart.wrap(inner, group, performance.now());
    let ramping = 0;
    for (let i = 0; i < 40_000; i++) if (pick(request).peer === group[0]) ramping++;
    expect(ramping / 40_000).toBeCloseTo(0.5 / 3.5, 2); // its weight 0.5 against three of 1
    expect(slowStart.wrap(inner, group.slice(1), performance.now())).toBe(inner);
  });

  it("refuses a window that is not positive, a share outside 0–100 %, and an aggression that is not positive", () => {
    expect(() => validSlowStart({ windowMs: 0 })).toThrow(/windowMs > 0/);
    expect(() => validSlowStart({ windowMs: 1_000, minWeightPercent: 120 })).toThrow(/minWeightPercent in 0–100/);
    expect(() => validSlowStart({ windowMs: 1_000, aggression: 0 })).toThrow(/aggression > 0/);
  });
});

describe("PickPath", () => {
  const request = { method: {} as never, header: new Headers(), contextValues: {} as never, attempt: 0 };
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
    expect(path.over(all, 0).members).toEqual(all); // the spill-over zones are in play now

    detection.record(all[1]!, "failed", 0, 9); // 1 of 3 local: below the panic threshold, but the other zones can take the calls
    const ejected = new Set([all[0]!.url, all[1]!.url]);
    const twoOut = served(path, all, 30_000);
    expect(localCalls(twoOut) / 30_000).toBeCloseTo(0.467, 1);
    expect([...twoOut.keys()].filter((url) => ejected.has(url))).toEqual([]);

    detection.record(all[2]!, "failed", 0, 9); // no healthy local peer: all spill
    expect(localCalls(served(path, all, 3_000))).toBe(0);
    expect(path.over(all, 0).members).toEqual(all); // the caller's zone stays in stats(), out as it is
  });

  it("never takes more than `size` peers per zone priority, the local ones first", () => {
    const all = [...peers(30, 0, "az1"), ...peers(30, 100, "az2")];
    const path = new PickPath({ balancer: roundRobin(), subsetSize: 25, zones: { zone: "az1", zoneKey: "zone" } }, undefined, new Reachability());
    const result = path.over(all, 0);
    expect(result.peers).toHaveLength(25);
    expect(result.peers.every((p) => p.metadata["zone"] === "az1")).toBe(true);
  });
});
