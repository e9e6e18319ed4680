import type { Discovery, Snapshot } from "../discovery/discovery.js";
import type { SkippedEntry } from "../registry/instance.js";

/** Tells the operator on stderr why entries under the service's prefix are not instances. */
export function reportSkipped(skipped: readonly SkippedEntry[]): void {
  for (const { key, reason } of skipped) {
    console.error(`skipped ${key}: ${reason}`);
  }
}

/** The error for a read that found nothing usable, naming where it looked. */
export function noInstances(snapshot: Snapshot, discovery: Discovery): Error {
  const where = discovery.describe(snapshot.service);
  const skipped = snapshot.skipped.length;
  return new Error(
    skipped === 0
      ? `no instances of "${snapshot.service}" in ${where} at revision ${snapshot.revision}`
      : `no usable instances of "${snapshot.service}" in ${where} at revision ${snapshot.revision}: ${skipped} malformed entries skipped`,
  );
}
