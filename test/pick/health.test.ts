// Which peers of a group calls may go to: reachability, ejections, the panic threshold.
import { describe, expect, it } from "vitest";
import { healthOf } from "../../src/pick/health.js";
import { OutlierDetection } from "../../src/transport/outlier-detection.js";
import { Reachability } from "../../src/transport/reachability.js";
import { peers } from "./peers.js";

describe("healthOf", () => {
  it("keeps calls going to the reachable peers when all are ejected and panic is off (threshold 0)", () => {
    const group = peers(2);
    const detection = new OutlierDetection({ maxEjectionPercent: 100, consecutiveFailures: 1, panicThresholdPercent: 0 });
    for (const p of group) detection.record(p, "failed", 0, 2);
    expect(healthOf(group, detection, new Reachability(), true)).toEqual({ usable: group, healthy: 0, noneReachable: false });
  });

  it("does not panic when told the other zones can take the calls", () => {
    const group = peers(4);
    const detection = new OutlierDetection({ maxEjectionPercent: 100, consecutiveFailures: 1 });
    for (const p of group.slice(0, 3)) detection.record(p, "failed", 0, 4);
    expect(healthOf(group, detection, new Reachability(), false).usable).toEqual([group[3]]);
  });

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
