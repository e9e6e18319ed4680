// What changed between two peer lists in key order: the change the subsets and the per-peer stages follow.
import { describe, expect, it } from "vitest";
import { changeBetween } from "../../src/transport/peer-set.js";
import type { Peer } from "../../src/index.js";
import { peer } from "./peers.js";

const keyed = (n: number): Peer => ({ ...peer(n), key: `/microservices/svc/i${String(n).padStart(4, "0")}` });

describe("changeBetween", () => {
  it("names the peers that left, came and changed (as departed and added), by identity", () => {
    const before = [keyed(1), keyed(2), keyed(3), keyed(5)];
    const changed = keyed(3); // the same key, another object: its instance changed
    const came = [keyed(4), keyed(9)];
    const after = [before[0]!, changed, came[0]!, before[3]!, came[1]!]; // 2 left
    const change = changeBetween(before, after);
    expect(change.from).toBe(before);
    expect(change.departed).toEqual([before[1], before[2]]);
    expect(change.departed[1]).toBe(before[2]);
    expect(change.added).toEqual([changed, ...came]);
    expect(change.added[0]).toBe(changed);
  });

  it("is empty for the same peers, and all of them from or to none", () => {
    const list = [keyed(1), keyed(2)];
    expect(changeBetween(list, [...list])).toEqual({ from: list, departed: [], added: [] });
    expect(changeBetween([], list).added).toEqual(list);
    expect(changeBetween(list, []).departed).toEqual(list);
  });
});
