import { Code, ConnectError } from "@connectrpc/connect";
import type { Discovery, RegistryUpdate, Snapshot } from "../discovery/discovery.js";
import { notify, type BalancerEvent, type EventListener } from "../events.js";
import { acceptRead, acceptRestored, initialState, type CacheState } from "./acceptance.js";
import { withinCall } from "./signals.js";
import { watchLoop } from "./watch-loop.js";

/**
 * After a failed refresh, the stale snapshot serves for at most this long
 * before etcd is asked again; a read that found no instances, or a snapshot
 * restored from the store, is also only fresh this long.
 */
const retryAfterMs = 1_000;

/**
 * The shortest time between two early reads (a peer could not be reached, so
 * it likely left the registry). It doubles, up to the TTL, each time an early
 * read finds the service's instances unchanged: a dead fleet that stays registered
 * cannot make its clients hammer etcd, while a rolling deploy, which changes
 * the registry all along, is followed at this pace.
 */
const earlyReadGapMs = 1_000;

/**
 * Most watch updates held while a read is in flight, to be applied after it.
 * Past it they are dropped and the registry is read again instead.
 */
const maxPendingUpdates = 1_000;
/**
 * Most text (keys and values) those held updates may hold together: each may
 * carry a line of up to maxWatchLineBytes, so a count alone would let a busy
 * watch queue GBs behind one slow read. Past it, as past the count.
 */
const maxPendingBytes = 16 * 1024 * 1024;

/** A transport holding the snapshot: told of its events, and handed each new snapshot served, until it releases it. */
export interface Holder {
  readonly listener: EventListener;
  /** Takes a new snapshot at once, without waiting for a call: its pickers, subsets and stats follow the registry. */
  readonly adopt?: (snapshot: Snapshot) => void;
}

/** How the cache refers to a holder: weakly where the runtime can. */
export interface HolderRef {
  deref(): Holder | undefined;
}

/**
 * A weak reference to a holder; a strong one where the runtime has no WeakRef
 * (Cloudflare Workers without the enable_weak_ref compatibility flag), where a
 * transport dropped unclosed then keeps its hold, as close() is not called.
 */
function refTo(holder: Holder): HolderRef {
  return typeof WeakRef === "undefined" ? { deref: () => holder } : new WeakRef(holder);
}

/**
 * The snapshot of one service read one way, shared by the transports holding
 * it. Reads, watches and reports only while held; released by the last
 * holder, it keeps its snapshot and revisions but holds no timer, socket,
 * read or discovery.
 */
export class SharedSnapshot {
  /**
   * One per acquired handle (two transports may share a listener function),
   * held weakly: a transport dropped without close() is not kept alive by
   * the cache, and its collection releases its hold (see acquireSnapshotCache).
   */
  private readonly holders = new Set<HolderRef>();
  private state: CacheState = initialState;
  private freshUntil = 0;
  private inflight: { promise: Promise<Snapshot>; controller: AbortController } | undefined;
  /** Calls waiting for the read in flight; when the last gives up on a cold read, the read is abandoned. */
  private waiting = 0;
  /** A change was seen while a read was in flight: read again once it ends. */
  private readAgain = false;
  /**
   * The registry as last taken from the discovery (a read, or a watch update
   * applied to one): what the next update applies to, and what the next read
   * may reuse decoded entries of. It is not always what is served: an empty
   * registry is taken here, while the last instances keep serving.
   */
  private base: Snapshot | undefined;
  /** Watch updates that came while a read was in flight: applied, in order, once it ends. */
  private pending: RegistryUpdate[] = [];
  private pendingBytes = 0;
  /** Date.now() before which no early read starts, and the gap the next one sets. */
  private earlyReadAfter = 0;
  private earlyGapMs = earlyReadGapMs;
  /** The running watch, when the discovery can watch. */
  private watching: AbortController | undefined;
  /**
   * How the holders read the registry; undefined while idle. A discovery may
   * hold etcd credentials (a gateway keeping the password and token), and an
   * idle entry stays in the process-wide cache after every transport closed,
   * so it must not keep one: the next holder brings its own, equivalent as
   * its key is equal. Reads and watches get it from the call that starts
   * them, and release cancels them, so no closure the entry keeps holds it.
   */
  private discovery: Discovery | undefined;

  constructor(private readonly service: string) {}

  peek(waitUntil?: (refresh: Promise<unknown>) => void): Snapshot | undefined {
    const { snapshot } = this.state;
    const stale = Date.now() >= this.freshUntil;
    if (snapshot !== undefined && this.inflight === undefined && stale) {
      const refresh = this.refresh().catch(() => {}); // reported as a discovery_failed event
      waitUntil?.(refresh);
    }
    // Serving "no instances" from a stale read would fail a call that the
    // refresh may well serve: servers that registered after the first read.
    return snapshot !== undefined && snapshot.instances.length === 0 && stale ? undefined : snapshot;
  }

  /** The read in flight (or a new one), bounded by one call's signal and timeout. */
  wait(signal: AbortSignal | undefined, timeoutMs: number | undefined): Promise<Snapshot> {
    const read = this.refresh();
    this.waiting++;
    return withinCall(read, this.service, signal, timeoutMs).finally(() => {
      // Every caller gave up on a cold read: nothing it finds will be served
      // before another call comes, so let it hold no timer or socket meanwhile.
      if (--this.waiting === 0 && this.state.snapshot === undefined && this.inflight?.promise === read) {
        this.abandon(`read of "${this.service}" cancelled: every call waiting for it gave up`);
      }
    });
  }

  refresh(): Promise<Snapshot> {
    if (this.inflight !== undefined) {
      return this.inflight.promise;
    }
    const discovery = this.discovery;
    if (discovery === undefined) {
      // Only a released handle asks an idle entry; a transport refuses calls once closed.
      return Promise.reject(new ConnectError(`read of "${this.service}" cancelled: every transport closed`, Code.Canceled));
    }
    const controller = new AbortController();
    // A read abandoned by release() neither updates the cache nor reports, so
    // it cannot disturb a read started for a transport created after it.
    const promise = discovery
      .load(this.service, controller.signal, this.base)
      .then(checkRevision)
      .then(
        (next) => (controller.signal.aborted ? next : this.accept(next, discovery)),
        (error: unknown) => {
          if (controller.signal.aborted) {
            throw ConnectError.from(error, Code.Canceled);
          }
          return this.restoreOrFail(error, controller.signal, discovery);
        },
      )
      .finally(() => {
        if (this.inflight?.promise !== promise) {
          return;
        }
        this.inflight = undefined;
        const pending = this.pending;
        this.pending = [];
        this.pendingBytes = 0;
        if (this.readAgain) {
          this.readAgain = false; // that read covers the pending updates too
          this.refresh().catch(() => {}); // reported as a discovery_failed event
        } else if (!controller.signal.aborted) {
          pending.forEach((update) => this.changed(update));
        }
      });
    this.inflight = { promise, controller };
    return promise;
  }

  /**
   * A peer of the snapshot could not be reached, so it likely left the
   * registry: reads it again now, unless the registry is watched (changes
   * arrive by themselves), nothing was read yet, or an early read ran within
   * the early-read gap. Returns the read in flight, if any.
   */
  refreshEarly(waitUntil?: (refresh: Promise<unknown>) => void): Promise<Snapshot> | undefined {
    const discovery = this.discovery;
    if (discovery === undefined || this.watching !== undefined || this.state.snapshot === undefined) {
      return undefined;
    }
    if (this.inflight !== undefined) {
      return this.inflight.promise;
    }
    const now = Date.now();
    if (now < this.earlyReadAfter) {
      return undefined;
    }
    const floorMs = Math.min(earlyReadGapMs, discovery.ttlMs);
    this.earlyReadAfter = now + Math.max(floorMs, this.earlyGapMs);
    // A read with unchanged instances keeps the snapshot object (writes elsewhere in etcd move the revision only).
    const before = this.state.snapshot;
    const read = this.refresh();
    const settled = read.then(
      () => (this.earlyGapMs = this.state.snapshot === before ? Math.min(2 * this.earlyGapMs, discovery.ttlMs) : floorMs),
      () => (this.earlyGapMs = Math.min(2 * this.earlyGapMs, discovery.ttlMs)), // reported as a discovery_failed event
    );
    waitUntil?.(settled);
    return read;
  }

  /** Whether a transport created later has anything to gain from this entry. */
  get hasSnapshot(): boolean {
    return this.state.snapshot !== undefined;
  }

  /**
   * Adds a holder reading the registry with `discovery`; pass what it returns
   * to release(). An idle entry adopts that discovery; a held one keeps its own.
   */
  hold(holder: Holder, discovery: Discovery): HolderRef {
    const ref = refTo(holder);
    this.holders.add(ref);
    this.discovery ??= discovery;
    this.keepWatching();
    return ref;
  }

  /** Returns true when that was the last holder: the entry is idle now. Releasing twice does nothing. */
  release(ref: HolderRef): boolean {
    if (!this.holders.delete(ref) || this.holders.size > 0) {
      return false;
    }
    // Nobody waits for the read any more: don't let it or the watch hold the
    // process open, and let a transport created later start a read of its own.
    this.abandon(`read of "${this.service}" cancelled: every transport closed`);
    this.watching?.abort();
    this.watching = undefined;
    this.discovery = undefined;
    return true;
  }

  private abandon(reason: string): void {
    this.inflight?.controller.abort(new ConnectError(reason, Code.Canceled));
    this.inflight = undefined;
    this.readAgain = false;
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Watches again from the current revision (after etcd's revisions started over). */
  private restartWatch(): void {
    this.watching?.abort();
    this.watching = undefined;
    queueMicrotask(() => this.keepWatching()); // once the state holds the new revision
  }

  /** Starts following changes once etcd has been read, if the discovery can watch. */
  private keepWatching(): void {
    const discovery = this.discovery;
    const { snapshot, restored } = this.state;
    if (discovery?.watch === undefined || this.watching !== undefined || snapshot === undefined || restored || this.holders.size === 0) {
      return;
    }
    const controller = new AbortController();
    this.watching = controller;
    void watchLoop(discovery.watch.bind(discovery), this.service, controller.signal, {
      revision: () => this.state.revision,
      changed: (update) => this.changed(update),
      failed: (error) => this.fail(error, discovery),
    });
  }

  /**
   * The registry changed. With an update, it is applied to the snapshot held
   * (after the read in flight, if any), at a cost in proportion to the change;
   * without one, or when it cannot be applied, the registry is read now, or
   * right after the read in flight.
   */
  private changed(update?: RegistryUpdate): void {
    const discovery = this.discovery;
    if (this.holders.size === 0 || discovery === undefined) {
      return;
    }
    if (update !== undefined && this.base !== undefined && !this.readAgain) {
      if (this.inflight !== undefined) {
        this.pendingBytes += update.bytes ?? 0;
        if (this.pending.push(update) <= maxPendingUpdates && this.pendingBytes <= maxPendingBytes) {
          return;
        }
        this.pending = [];
        this.pendingBytes = 0;
      } else {
        const next = applied(update, this.base);
        if (next !== undefined) {
          if (next !== this.base) {
            this.take(next, discovery);
          }
          return;
        }
        // Not applied (too big a registry, or not one this discovery made): later updates must not
        // apply to a base that lacks this one, so none is applied until a read is taken.
        this.base = undefined;
      }
    }
    this.freshUntil = 0;
    if (this.inflight !== undefined) {
      this.readAgain = true;
    } else {
      this.refresh().catch(() => {}); // reported as a discovery_failed event
    }
  }

  /** A snapshot a watch update made: taken by the rules of a read; one that breaks them is read afresh. */
  private take(next: Snapshot, discovery: Discovery): void {
    try {
      this.accept(checkRevision(next), discovery);
    } catch (error) {
      this.fail(error, discovery);
      this.changed();
    }
  }

  private accept(next: Snapshot, discovery: Discovery): Snapshot {
    const verdict = acceptRead(this.state, next);
    if (verdict.state.lowerReads === 0) {
      this.base = next; // taken: later updates apply to it
    }
    if (verdict.etcdReset) {
      this.pending = []; // changes of the etcd that was replaced
      this.pendingBytes = 0;
    }
    const before = this.state.snapshot;
    this.state = verdict.state;
    const served = verdict.state.snapshot!;
    this.freshUntil = Date.now() + (served.instances.length === 0 ? Math.min(discovery.ttlMs, retryAfterMs) : discovery.ttlMs);
    if (verdict.etcdReset) {
      this.restartWatch();
    }
    this.keepWatching();
    verdict.events.forEach((event) => this.emit(event));
    if (served !== before) {
      this.push(served);
    }
    this.save(served, discovery);
    return served;
  }

  /** Hands a new snapshot to every holder; one holder's failure is its own (its next call meets it), never the cache's. */
  private push(snapshot: Snapshot): void {
    for (const ref of this.holders) {
      try {
        ref.deref()?.adopt?.(snapshot);
      } catch {
        // the holder builds its peers again on its next call, which reports what failed
      }
    }
  }

  /** Saves what a registry read made the cache serve; never waited for by a call. */
  private save(served: Snapshot, discovery: Discovery): void {
    discovery.persistence?.save(served).catch((error: unknown) => {
      this.emit({ type: "snapshot_store_failed", service: this.service, operation: "put", reason: describe(error) });
    });
  }

  /**
   * The registry could not be read. At a cold start a stored snapshot serves,
   * if the discovery keeps one and it is usable; otherwise the read fails.
   */
  private async restoreOrFail(cause: unknown, signal: AbortSignal, discovery: Discovery): Promise<Snapshot> {
    const persistence = discovery.persistence;
    if (persistence === undefined || this.state.snapshot !== undefined) {
      throw this.fail(cause, discovery);
    }
    let restored: Awaited<ReturnType<typeof persistence.restore>>;
    try {
      restored = await persistence.restore(this.service);
    } catch (error) {
      if (!signal.aborted) {
        this.emit({ type: "snapshot_store_failed", service: this.service, operation: "get", reason: describe(error) });
      }
    }
    if (signal.aborted) {
      throw ConnectError.from(signal.reason, Code.Canceled);
    }
    if (restored === undefined || restored.snapshot.instances.length === 0) {
      throw this.fail(cause, discovery);
    }
    const verdict = acceptRestored(this.state, restored.snapshot);
    this.state = verdict.state;
    this.fail(cause, discovery); // reported with serving: true, and etcd is asked again within retryAfterMs
    verdict.events.forEach((event) => this.emit(event));
    return this.state.snapshot!;
  }

  private fail(cause: unknown, discovery: Discovery): ConnectError {
    const reason = ConnectError.from(cause, Code.Unavailable);
    const error = new ConnectError(
      `cannot read service "${this.service}" from ${discovery.describe(this.service)}: ${reason.rawMessage}`,
      reason.code,
      undefined,
      undefined,
      cause,
    );
    const serving = this.state.snapshot !== undefined;
    if (serving) {
      this.freshUntil = Date.now() + Math.min(discovery.ttlMs, retryAfterMs);
    }
    this.emit({ type: "discovery_failed", service: this.service, error, serving });
    return error;
  }

  private emit(event: BalancerEvent): void {
    for (const ref of this.holders) {
      const holder = ref.deref();
      if (holder !== undefined) {
        notify(holder.listener, event);
      }
    }
  }
}

/** The snapshot after an update; undefined (read afresh) when the discovery cannot make it, or fails to. */
function applied(update: RegistryUpdate, base: Snapshot): Snapshot | undefined {
  try {
    return update.applyTo(base);
  } catch {
    return undefined;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * "Never go back in revision" compares revisions, so one that is not a
 * non-negative integer (NaN compares false either way) fails the read, from
 * whatever discovery it came; the last good snapshot keeps serving.
 */
function checkRevision(snapshot: Snapshot): Snapshot {
  if (!Number.isSafeInteger(snapshot.revision) || snapshot.revision < 0) {
    throw new ConnectError(`the registry answered with revision ${String(snapshot.revision).slice(0, 40)}, not a non-negative integer`, Code.Internal);
  }
  return snapshot;
}
