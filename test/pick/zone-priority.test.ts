// Zone priority: which peers are local, the share of calls that stays, and when the zones are fully available.
import { describe, expect, it } from "vitest";
import { fullyAvailable, localShare, splitByZone } from "../../src/pick/zones.js";
import { peer } from "./peers.js";

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

  it("keeps every call local down to 5 of 7 (71.4 %) healthy, then that share × 1.4, and none with no healthy local peer", () => {
    const others = { usable: [], healthy: 6, total: 6, noneReachable: false };
    const local = (healthy: number, total = 3) => ({ usable: [], healthy, total, noneReachable: false });
    expect(localShare(local(3), others)).toBe(1);
    expect(localShare(local(8, 10), others)).toBe(1);
    expect(localShare(local(2), others)).toBeCloseTo(0.933, 3);
    expect(localShare(local(1), others)).toBeCloseTo(0.467, 3);
    expect(localShare(local(0), others)).toBe(0);
    expect(localShare(local(0, 0), others)).toBe(0);
    // exactly at the boundary, where 1.4 × 5 ÷ 7 would round below 1
    for (const k of [5, 10, 500]) expect(localShare(local(k, (7 * k) / 5), others)).toBe(1);
    expect(fullyAvailable([{ healthy: 5, total: 7 }])).toBe(true);
  });

  it("keeps every call local when there is no other zone, even with the local one out of reach", () => {
    const empty = { usable: [], healthy: 0, total: 0, noneReachable: false };
    expect(localShare({ usable: [], healthy: 0, total: 3, noneReachable: true }, empty)).toBe(1);
  });

  it("keeps the calls local when no other zone has a healthy peer, unless the local zone cannot be reached and another can", () => {
    const none = { usable: [], healthy: 0, total: 6, noneReachable: false };
    expect(localShare({ usable: [], healthy: 1, total: 3, noneReachable: false }, none)).toBe(1);
    expect(localShare({ usable: [], healthy: 0, total: 3, noneReachable: true }, none)).toBe(0);
    expect(localShare({ usable: [], healthy: 0, total: 3, noneReachable: true }, { ...none, noneReachable: true })).toBe(1);
  });
});
