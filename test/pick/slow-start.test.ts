// Slow start: the ramp, who ramps, and weighing a policy's picks by it.
import { describe, expect, it } from "vitest";
import { roundRobin } from "../../src/balancer/round-robin.js";
import { SlowStart, validSlowStart } from "../../src/pick/slow-start.js";
import { peers, request } from "./peers.js";

describe("SlowStart", () => {

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
    expect(slowStart.wrap(inner, group.slice(0, 1), performance.now())).toBe(inner); // all of them ramping: nobody to shift calls to
  });

  it("refuses a window that is not positive, a share outside 0–100 %, and an aggression that is not positive", () => {
    expect(() => validSlowStart({ windowMs: 0 })).toThrow(/windowMs > 0/);
    expect(() => validSlowStart({ windowMs: 1_000, minWeightPercent: 120 })).toThrow(/minWeightPercent in 0–100/);
    expect(() => validSlowStart({ windowMs: 1_000, aggression: 0 })).toThrow(/aggression > 0/);
  });

  it("told a change (lookChange), ramps the peers it adds, not a successor under the same address, and one that comes back", () => {
    const group = peers(4);
    const slowStart = new SlowStart({ windowMs: 1_000 });
    slowStart.lookChange([], group, 0); // before the first look: nothing to ramp from
    expect(slowStart.factor(group[0]!, 0)).toBe(1);
    slowStart.look(group.slice(0, 3), 0);
    const successor = { ...group[1]! };
    slowStart.lookChange([group[1]!, group[2]!], [successor, group[3]!], 100);
    expect(slowStart.factor(group[3]!, 600)).toBe(0.5);
    expect(slowStart.factor(successor, 600)).toBe(1);
    slowStart.lookChange([], [group[2]!], 200); // back in the registry
    expect(slowStart.factor(group[2]!, 700)).toBe(0.5);
    slowStart.look(group, 800); // the same peers as told: nobody new
    expect(slowStart.factor(group[0]!, 800)).toBe(1);
    expect(slowStart.factor(group[3]!, 800)).toBeCloseTo(0.7, 9);
  });
});
