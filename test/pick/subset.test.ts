// Taking a subset of a ranking: stand-ins for members out of order.
import { describe, expect, it } from "vitest";
import { takeSubset } from "../../src/pick/subset.js";
import { peers } from "./peers.js";

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
