import type { Discovery, Snapshot } from "../discovery/discovery.js";
import type { EventListener } from "../events.js";
import { SharedSnapshot, type Holder } from "./shared-snapshot.js";
import { withinCall } from "./signals.js";

/** A transport's handle on the process-wide snapshot of one service. */
export interface SnapshotCache {
  /**
   * The snapshot to serve now, or undefined before the first read succeeded.
   * When it is older than the TTL, one background refresh starts and the
   * stale snapshot keeps serving meanwhile; `waitUntil` is handed that refresh,
   * so runtimes that freeze after the response let it finish. A stale snapshot
   * without instances is not served: the call waits for the refresh instead.
   */
  peek(waitUntil?: (refresh: Promise<unknown>) => void): Snapshot | undefined;
  /** Waits for the first snapshot, within the call's signal and timeout. */
  load(signal: AbortSignal | undefined, timeoutMs: number | undefined): Promise<Snapshot>;
  /**
   * A peer could not be reached: reads the registry again early (rate-limited,
   * and not while watched), handing the read to `waitUntil`.
   */
  refreshEarly(waitUntil?: (refresh: Promise<unknown>) => void): void;
  /**
   * No peer of the snapshot can be reached: waits, within the call's signal
   * and timeout, for an early read (or the read in flight) before the call
   * tries them again. Resolves at once when no read may start now; never rejects.
   */
  awaitFreshRead(signal: AbortSignal | undefined, timeoutMs: number | undefined, waitUntil?: (refresh: Promise<unknown>) => void): Promise<void>;
  /** Stops this handle's events; the last release cancels an in-flight read and stops the watch. */
  release(): void;
}

/**
 * Most entries held by open transports that the process shares. Far more
 * (discovery, service) pairs than any real fleet of services; past it, a
 * discovery or decoder created per request and never closed would grow the
 * heap without end. The least recently acquired entry leaves first: the
 * transports holding it keep using it, only new transports no longer share it.
 */
const maxHeldEntries = 1_000;

/**
 * Most released entries kept for the next transport of the same service, so a
 * transport created and closed per request still reuses a snapshot within its
 * TTL instead of reading etcd on every request. Dozens of services per process
 * fit; an idle entry holds a snapshot but no discovery (whose credentials must
 * not outlive the transports), timer, socket, watch or read, so it never keeps
 * the process alive.
 */
const maxIdleEntries = 64;

/** Entries held by at least one transport, least recently acquired first. */
const held = new Map<string, SharedSnapshot>();
/** Entries no transport holds, least recently released first. */
const idle = new Map<string, SharedSnapshot>();

/**
 * Releases the hold of a transport dropped without close() once it is
 * garbage-collected; where a runtime never runs these callbacks, only its
 * empty reference stays behind.
 */
const dropped = typeof FinalizationRegistry === "undefined" ? undefined : new FinalizationRegistry<() => void>((release) => release());

/** `adopt` is handed each new snapshot the cache serves, as it comes (a watch's change, a refresh), without waiting for a call. */
export function acquireSnapshotCache(discovery: Discovery, service: string, listener: EventListener, adopt?: (snapshot: Snapshot) => void): SnapshotCache {
  const key = `${discovery.key}\n${service}`;
  const entry = take(key) ?? new SharedSnapshot(service);
  held.set(key, entry);
  dropOldest(held, maxHeldEntries);
  const release = () => {
    dropped?.unregister(ref);
    if (entry.release(ref)) {
      park(key, entry);
    }
  };
  // The handle is the holder: its transport keeps it, and the cache holds it weakly.
  const handle: SnapshotCache & Holder = {
    listener,
    adopt,
    peek: (waitUntil) => entry.peek(waitUntil),
    load(signal, timeoutMs) {
      const snapshot = entry.peek();
      return snapshot !== undefined ? Promise.resolve(snapshot) : entry.wait(signal, timeoutMs);
    },
    refreshEarly(waitUntil) {
      entry.refreshEarly(waitUntil)?.catch(() => {}); // reported as a discovery_failed event
    },
    async awaitFreshRead(signal, timeoutMs, waitUntil) {
      const read = entry.refreshEarly(waitUntil);
      if (read !== undefined) {
        await withinCall(read, service, signal, timeoutMs).catch(() => {}); // the call goes on with what it has
      }
    },
    release,
  };
  const ref = entry.hold(handle, discovery);
  dropped?.register(handle, release, ref);
  return handle;
}

/** How many entries the process keeps, for tests: `held` by open transports and `idle`. */
export function sharedCacheSize(): { held: number; idle: number } {
  return { held: held.size, idle: idle.size };
}

/** The entry of a key, taken out of either map. */
function take(key: string): SharedSnapshot | undefined {
  const entry = held.get(key) ?? idle.get(key);
  held.delete(key);
  idle.delete(key);
  return entry;
}

/** The last transport of an entry closed: keep it idle for the next one, unless the map dropped it meanwhile. */
function park(key: string, entry: SharedSnapshot): void {
  if (held.get(key) !== entry) {
    return;
  }
  held.delete(key);
  if (entry.hasSnapshot) {
    idle.set(key, entry);
    dropOldest(idle, maxIdleEntries);
  }
}

function dropOldest(entries: Map<string, SharedSnapshot>, max: number): void {
  for (const key of entries.keys()) {
    if (entries.size <= max) {
      return;
    }
    entries.delete(key);
  }
}
