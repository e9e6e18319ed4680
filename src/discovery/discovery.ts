import type { Instance, SkippedEntry } from "../registry/instance.js";

/** What a discovery read of one service found. */
export interface Snapshot {
  /** The service read. */
  readonly service: string;
  /** The etcd revision the read saw; a snapshot never replaces one with a higher revision. */
  readonly revision: number;
  /** The usable instances, in key order. */
  readonly instances: readonly Instance[];
  /** Entries under the service's prefix that could not be used. */
  readonly skipped: readonly SkippedEntry[];
}

/**
 * A source of service snapshots. Snapshots are cached per (key, service) for
 * the whole process, so every transport reading the same registry the same
 * way shares one cache and one in-flight read.
 */
export interface Discovery {
  /** Identifies the registry and the way it is read; never contains secrets. */
  readonly key: string;
  /** How long a snapshot is fresh: within it no read is made. */
  readonly ttlMs: number;
  /** Where the instances are looked up, for error messages; never contains secrets. */
  describe(service: string): string;
  /**
   * Reads the current instances of a service. Rejects with a ConnectError.
   * `previous` is the last snapshot this discovery gave the cache for the
   * service, if any: a discovery may reuse what it decoded for the entries
   * that did not change since.
   */
  load(service: string, signal: AbortSignal, previous?: Snapshot): Promise<Snapshot>;
  /**
   * Optional: follows changes after `afterRevision`, telling the listener when
   * the watch is open and when the service's entries change, until the signal
   * aborts (resolves) or the watch breaks (rejects). A change that comes with
   * an update is applied to the snapshot the cache holds; one without is read
   * with load().
   */
  watch?(service: string, afterRevision: number, signal: AbortSignal, listener: WatchListener): Promise<void>;
  /** Optional: a copy of the snapshots kept outside the process, for cold starts with the registry unreachable. */
  readonly persistence?: SnapshotPersistence;
}

/** Keeps snapshots outside the process. The cache decides when: it saves reads and restores only at a cold start. */
export interface SnapshotPersistence {
  /** Saves a snapshot just read from the registry. */
  save(snapshot: Snapshot): Promise<void>;
  /** The last snapshot saved and when; undefined when none; rejects, saying why, when it is unusable (corrupt, too old). */
  restore(service: string): Promise<{ snapshot: Snapshot; savedAt: number } | undefined>;
}

export interface WatchListener {
  /** The watch is established: a later break is a new failure, not a continuing one. */
  opened(): void;
  /** The service's entries changed: as `update` says, or, without one, in ways only a read can tell. */
  changed(update?: RegistryUpdate): void;
}

/** Changes a watch saw, in the order etcd made them. */
export interface RegistryUpdate {
  /** The revision of the last change it holds. */
  readonly revision: number;
  /** Text it holds (keys and values, in UTF-16 units): the cache bounds what it queues by this. */
  readonly bytes?: number;
  /**
   * The snapshot after these changes, made from the one the cache last took
   * from this discovery (a read, or an earlier update): unchanged entries keep
   * their Instance objects. Changes at or below `base.revision` are already
   * in it and are passed over. Undefined when it cannot be made from `base`
   * (one this discovery did not make): the cache reads the registry instead.
   */
  applyTo(base: Snapshot): Snapshot | undefined;
}
