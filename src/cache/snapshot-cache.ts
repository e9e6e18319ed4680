import { Code, ConnectError } from "@connectrpc/connect";
import type { Discovery, Snapshot } from "../discovery/discovery.js";
import { notify, type BalancerEvent, type EventListener } from "../events.js";

/** A transport's handle on the process-wide snapshot of one service. */
export interface SnapshotCache {
  /**
   * The snapshot to serve now, or undefined before the first read succeeded.
   * When it is older than the TTL, one background refresh starts and the
   * stale snapshot keeps serving meanwhile; `waitUntil` is handed that refresh,
   * so runtimes that freeze after the response let it finish.
   */
  peek(waitUntil?: (refresh: Promise<unknown>) => void): Snapshot | undefined;
  /** Waits for the first snapshot, within the call's signal and timeout. */
  load(signal: AbortSignal | undefined, timeoutMs: number | undefined): Promise<Snapshot>;
  /** Stops this handle's events; the last release cancels an in-flight read. */
  release(): void;
}

/** After a failed refresh, the stale snapshot serves for at most this long before etcd is asked again. */
const retryAfterFailureMs = 1_000;
/** Reads in a row below the known revision after which etcd is taken to have been rebuilt. */
const etcdResetAfterReads = 3;
/** A watch open at least this long before it broke counts as having worked. */
const healthyWatchMs = 30_000;
/** Longest wait before watching again after the watch broke. */
const maxWatchBackoffMs = 30_000;

/** One per (discovery key, service) in the whole process: warm serverless invocations reuse it. */
const shared = new Map<string, SharedSnapshot>();

export function acquireSnapshotCache(discovery: Discovery, service: string, listener: EventListener): SnapshotCache {
  const key = `${discovery.key}\n${service}`;
  let entry = shared.get(key);
  if (entry === undefined) {
    entry = new SharedSnapshot(discovery, service);
    shared.set(key, entry);
  }
  const cache = entry;
  const holder = { listener };
  cache.holders.add(holder);
  cache.keepWatching();
  let released = false;
  return {
    peek: (waitUntil) => cache.peek(waitUntil),
    load(signal, timeoutMs) {
      const snapshot = cache.peek();
      return snapshot !== undefined ? Promise.resolve(snapshot) : withinCall(cache.refresh(), service, signal, timeoutMs);
    },
    release() {
      if (!released) {
        released = true;
        cache.release(holder);
      }
    },
  };
}

class SharedSnapshot {
  /** One per acquired handle: two transports may share a listener function. */
  readonly holders = new Set<{ readonly listener: EventListener }>();
  private snapshot: Snapshot | undefined;
  /** The highest revision read so far, even when its content equalled the served snapshot. */
  private revision = Number.NEGATIVE_INFINITY;
  private freshUntil = 0;
  /** The registry read empty and the last instances keep serving. */
  private servingOverEmpty = false;
  private inflight: { promise: Promise<Snapshot>; controller: AbortController } | undefined;
  /** A change was seen while a read was in flight: read again once it ends. */
  private readAgain = false;
  /** The running watch, when the discovery can watch. */
  private watching: AbortController | undefined;
  /** Reads in a row that saw a revision below the highest one known. */
  private lowerReads = 0;

  constructor(
    private readonly discovery: Discovery,
    private readonly service: string,
  ) {}

  peek(waitUntil?: (refresh: Promise<unknown>) => void): Snapshot | undefined {
    if (this.snapshot !== undefined && this.inflight === undefined && Date.now() >= this.freshUntil) {
      const refresh = this.refresh().catch(() => {}); // reported as a discovery_failed event
      waitUntil?.(refresh);
    }
    return this.snapshot;
  }

  refresh(): Promise<Snapshot> {
    if (this.inflight !== undefined) {
      return this.inflight.promise;
    }
    const controller = new AbortController();
    // A read abandoned by release() neither updates the cache nor reports, so
    // it cannot disturb a read started for a transport created after it.
    const promise = this.discovery
      .load(this.service, controller.signal)
      .then(
        (next) => (controller.signal.aborted ? next : this.accept(next)),
        (error: unknown) => {
          throw controller.signal.aborted ? ConnectError.from(error, Code.Canceled) : this.fail(error);
        },
      )
      .finally(() => {
        if (this.inflight?.promise !== promise) {
          return;
        }
        this.inflight = undefined;
        if (this.readAgain) {
          this.readAgain = false;
          this.refresh().catch(() => {}); // reported as a discovery_failed event
        }
      });
    this.inflight = { promise, controller };
    return promise;
  }

  release(holder: { readonly listener: EventListener }): void {
    this.holders.delete(holder);
    if (this.holders.size === 0) {
      // Nobody waits for the read any more: don't let it or the watch hold the
      // process open, and let a transport created later start a read of its own.
      this.inflight?.controller.abort(new ConnectError(`read of "${this.service}" cancelled: every transport closed`, Code.Canceled));
      this.inflight = undefined;
      this.readAgain = false;
      this.watching?.abort();
      this.watching = undefined;
    }
  }

  /** Watches again from the current revision (after etcd's revisions started over). */
  private restartWatch(): void {
    this.watching?.abort();
    this.watching = undefined;
    queueMicrotask(() => this.keepWatching()); // once `revision` holds the new value
  }

  /** Starts following changes once there is a snapshot to follow, if the discovery can watch. */
  keepWatching(): void {
    if (this.discovery.watch === undefined || this.watching !== undefined || this.snapshot === undefined || this.holders.size === 0) {
      return;
    }
    const controller = new AbortController();
    this.watching = controller;
    void this.watchLoop(this.discovery.watch.bind(this.discovery), controller.signal);
  }

  private async watchLoop(watch: NonNullable<Discovery["watch"]>, signal: AbortSignal): Promise<void> {
    let failures = 0;
    let openedAt: number | undefined;
    const listener = {
      opened: () => (openedAt = Date.now()),
      changed: () => this.changed(),
    };
    while (!signal.aborted) {
      try {
        openedAt = undefined;
        await watch(this.service, this.revision, signal, listener);
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        // A watch that stayed open a while worked: start the backoff over. One
        // that a proxy ends right after opening keeps backing off.
        if (openedAt !== undefined && Date.now() - openedAt >= healthyWatchMs) {
          failures = 0;
        }
        failures++;
        this.fail(error);
        this.changed(); // catch up on whatever the broken watch missed
        await pause(Math.min(maxWatchBackoffMs, 250 * 2 ** failures), signal);
      }
    }
  }

  /** The registry changed: read it now, or right after the read in flight. */
  private changed(): void {
    if (this.holders.size === 0) {
      return;
    }
    this.freshUntil = 0;
    if (this.inflight !== undefined) {
      this.readAgain = true;
    } else {
      this.refresh().catch(() => {}); // reported as a discovery_failed event
    }
  }

  private accept(next: Snapshot): Snapshot {
    this.freshUntil = Date.now() + this.discovery.ttlMs;
    if (this.snapshot !== undefined && next.revision < this.revision) {
      // An older read that lost a race never replaces a newer one. Lower
      // revisions read again and again, though, mean etcd was rebuilt or
      // restored, and its revisions started over.
      if (++this.lowerReads < etcdResetAfterReads) {
        return this.snapshot;
      }
      this.restartWatch();
    }
    this.lowerReads = 0;
    this.revision = next.revision;
    if (next.instances.length > 0) {
      this.servingOverEmpty = false;
    }
    if (this.snapshot !== undefined && sameContent(this.snapshot, next)) {
      return this.snapshot; // same instances: keep the object so balancers keep their state
    }
    if (next.instances.length === 0 && this.snapshot !== undefined && this.snapshot.instances.length > 0) {
      // kratos' zero-endpoint protection: an empty registry is more often a wiped
      // or misconfigured etcd than a fleet scaled to zero, so keep the last peers.
      if (!this.servingOverEmpty) {
        this.servingOverEmpty = true;
        this.emit({ type: "empty_registry_ignored", service: this.service, revision: next.revision, instances: this.snapshot.instances.length });
      }
      return this.snapshot;
    }
    this.snapshot = next;
    this.keepWatching();
    this.emit({ type: "snapshot", service: this.service, revision: next.revision, instances: next.instances.length });
    for (const { key, reason } of next.skipped) {
      this.emit({ type: "entry_skipped", service: this.service, key, reason });
    }
    return next;
  }

  private fail(cause: unknown): ConnectError {
    const reason = ConnectError.from(cause, Code.Unavailable);
    const error = new ConnectError(
      `cannot read service "${this.service}" from ${this.discovery.describe(this.service)}: ${reason.rawMessage}`,
      reason.code,
      undefined,
      undefined,
      cause,
    );
    const serving = this.snapshot !== undefined;
    if (serving) {
      this.freshUntil = Date.now() + Math.min(this.discovery.ttlMs, retryAfterFailureMs);
    }
    this.emit({ type: "discovery_failed", service: this.service, error, serving });
    return error;
  }

  private emit(event: BalancerEvent): void {
    for (const { listener } of this.holders) {
      notify(listener, event);
    }
  }
}

/** Resolves after ms, or at once when the signal aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

function sameContent(a: Snapshot, b: Snapshot): boolean {
  return JSON.stringify([a.instances, a.skipped]) === JSON.stringify([b.instances, b.skipped]);
}

/** Bounds a shared read by one call's signal and timeout; the read itself goes on for the others. */
function withinCall<T>(
  promise: Promise<T>,
  service: string,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): Promise<T> {
  if (signal === undefined && timeoutMs === undefined) {
    return promise;
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => finish(() => reject(ConnectError.from(signal?.reason, Code.Canceled)));
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(
            () =>
              finish(() =>
                reject(new ConnectError(`reading the instances of "${service}" took longer than the call's ${timeoutMs} ms timeout`, Code.DeadlineExceeded)),
              ),
            timeoutMs,
          );
    function finish(settle: () => void) {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      settle();
    }
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener("abort", onAbort);
    promise.then(
      (value) => finish(() => resolve(value)),
      (error: unknown) => finish(() => reject(error)),
    );
  });
}
