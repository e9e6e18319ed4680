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
  /**
   * Set when the key's bytes are not UTF-8 (see readKey): `key` is then only
   * the key shown, and this (its bytes in base64) tells it from other such keys.
   */
  readonly unreadable?: string | undefined;
}

/** One change a watch saw: a key written or deleted at a revision; `unreadable` as in RegistryEntry. */
export type RegistryEvent =
  | { readonly kind: "put"; readonly key: string; readonly value: string; readonly revision: number; readonly unreadable?: string | undefined }
  | { readonly kind: "delete"; readonly key: string; readonly revision: number; readonly unreadable?: string | undefined };

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A key as etcd holds it (bytes) made text. Bytes that are not UTF-8 have
 * no text of their own: decoded leniently, `…/\xFE` and `…/\xFF` would both
 * read `…/\uFFFD`, one key hiding or replacing the other, and out of etcd's
 * order. Such a key is only shown — its UTF-8 runs as text, every other byte
 * as \xHH — and marked `unreadable` (its bytes in base64): it is skipped and
 * reported, never decoded, ordered or indexed with the others.
 */
export function readKey(bytes: Uint8Array): { key: string; unreadable?: string } {
  try {
    return { key: strictUtf8.decode(bytes) };
  } catch {
    return { key: shownBytes(bytes), unreadable: base64Of(bytes) };
  }
}

/** Why a key that is not UTF-8 is skipped. */
export const unreadableKeyReason = "the key is not valid UTF-8 (shown with \\xHH for each byte that is not): skipped";

function shownBytes(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const lead = bytes[i]!;
    const length = lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3 : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
    let text: string | undefined;
    if (length > 0 && i + length <= bytes.length) {
      try {
        text = strictUtf8.decode(bytes.subarray(i, i + length));
      } catch {
        text = undefined;
      }
    }
    if (text === undefined) {
      out += `\\x${lead.toString(16).toUpperCase().padStart(2, "0")}`;
      i++;
    } else {
      out += text;
      i += length;
    }
  }
  return out;
}

function base64Of(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary);
}

/** What one key decoded to: an instance, the reasons it was skipped (or refused endpoints), or nothing. */
interface Decoded {
  readonly key: string;
  /** The revision of the value decoded; 0 when unknown (the entry is then decoded on every read). */
  readonly modRevision: number;
  /**
   * The value decoded. A read reuses this decode only for the same
   * mod_revision *and* value: an etcd rebuilt behind the same URL starts its
   * revisions over, and may hold the key at the same mod_revision with another address.
   */
  readonly value: string;
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
  /** Keys that are not UTF-8, by their bytes (base64): skipped, listed after the others in `owner.skipped`. */
  readonly unreadable: Map<string, Unreadable>;
  /** Text held: keys and values, in UTF-16 units (at most their UTF-8 bytes); see entryBytes. */
  bytes: number;
}

interface Unreadable {
  readonly revision: number;
  readonly skip: SkippedEntry;
  readonly bytes: number;
}

/**
 * What an entry adds to a range answer, at least: its key and value, in
 * base64 (4/3 of their bytes). A snapshot whose entries add up past
 * maxResponseBytes could not be read again, so no watch update makes one.
 */
export function answerBytes(textBytes: number): number {
  return Math.ceil((textBytes * 4) / 3);
}

export function entryBytes(key: string, value: string): number {
  return key.length + value.length;
}

function unreadableBytes(unreadable: string, value: string): number {
  return Math.floor((unreadable.length * 3) / 4) + value.length;
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
 */
export function decodeSnapshot(
  layout: RegistryLayout,
  service: string,
  revision: number,
  entries: readonly RegistryEntry[],
  previous?: Snapshot,
): Snapshot {
  // Entries whose mod_revision and value both equal what `previous` decoded are taken from it as they are.
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
  private readonly unreadable = new Map<string, Unreadable>();
  private bytes = 0;
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

  add({ key, value, modRevision = 0, unreadable }: RegistryEntry): void {
    if (unreadable !== undefined) {
      // before ordering and indexing: its text is not its key
      const old = this.reuse?.unreadable.get(unreadable);
      const skip = old !== undefined && old.skip.key === key ? old.skip : { key, reason: unreadableKeyReason };
      if (!this.unreadable.has(unreadable)) {
        const bytes = unreadableBytes(unreadable, value);
        this.unreadable.set(unreadable, { revision: modRevision, skip, bytes });
        this.bytes += bytes;
      }
      return;
    }
    if (this.last !== undefined && compareKeys(this.last, key) >= 0) {
      this.ordered = false;
    }
    this.last = key;
    const old = this.reuse?.byKey.get(key);
    const decoded =
      old !== undefined && modRevision > 0 && old.modRevision === modRevision && old.value === value
        ? old
        : decodeKey(this.layout, this.service, key, value, modRevision, old);
    this.bytes += entryBytes(key, value);
    this.byKey.set(key, decoded);
    if (decoded.instance !== undefined) {
      this.instances.push(decoded.instance);
    }
    for (const entry of decoded.skipped) {
      this.skipped.push(entry);
    }
  }

  finish(revision: number): Snapshot {
    for (const { skip } of this.unreadable.values()) {
      this.skipped.push(skip);
    }
    const snapshot: Snapshot = { service: this.service, revision, instances: this.instances, skipped: this.skipped };
    if (this.ordered) {
      indexes.set(snapshot, {
        owner: snapshot,
        layout: this.layout,
        service: this.service,
        byKey: this.byKey,
        unreadable: this.unreadable,
        bytes: this.bytes,
      });
      keyOrdered.add(snapshot);
    }
    return snapshot;
  }
}

/**
 * The snapshot after `events`, made from `base` by decoding only the keys
 * they touch; undefined when `base` has no index of this layout (it was not
 * decoded here, or its keys were out of order), or when the snapshot made
 * would hold more than `maxBytes` would let a read of it bring (base64 of its
 * keys and values): then the caller reads afresh, which fails naming the
 * limit while that is so. Events at or below `base.revision` are in `base`
 * already, and an event older than the last one applied to its key is passed
 * over; both happen when a watch is opened again over changes a read has seen.
 */
export function applyEvents(
  layout: RegistryLayout,
  service: string,
  base: Snapshot,
  events: readonly RegistryEvent[],
  maxBytes = Number.POSITIVE_INFINITY,
): Snapshot | undefined {
  const index = indexOf(base, layout, service);
  if (index === undefined) {
    return undefined;
  }
  let revision = base.revision;
  /** Per changed key: what it decodes to now (null: deleted), and the revision of that change. */
  const changes = new Map<string, { decoded: Decoded | null; revision: number }>();
  /** Per changed key that is not UTF-8: what it holds now (null: deleted). */
  const unreadableChanges = new Map<string, Unreadable | null>();
  for (const event of events) {
    if (event.unreadable !== undefined) {
      const current = unreadableChanges.get(event.unreadable);
      const keyRevision = current === undefined ? (index.unreadable.get(event.unreadable)?.revision ?? 0) : (current?.revision ?? 0);
      if (event.revision <= base.revision || event.revision < keyRevision) {
        continue;
      }
      revision = Math.max(revision, event.revision);
      unreadableChanges.set(
        event.unreadable,
        event.kind === "delete"
          ? null
          : {
              revision: event.revision,
              skip: { key: event.key, reason: unreadableKeyReason },
              bytes: unreadableBytes(event.unreadable, event.value),
            },
      );
      continue;
    }
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
  if (changes.size === 0 && unreadableChanges.size === 0) {
    return base;
  }
  let bytes = index.bytes;
  const changed = [...changes.keys()].sort(compareKeys);
  let contentChanged = false;
  for (const key of changed) {
    const before = index.byKey.get(key);
    const after = changes.get(key)!.decoded;
    bytes += (after === null ? 0 : entryBytes(key, after.value)) - (before === undefined ? 0 : entryBytes(key, before.value));
    if (after === null ? before !== undefined : before === undefined || after.instance !== before.instance || after.skipped !== before.skipped) {
      contentChanged = true;
    }
  }
  for (const [id, after] of unreadableChanges) {
    const before = index.unreadable.get(id);
    bytes += (after?.bytes ?? 0) - (before?.bytes ?? 0);
    if (after === null ? before !== undefined : before === undefined || after.skip.key !== before.skip.key) {
      contentChanged = true;
    }
  }
  if (answerBytes(bytes) > maxBytes) {
    return undefined; // the index is left as it was: a read follows
  }
  // The skipped entries of keys that are UTF-8, in key order, then those of keys that are not.
  const keyedSkips = base.skipped.slice(0, base.skipped.length - index.unreadable.size);
  for (const [id, after] of unreadableChanges) {
    if (after === null) {
      index.unreadable.delete(id);
    } else {
      const before = index.unreadable.get(id);
      index.unreadable.set(id, before !== undefined && before.skip.key === after.skip.key ? { ...after, skip: before.skip } : after);
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
        skipped: [
          ...spliceSorted(keyedSkips, changed, (key) => changes.get(key)!.decoded?.skipped ?? []),
          ...[...index.unreadable.values()].map(({ skip }) => skip),
        ],
      }
    : { service, revision, instances: base.instances, skipped: base.skipped };
  for (const [key, { decoded }] of changes) {
    if (decoded === null) {
      index.byKey.delete(key);
    } else {
      index.byKey.set(key, decoded);
    }
  }
  index.bytes = bytes;
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

/**
 * The update a watch hands the cache for `events` of one service read with
 * `layout`; undefined when there are too many to apply at once. `maxBytes`
 * bounds the snapshot it makes as a read is bounded (maxResponseBytes).
 */
export function registryUpdate(
  layout: RegistryLayout,
  service: string,
  events: readonly RegistryEvent[],
  maxBytes = Number.POSITIVE_INFINITY,
): RegistryUpdate | undefined {
  if (events.length > maxEventsPerUpdate) {
    return undefined;
  }
  return {
    revision: events.reduce((highest, event) => Math.max(highest, event.revision), 0),
    bytes: events.reduce((total, event) => total + event.key.length + (event.kind === "put" ? event.value.length : 0), 0),
    applyTo: (base) => applyEvents(layout, service, base, events, maxBytes),
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
    return old.modRevision === modRevision && old.value === value ? old : { ...old, modRevision, value };
  }
  return { key, modRevision, value, instance, skipped: skipped.length === 0 ? noSkips : skipped };
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
