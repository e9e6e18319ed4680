import type { Snapshot } from "../discovery/discovery.js";
import type { BalancerEvent } from "../events.js";
import type { SkippedEntry } from "../registry/instance.js";

/** Reads in a row below the known revision after which etcd is taken to have been rebuilt. */
const etcdResetAfterReads = 3;

/** What the cache knows of a service, as far as deciding what to serve goes. */
export interface CacheState {
  /** What calls are served from; undefined before the first read. */
  readonly snapshot: Snapshot | undefined;
  /** The highest revision read so far, even when its content equalled the served snapshot. */
  readonly revision: number;
  /** Reads in a row that saw a revision below `revision`. */
  readonly lowerReads: number;
  /** The registry read empty and the last instances keep serving. */
  readonly servingOverEmpty: boolean;
  /** The snapshot came from the snapshot store, not from this process' reads: any registry read replaces it. */
  readonly restored: boolean;
  /**
   * The malformed entries of the last read taken, all reported already: a read
   * reports only the entries not among them. Remembering no more than one read
   * keeps this bounded, and reports an entry fixed then broken again.
   */
  readonly reportedSkips: readonly SkippedEntry[];
}

export const initialState: CacheState = {
  snapshot: undefined,
  revision: Number.NEGATIVE_INFINITY,
  lowerReads: 0,
  servingOverEmpty: false,
  restored: false,
  reportedSkips: [],
};

export interface Verdict {
  readonly state: CacheState;
  /** etcd's revisions started over (rebuilt or restored etcd): a watch must start again from the new revision. */
  readonly etcdReset: boolean;
  readonly events: readonly BalancerEvent[];
}

/** The rules for a registry read: what it replaces, what it may not, and what to report. Pure. */
export function acceptRead(state: CacheState, next: Snapshot): Verdict {
  const served = state.restored ? undefined : state.snapshot;
  let etcdReset = false;
  if (served !== undefined && next.revision < state.revision) {
    // An older read that lost a race never replaces a newer one. Lower
    // revisions read again and again, though, mean etcd was rebuilt or
    // restored, and its revisions started over.
    if (state.lowerReads + 1 < etcdResetAfterReads) {
      return { state: { ...state, lowerReads: state.lowerReads + 1 }, etcdReset, events: [] };
    }
    etcdReset = true;
  }
  const base = { ...state, restored: false, lowerReads: 0, revision: next.revision, reportedSkips: next.skipped };
  const skips = newlySkipped(state.reportedSkips, next);
  const servingOverEmpty = next.instances.length > 0 ? false : state.servingOverEmpty;
  if (served !== undefined && sameContent(served, next)) {
    // same instances: keep the object so balancers keep their state
    return { state: { ...base, snapshot: served, servingOverEmpty }, etcdReset, events: skips };
  }
  if (next.instances.length === 0 && served !== undefined && served.instances.length > 0) {
    // kratos' zero-endpoint protection: an empty registry is more often a wiped
    // or misconfigured etcd than a fleet scaled to zero, so keep the last peers.
    const ignored: BalancerEvent[] = servingOverEmpty
      ? []
      : [{ type: "empty_registry_ignored", service: next.service, revision: next.revision, instances: served.instances.length }];
    return { state: { ...base, snapshot: served, servingOverEmpty: true }, etcdReset, events: [...ignored, ...skips] };
  }
  const events: BalancerEvent[] = [{ type: "snapshot", service: next.service, revision: next.revision, instances: next.instances.length }, ...skips];
  return { state: { ...base, snapshot: next, servingOverEmpty }, etcdReset, events };
}

/**
 * The entries a read skipped that the previous read taken did not: a key
 * whose reason changed counts as new. An entry the discovery carried over
 * from the previous read (the same object) is known at once.
 */
function newlySkipped(reported: readonly SkippedEntry[], next: Snapshot): BalancerEvent[] {
  if (next.skipped === reported || next.skipped.length === 0) {
    return [];
  }
  const same = new Set<SkippedEntry>(reported);
  let seen: Set<string> | undefined;
  const events: BalancerEvent[] = [];
  for (const entry of next.skipped) {
    if (!same.has(entry) && !(seen ??= new Set(reported.map(identity))).has(identity(entry))) {
      events.push({ type: "entry_skipped", service: next.service, key: entry.key, reason: entry.reason });
    }
  }
  return events;
}

/** What makes a report the same one; not the value, which a report does not carry (see entry_skipped). */
const identity = ({ key, reason }: SkippedEntry) => JSON.stringify([key, reason]);

/**
 * A snapshot from the store, taken only while nothing was read yet. Its
 * revision is not remembered, so it never holds back a registry read.
 */
export function acceptRestored(state: CacheState, stored: Snapshot): Verdict {
  if (state.snapshot !== undefined) {
    return { state, etcdReset: false, events: [] };
  }
  return {
    state: { ...state, snapshot: stored, restored: true },
    etcdReset: false,
    events: [{ type: "snapshot", service: stored.service, revision: stored.revision, instances: stored.instances.length }],
  };
}

/**
 * Whether two snapshots list the same instances and skipped entries. Entries
 * are compared one by one, by identity first: a discovery that carries
 * unchanged instances over from one snapshot to the next (etcdDiscovery
 * does) makes this a pass over pointers, not a serialisation of the registry.
 */
function sameContent(a: Snapshot, b: Snapshot): boolean {
  return sameList(a.instances, b.instances) && sameList(a.skipped, b.skipped);
}

function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a === b) {
    return true;
  }
  if (a.length !== b.length) {
    return false;
  }
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] && JSON.stringify(a[i]) !== JSON.stringify(b[i])) {
      return false;
    }
  }
  return true;
}
