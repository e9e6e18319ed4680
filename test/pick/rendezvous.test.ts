// The rendezvous ranking the subsets are taken from: uniform, and stable as instances come and go.
import { describe, expect, it } from "vitest";
import { RendezvousRanking, rendezvousScore } from "../../src/pick/rendezvous.js";
import { peer, peers, urls } from "./peers.js";

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

describe("RendezvousRanking.update", () => {
  it("ranks as a fresh ranking of the changed peers would, and leaves the ranking before it as it was", () => {
    let random = 7;
    const next = () => (random = (random * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    let fleet = peers(300);
    const ranking = new RendezvousRanking(11);
    let ranked = ranking.rank(fleet);
    for (let round = 0; round < 50; round++) {
      const departed = fleet.filter(() => next() < 0.02);
      const added = Array.from({ length: Math.floor(next() * 4) }, (_, i) => peer(1_000 + round * 10 + i));
      const kept = fleet.filter((p) => !departed.includes(p));
      const before = [...ranked];
      const updated = ranking.update(departed, added);
      expect(ranked).toEqual(before);
      fleet = [...kept, ...added];
      expect(urls(updated)).toEqual(urls(new RendezvousRanking(11).rank(fleet)));
      ranked = updated;
    }
  });

  it("takes a peer that changed under the same address in the place of the one before, and passes over peers it never had", () => {
    const fleet = peers(20);
    const ranking = new RendezvousRanking(3);
    const order = ranking.rank(fleet);
    const successor = { ...order[4]! };
    const updated = ranking.update([order[4]!, peer(500)], [successor]);
    expect(updated[4]).toBe(successor);
    expect(urls(updated)).toEqual(urls(order));
  });
});
