import type { Snapshot } from "../discovery/discovery.js";
import type { Instance, SkippedEntry } from "../registry/instance.js";

export type ChangeKind = "added" | "changed" | "removed";

export interface Change {
  readonly change: ChangeKind;
  /** The instance as it is now; as it was for "removed". */
  readonly instance: Instance;
}

/** What happened between two reads, instances keyed by their registry key: removals first, then changes, then additions. */
export function diffInstances(before: readonly Instance[], after: readonly Instance[]): Change[] {
  const old = new Map(before.map((instance) => [instance.key, instance]));
  const now = new Map(after.map((instance) => [instance.key, instance]));
  const removed = before.filter((i) => !now.has(i.key)).map((instance) => ({ change: "removed" as const, instance }));
  const changed = after
    .filter((i) => old.has(i.key) && JSON.stringify(old.get(i.key)) !== JSON.stringify(i))
    .map((instance) => ({ change: "changed" as const, instance }));
  const added = after.filter((i) => !old.has(i.key)).map((instance) => ({ change: "added" as const, instance }));
  return [...removed, ...changed, ...added];
}

/** Skipped entries of `after` that `before` did not already report the same way. */
export function newlySkipped(before: Snapshot, after: Snapshot): SkippedEntry[] {
  const seen = new Set(before.skipped.map((s) => `${s.key}\n${s.reason}`));
  return after.skipped.filter((s) => !seen.has(`${s.key}\n${s.reason}`));
}
