import { Code, ConnectError } from "@connectrpc/connect";
import { resolveFormat, servicePrefix, type RegistryFormat } from "../registry/format.js";
import { createSnapshotBuilder, registryUpdate, type SnapshotBuilder } from "./decode.js";
import type { Discovery, WatchListener } from "./discovery.js";
import { credentialsId } from "./credentials-id.js";
import { createEtcdGateway, type EtcdAuth } from "./etcd-gateway.js";
import { defaultSnapshotMaxAgeMs, snapshotPersistence, type SnapshotStore } from "./snapshot-store.js";
import { createObjectIds } from "../object-ids.js";

export interface EtcdDiscoveryOptions {
  /** etcd client URLs, e.g. ["http://127.0.0.1:2379"]; the next is asked when one fails or is slow (hedgeAfterMs). */
  readonly endpoints: readonly string[];
  /** Key namespace; "/microservices" for kratos (its default), "" for etcd-naming. */
  readonly namespace?: string;
  /** Registry layout: "kratos" (default), "etcd-naming", or a decoder function. */
  readonly format?: RegistryFormat;
  /** How long a snapshot is fresh, in ms (default 10,000). */
  readonly ttlMs?: number;
  /** etcd user and password; a token is requested and renewed as needed. */
  readonly auth?: EtcdAuth;
  /** The fetch to use, e.g. one with a client certificate; defaults to globalThis.fetch. */
  readonly fetch?: typeof globalThis.fetch;
  /** Limit for one etcd request, in ms (default 5,000). */
  readonly requestTimeoutMs?: number;
  /**
   * Also watch the service's prefix, so a registry change is seen within a
   * round trip instead of within ttlMs (default false). The changes are
   * applied to the snapshot held, decoding only the keys they touch, so a
   * change of one instance among 20,000 costs a few ms, not a read of all.
   * For long-running processes: the open watch keeps a Node process alive
   * until close().
   */
  readonly watch?: boolean;
  /**
   * When one endpoint has not answered a read within this many ms, the next one
   * is asked too and the first answer wins (default 300), so a hung etcd member
   * does not eat the call's deadline.
   */
  readonly hedgeAfterMs?: number;
  /**
   * Keeps the last snapshot of each service outside the process ({ get, put };
   * a Cloudflare KV namespace fits as it is, or fileSnapshotStore() on Node):
   * written after reads, read only at a cold start when etcd cannot be read.
   */
  readonly snapshotStore?: SnapshotStore;
  /** A stored snapshot older than this is ignored, in ms (default 86,400,000: 24 h). */
  readonly snapshotMaxAgeMs?: number;
  /**
   * Largest registry read, in bytes (default 33,554,432: 32 MiB). A service is
   * read in pages of 500 keys at one revision, and the pages count together:
   * 20,000 kratos instances with 200-byte values take about 6 MB, 10,000
   * with 1 KB values about 16 MB (base64 and etcd's per-key fields included).
   * A bigger read fails with ResourceExhausted naming this option, and the
   * last good snapshot keeps serving.
   */
  readonly maxResponseBytes?: number;
  /**
   * Longest line of the watch stream, in bytes (default 8,388,608: 8 MiB).
   * etcd is asked to split big batches of changes into lines of about its
   * --max-request-bytes (1.5 MiB by default). A longer line breaks the watch
   * with ResourceExhausted; it is opened again after a backoff.
   */
  readonly maxWatchLineBytes?: number;
}

const defaultTtlMs = 10_000;
const defaultRequestTimeoutMs = 5_000;
const defaultHedgeAfterMs = 300;
const defaultMaxResponseBytes = 32 * 1024 * 1024;
const defaultMaxWatchLineBytes = 8 * 1024 * 1024;

/**
 * Discovers instances through etcd's v3 JSON gateway (on by default on the
 * client port of etcd ≥ 3.4) with fetch, so it runs on Node, serverless and
 * edge runtimes alike.
 */
export function etcdDiscovery(options: EtcdDiscoveryOptions): Discovery {
  const layout = resolveFormat(options.format);
  const namespace = options.namespace ?? layout.defaultNamespace;
  const ttlMs = checkDuration("ttlMs", options.ttlMs ?? defaultTtlMs);
  const requestTimeoutMs = checkDuration("requestTimeoutMs", options.requestTimeoutMs ?? defaultRequestTimeoutMs);
  const hedgeAfterMs = checkDuration("hedgeAfterMs", options.hedgeAfterMs ?? defaultHedgeAfterMs);
  const maxAgeMs = checkDuration("snapshotMaxAgeMs", options.snapshotMaxAgeMs ?? defaultSnapshotMaxAgeMs);
  const maxResponseBytes = checkBytes("maxResponseBytes", options.maxResponseBytes ?? defaultMaxResponseBytes);
  const maxWatchLineBytes = checkBytes("maxWatchLineBytes", options.maxWatchLineBytes ?? defaultMaxWatchLineBytes);
  const gateway = createEtcdGateway({
    endpoints: options.endpoints,
    auth: options.auth,
    fetch: options.fetch,
    requestTimeoutMs,
    hedgeAfterMs,
    maxResponseBytes,
    maxWatchLineBytes,
  });
  const where = `etcd ${gateway.endpoints.join(", ")} (namespace "${namespace}", ${layout.name} format)`;
  const watch = options.watch ?? false;
  return {
    key: JSON.stringify([
      "etcd",
      [...gateway.endpoints].sort(),
      namespace,
      layout.name,
      credentialsId(options.auth),
      fetchId(options.fetch),
      requestTimeoutMs,
      hedgeAfterMs,
      ttlMs,
      watch,
      storeId(options.snapshotStore),
      maxAgeMs,
      maxResponseBytes,
      maxWatchLineBytes,
    ]),
    ttlMs,
    describe: () => where,
    async load(service, signal, previous) {
      // Pages are decoded as they come, while etcd sends the next one.
      let builder: SnapshotBuilder | undefined;
      const revision = await gateway.rangePrefix(servicePrefix(namespace, service), signal, {
        start: () => void (builder = createSnapshotBuilder(layout, service, previous)),
        page: (kvs) => builder!.addPaced(kvs, signal),
      });
      return builder!.finish(revision);
    },
    ...(options.snapshotStore !== undefined && {
      // Keyed by what is read and how, never by who reads: no credentials in a store key.
      persistence: snapshotPersistence(
        options.snapshotStore,
        [[...gateway.endpoints].sort(), namespace, typeof options.format === "function" ? `custom ${options.format.name}` : layout.name],
        maxAgeMs,
      ),
    }),
    ...(watch && {
      watch: (service: string, afterRevision: number, signal: AbortSignal, listener: WatchListener) =>
        gateway.watchPrefix(servicePrefix(namespace, service), afterRevision, signal, {
          opened: () => listener.opened(),
          // the cache applies the events to its snapshot, decoding only the keys they touch
          // no more than a read of them would bring: past maxResponseBytes, the registry is read (and refused) instead
          changed: (events) => listener.changed(events === undefined ? undefined : registryUpdate(layout, service, events, maxResponseBytes)),
        }),
    }),
  };
}

const storeIds = createObjectIds<SnapshotStore>();

/** Distinguishes stores: a transport given a store must not share a cache entry that never saves to it. */
function storeId(store: SnapshotStore | undefined): number {
  return store === undefined ? 0 : storeIds(store);
}

const fetchIds = createObjectIds<typeof globalThis.fetch>();

/** Distinguishes fetch functions (one may carry a client certificate another lacks). */
function fetchId(fetch: typeof globalThis.fetch | undefined): number {
  return fetch === undefined ? 0 : fetchIds(fetch);
}

function checkDuration(name: string, ms: number): number {
  if (!(ms >= 0) || !Number.isFinite(ms)) {
    throw new ConnectError(`etcdDiscovery option ${name} must be a finite number of ms ≥ 0, got ${ms}`, Code.InvalidArgument);
  }
  return ms;
}

function checkBytes(name: string, bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new ConnectError(`etcdDiscovery option ${name} must be a whole number of bytes > 0, got ${bytes}`, Code.InvalidArgument);
  }
  return bytes;
}
