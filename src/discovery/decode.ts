import type { Instance, SkippedEntry } from "../registry/instance.js";
import { describeError } from "../registry/instance.js";
import { checkInstance, type CheckedInstance, type RegistryLayout } from "../registry/format.js";
import type { RegistryUpdate, Snapshot } from "./discovery.js";
import { createPacer } from "./pace.js";

/** One key/value read from the registry, as text. */
export interface RegistryEntry {
  readonly key: string;
  readonly value: string;
  /** etcd's mod_revision of the entry: the revision of its last change; 0 or absent when unknown. */
  readonly modRevision?: number;
}

/** One change a watch saw: a key written or deleted at a revision. */
export type RegistryEvent =
  | { readonly kind: "put"; readonly key: string; readonly value: string; readonly revision: number }
  | { readonly kind: "delete"; readonly key: string; readonly revision: number };

/** What one key decoded to: an instance, the reasons it was skipped (or refused endpoints), or nothing. */
interface Decoded {
  readonly key: string;
  /** The revision of the value decoded; 0 when unknown (the entry is then decoded on every read). */
  readonly modRevision: number;
  readonly instance: Instance | undefined;
  readonly skipped: readonly SkippedEntry[];
}

/**
 * What a snapshot was decoded from, key by key, so that a later read or watch
 * decodes only the entries that changed and keeps the Instance objects of the
 * others (balancers and per-peer state see unchanged instances as the same).
 * Held for one snapshot at a time: applying changes moves it to the snapshot
 * they make, so no two snapshots share a mutable index.
 */
interface RegistryIndex {
  owner: Snapshot;
  readonly layout: RegistryLayout;
  readonly service: string;
  readonly byKey: Map<string, Decoded>;
}

const indexes = new WeakMap<Snapshot, RegistryIndex>();

/** Snapshots made here whose instances are in etcd's key order, each key once: later stages may diff them by key. */
const keyOrdered = new WeakSet<Snapshot>();

/** Whether `snapshot` was decoded (or updated) here with its instances in key order, each key once. */
export function inKeyOrder(snapshot: Snapshot): boolean {
  return keyOrdered.has(snapshot);
}

function indexOf(snapshot: Snapshot | undefined, layout: RegistryLayout, service: string): RegistryIndex | undefined {
  const index = snapshot === undefined ? undefined : indexes.get(snapshot);
  return index !== undefined && index.owner === snapshot && index.layout === layout && index.service === service ? index : undefined;
}

/**
 * Decodes a service's entries; malformed ones, and those the address policy
 * refuses, are skipped with their key and reason, never thrown. An instance
 * keeps its other endpoints when some are refused, and the refusal is still
 * reported: an address someone registered and nobody dials is worth a look.
 * Entries whose mod_revision equals the one `previous` decoded are taken
 * from it as they are.
 */
export function decodeSnapshot(
  layout: RegistryLayout,
  service: string,
  revision: number,
  entries: readonly RegistryEntry[],
  previous?: Snapshot,
): Snapshot {
  const builder = new Builder(layout, service, previous);
  for (const entry of entries) {
    builder.add(entry);
  }
  return builder.finish(revision);
}

/** Decodes a registry read in parts (pages), reusing what `previous` decoded; see decodeSnapshot. */
export interface SnapshotBuilder {
  /**
   * Decodes entries that follow those added before, yielding to the event
   * loop every few ms, so that 20,000 of them never stall it.
   */
  addPaced(entries: readonly RegistryEntry[], signal?: AbortSignal): Promise<void>;
  /** The snapshot of every entry added, as of `revision`. */
  finish(revision: number): Snapshot;
}

export function createSnapshotBuilder(layout: RegistryLayout, service: string, previous: Snapshot | undefined): SnapshotBuilder {
  const builder = new Builder(layout, service, previous);
  const pacer = createPacer();
  return {
    async addPaced(entries, signal) {
      for (let i = 0; i < entries.length; i++) {
        builder.add(entries[i]!);
        if (pacer.due()) {
          await pacer.pause();
          signal?.throwIfAborted();
        }
      }
    },
    finish: (revision) => builder.finish(revision),
  };
}

class Builder {
  private readonly reuse: RegistryIndex | undefined;
  private readonly byKey = new Map<string, Decoded>();
  private readonly instances: Instance[] = [];
  private readonly skipped: SkippedEntry[] = [];
  private last: string | undefined;
  /** Keys strictly in etcd's order (bytes): the index needs it to place changes; otherwise none is kept. */
  private ordered = true;

  constructor(
    private readonly layout: RegistryLayout,
    private readonly service: string,
    previous: Snapshot | undefined,
  ) {
    this.reuse = indexOf(previous, layout, service);
  }

  add({ key, value, modRevision = 0 }: RegistryEntry): void {
    if (this.last !== undefined && compareKeys(this.last, key) >= 0) {
      this.ordered = false;
    }
    this.last = key;
    const old = this.reuse?.byKey.get(key);
    const decoded = old !== undefined && modRevision > 0 && old.modRevision === modRevision ? old : decodeKey(this.layout, this.service, key, value, modRevision, old);
    this.byKey.set(key, decoded);
    if (decoded.instance !== undefined) {
      this.instances.push(decoded.instance);
    }
    for (const entry of decoded.skipped) {
      this.skipped.push(entry);
    }
  }

  finish(revision: number): Snapshot {
    const snapshot: Snapshot = { service: this.service, revision, instances: this.instances, skipped: this.skipped };
    if (this.ordered) {
      indexes.set(snapshot, { owner: snapshot, layout: this.layout, service: this.service, byKey: this.byKey });
      keyOrdered.add(snapshot);
    }
    return snapshot;
  }
}

/**
 * The snapshot after `events`, made from `base` by decoding only the keys
 * they touch; undefined when `base` has no index of this layout (it was not
 * decoded here, or its keys were out of order), so the caller reads afresh.
 * Events at or below `base.revision` are in `base` already, and an event
 * older than the last one applied to its key is passed over; both happen
 * when a watch is opened again over changes a read has seen.
 */
export function applyEvents(layout: RegistryLayout, service: string, base: Snapshot, events: readonly RegistryEvent[]): Snapshot | undefined {
  const index = indexOf(base, layout, service);
  if (index === undefined) {
    return undefined;
  }
  let revision = base.revision;
  /** Per changed key: what it decodes to now (null: deleted), and the revision of that change. */
  const changes = new Map<string, { decoded: Decoded | null; revision: number }>();
  for (const event of events) {
    const current = changes.get(event.key);
    const keyRevision = current?.revision ?? index.byKey.get(event.key)?.modRevision ?? 0;
    if (event.revision <= base.revision || event.revision < keyRevision) {
      continue;
    }
    revision = Math.max(revision, event.revision);
    const old = current === undefined ? index.byKey.get(event.key) : (current.decoded ?? undefined);
    const decoded = event.kind === "delete" ? null : decodeKey(layout, service, event.key, event.value, event.revision, old);
    changes.set(event.key, { decoded, revision: event.revision });
  }
  if (changes.size === 0) {
    return base;
  }
  const changed = [...changes.keys()].sort(compareKeys);
  let contentChanged = false;
  for (const key of changed) {
    const before = index.byKey.get(key);
    const after = changes.get(key)!.decoded;
    if (after === null ? before !== undefined : before === undefined || after.instance !== before.instance || after.skipped !== before.skipped) {
      contentChanged = true;
    }
  }
  const next: Snapshot = contentChanged
    ? {
        service,
        revision,
        instances: spliceSorted(base.instances, changed, (key) => {
          const instance = changes.get(key)!.decoded?.instance;
          return instance === undefined ? [] : [instance];
        }),
        skipped: spliceSorted(base.skipped, changed, (key) => changes.get(key)!.decoded?.skipped ?? []),
      }
    : { service, revision, instances: base.instances, skipped: base.skipped };
  for (const [key, { decoded }] of changes) {
    if (decoded === null) {
      index.byKey.delete(key);
    } else {
      index.byKey.set(key, decoded);
    }
  }
  index.owner = next;
  indexes.delete(base);
  indexes.set(next, index);
  keyOrdered.add(next);
  return next;
}

/**
 * Most events applied as one update: applying is synchronous, at about 15 µs
 * a changed key, so this bounds the block to a couple of ms. A bigger batch
 * (a watch catching up on a deploy) is read instead: a read decodes only
 * the keys whose mod_revision moved, in slices, and parses its pages one by one.
 */
export const maxEventsPerUpdate = 128;

/** The update a watch hands the cache for `events` of one service read with `layout`; undefined when there are too many to apply at once. */
export function registryUpdate(layout: RegistryLayout, service: string, events: readonly RegistryEvent[]): RegistryUpdate | undefined {
  if (events.length > maxEventsPerUpdate) {
    return undefined;
  }
  return {
    revision: events.reduce((highest, event) => Math.max(highest, event.revision), 0),
    applyTo: (base) => applyEvents(layout, service, base, events),
  };
}

/**
 * Decodes one entry. When it decodes to what `old` held (a server that
 * registered again with the same value), the old objects are kept, so that
 * the instance stays the same one for everything keyed by it.
 */
function decodeKey(layout: RegistryLayout, service: string, key: string, value: string, modRevision: number, old: Decoded | undefined): Decoded {
  const checked = decodeEntry(layout, service, key, value);
  let instance: Instance | undefined;
  let skipped: SkippedEntry[];
  if (typeof checked === "string") {
    skipped = [{ key, reason: checked }];
  } else if (checked === undefined) {
    skipped = [];
  } else {
    instance = checked.instance;
    skipped = checked.refused.map((reason) => ({ key, reason }));
  }
  if (old !== undefined && sameInstance(old.instance, instance) && sameSkips(old.skipped, skipped)) {
    return old.modRevision === modRevision ? old : { ...old, modRevision };
  }
  return { key, modRevision, instance, skipped: skipped.length === 0 ? noSkips : skipped };
}

const noSkips: readonly SkippedEntry[] = [];

function sameInstance(a: Instance | undefined, b: Instance | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && JSON.stringify(a) === JSON.stringify(b));
}

function sameSkips(a: readonly SkippedEntry[], b: readonly SkippedEntry[]): boolean {
  return a.length === b.length && a.every((entry, i) => entry.key === b[i]!.key && entry.reason === b[i]!.reason);
}

/** One entry: undefined when it describes no instance, the reason when it is unusable. */
function decodeEntry(layout: RegistryLayout, service: string, key: string, value: string): CheckedInstance | string | undefined {
  try {
    const init = layout.decode(key, value, service);
    return init === undefined || typeof init === "string" ? init : checkInstance(key, init, service);
  } catch (error) {
    // layouts and checkInstance report problems as strings; this is the last line
    return `decoding failed: ${describeError(error)}`;
  }
}

/**
 * `items` (sorted by key, a key's items together) with the items of each of
 * the `keys` (sorted) replaced by `replacement(key)`: a copy of the pointers
 * and a binary search per key, whatever the size of the registry.
 */
export function spliceSorted<T extends { readonly key: string }>(items: readonly T[], keys: readonly string[], replacement: (key: string) => readonly T[]): T[] {
  const out: T[] = [];
  let from = 0;
  for (const key of keys) {
    const start = lowerBound(items, key, from);
    let end = start;
    while (end < items.length && items[end]!.key === key) {
      end++;
    }
    for (let i = from; i < start; i++) {
      out.push(items[i]!);
    }
    for (const item of replacement(key)) {
      out.push(item);
    }
    from = end;
  }
  for (let i = from; i < items.length; i++) {
    out.push(items[i]!);
  }
  return out;
}

/** The first index at or after `from` whose key is not below `key`. */
function lowerBound(items: readonly { readonly key: string }[], key: string, from: number): number {
  let low = from;
  let high = items.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (compareKeys(items[middle]!.key, key) < 0) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

/**
 * Orders keys as etcd does, by their UTF-8 bytes, which is the order of
 * their code points: UTF-16 units differ from it only between surrogates
 * (U+D800–DFFF) and U+E000–FFFF, which are swapped here.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) {
    return 0;
  }
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      return codePointRank(x) - codePointRank(y);
    }
  }
  return a.length - b.length;
}

function codePointRank(unit: number): number {
  return unit >= 0xe000 ? unit - 0x800 : unit >= 0xd800 ? unit + 0x2000 : unit;
}
