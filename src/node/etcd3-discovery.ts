import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3 } from "etcd3";
import { answerBytes, createSnapshotBuilder, readKey, registryUpdate, type RegistryEntry } from "../discovery/decode.js";
import type { Discovery, Snapshot } from "../discovery/discovery.js";
import { prefixEnd } from "../discovery/etcd-answer.js";
import { resolveFormat, servicePrefix, type RegistryFormat } from "../registry/format.js";
import { watchPrefix } from "./etcd3/watch-prefix.js";
import { createObjectIds } from "../object-ids.js";

export interface Etcd3DiscoveryOptions {
  /**
   * An `Etcd3` client from the `etcd3` package, configured as your app
   * already does (hosts, TLS, auth). The discovery never closes it: close it
   * after the transports that use it, or the process stays alive.
   */
  readonly client: Etcd3;
  /** Key namespace; "/microservices" for kratos (its default), "" for etcd-naming. */
  readonly namespace?: string;
  /** Registry layout: "kratos" (default), "etcd-naming", or a decoder function. */
  readonly format?: RegistryFormat;
  /**
   * How long a snapshot is fresh, in ms (default 10,000). Changes arrive by
   * watch within a round trip; this bounds how long the transport serves a
   * snapshot while the watch is broken.
   */
  readonly ttlMs?: number;
  /** Limit for one read, in ms (default 5,000): etcd3 ignores dialTimeout, so a read of an unreachable etcd would never end. */
  readonly requestTimeoutMs?: number;
  /**
   * Largest registry read, in bytes (default 33,554,432: 32 MiB), counted as
   * etcdDiscovery's option of the same name (keys and values as base64), over
   * all pages of a read. A bigger read fails with ResourceExhausted naming
   * this option, and the last good snapshot keeps serving; a watch never
   * grows the snapshot past it either (the registry is read, and refused, instead).
   */
  readonly maxResponseBytes?: number;
}

const defaultTtlMs = 10_000;
const defaultRequestTimeoutMs = 5_000;
const defaultMaxResponseBytes = 32 * 1024 * 1024;

/**
 * Discovers instances through an existing etcd3 client, following each
 * service's prefix with one watch for as long as a transport uses it (Node
 * only). The snapshot rules are etcdDiscovery's: they are the cache's.
 */
export function etcd3Discovery(options: Etcd3DiscoveryOptions): Discovery {
  const { client } = options;
  if (typeof client?.getAll !== "function" || typeof client.watch !== "function") {
    throw new ConnectError("etcd3Discovery option client must be an Etcd3 client from the etcd3 package", Code.InvalidArgument);
  }
  const layout = resolveFormat(options.format);
  const namespace = options.namespace ?? layout.defaultNamespace;
  const ttlMs = checkDuration("ttlMs", options.ttlMs ?? defaultTtlMs);
  const requestTimeoutMs = checkDuration("requestTimeoutMs", options.requestTimeoutMs ?? defaultRequestTimeoutMs);
  const maxResponseBytes = options.maxResponseBytes ?? defaultMaxResponseBytes;
  if (!Number.isSafeInteger(maxResponseBytes) || maxResponseBytes <= 0) {
    throw new ConnectError(`etcd3Discovery option maxResponseBytes must be a whole number of bytes > 0, got ${maxResponseBytes}`, Code.InvalidArgument);
  }
  const limits: ReadLimits = { requestTimeoutMs, maxResponseBytes };
  const where = `etcd3 client (namespace "${namespace}", ${layout.name} format)`;
  return {
    key: JSON.stringify(["etcd3", clientId(client), namespace, layout.name, ttlMs, requestTimeoutMs, maxResponseBytes]),
    ttlMs,
    describe: () => where,
    async load(service, signal, previous) {
      const prefix = servicePrefix(namespace, service);
      for (let attempt = 1; ; attempt++) {
        try {
          return await readPages(client, layout, service, prefix, limits, signal, previous);
        } catch (error) {
          // compacted between two pages: the read starts over at the revision etcd has now
          if (!compacted(error) || attempt >= compactedReadAttempts || signal.aborted) {
            throw signal.aborted ? ConnectError.from(signal.reason, Code.Canceled) : error instanceof ConnectError ? error : readFailed(prefix, error);
          }
        }
      }
    },
    watch: (service, afterRevision, signal, listener) =>
      watchPrefix(client, servicePrefix(namespace, service), afterRevision, signal, {
        opened: () => listener.opened(),
        // the cache applies the events to its snapshot, decoding only the keys they touch
        changed: (events) => listener.changed(registryUpdate(layout, service, events, maxResponseBytes)),
      }),
  };
}

/** Keys per page of a read: each page is decoded while etcd sends the next, and no answer holds a whole 20,000-instance registry. */
const pageKeys = 500;
/** How many times a read in pages starts over when etcd compacted its revision between two pages. */
const compactedReadAttempts = 3;
/** Most pages of one read, and how many request timeouts it may take at most: as etcdDiscovery's. */
const maxPagesPerRead = 1_000;
const readTimeouts = 4;

interface ReadLimits {
  readonly requestTimeoutMs: number;
  readonly maxResponseBytes: number;
}

/**
 * Every key under the prefix, in pages read at the revision of the first, so
 * that they make one consistent read; each is decoded (in slices of a few
 * ms) while etcd sends the next.
 */
async function readPages(
  client: Etcd3,
  layout: ReturnType<typeof resolveFormat>,
  service: string,
  prefix: string,
  { requestTimeoutMs, maxResponseBytes }: ReadLimits,
  outer: AbortSignal,
  previous: Snapshot | undefined,
): Promise<Snapshot> {
  const readMs = readTimeouts * requestTimeoutMs;
  const overdue = new ConnectError(
    `etcd3 read of "${prefix}" in pages did not end within ${readMs} ms (${readTimeouts} × requestTimeoutMs): refused`,
    Code.DeadlineExceeded,
  );
  const signal = AbortSignal.any([outer, AbortSignal.timeout(readMs)]);
  try {
    return await readPagesWithin(client, layout, service, prefix, requestTimeoutMs, maxResponseBytes, signal, previous);
  } catch (error) {
    throw signal.aborted && !outer.aborted ? overdue : error;
  }
}

async function readPagesWithin(
  client: Etcd3,
  layout: ReturnType<typeof resolveFormat>,
  service: string,
  prefix: string,
  requestTimeoutMs: number,
  maxResponseBytes: number,
  signal: AbortSignal,
  previous: Snapshot | undefined,
): Promise<Snapshot> {
  const builder = createSnapshotBuilder(layout, service, previous);
  const end = Buffer.from(prefixEnd(prefix));
  let revision: string | undefined;
  let pages = 0;
  let keys = 0;
  /** Text read (keys and values), counted as the registry's index counts it. */
  let text = 0;
  const page = (start: Buffer) => {
    let range = client.getAll().inRange({ start, end }).limit(pageKeys);
    if (revision !== undefined) {
      range = range.revision(revision);
    }
    const read = untilAborted(range.options({ deadline: Date.now() + requestTimeoutMs }).exec(), signal);
    read.catch(() => {}); // awaited below, unless decoding the page before fails first
    return read;
  };
  let ahead = page(Buffer.from(prefix));
  for (;;) {
    const { header, kvs, more } = await ahead;
    revision ??= header.revision;
    pages++;
    keys += kvs.length;
    const last = kvs.at(-1);
    if (more && last !== undefined && pages >= maxPagesPerRead) {
      throw new ConnectError(`etcd answered more than ${maxPagesPerRead} pages of "${prefix}" (${keys} keys so far, ${pageKeys} asked a page): refused`, Code.ResourceExhausted);
    }
    // the next page starts after the bytes of the last key, even one that is not UTF-8 (skipped)
    if (more && last !== undefined) {
      ahead = page(Buffer.concat([last.key, Buffer.from([0])]));
    }
    const entries: RegistryEntry[] = kvs.map((kv) => {
      const { key, unreadable } = readKey(kv.key);
      const value = kv.value.toString();
      text += (unreadable === undefined ? key.length : kv.key.length) + value.length;
      return { key, value, modRevision: revisionOf(kv.mod_revision), ...(unreadable !== undefined && { unreadable }) };
    });
    if (answerBytes(text) > maxResponseBytes) {
      throw new ConnectError(
        `etcd3 read of "${prefix}" brought more than ${maxResponseBytes} bytes: raise the etcd3Discovery option maxResponseBytes if the registry really is that big`,
        Code.ResourceExhausted,
      );
    }
    await builder.addPaced(entries, signal);
    if (!more || last === undefined) {
      return builder.finish(Number(revision));
    }
  }
}

/** A mod_revision as etcd3 gives it (a decimal string); 0, which reuses nothing, when it is not one. */
function revisionOf(text: string): number {
  const revision = Number(text);
  return Number.isSafeInteger(revision) && revision > 0 ? revision : 0;
}

function compacted(error: unknown): boolean {
  return error instanceof Error && error.message.includes("required revision has been compacted");
}

/** Distinguishes clients (they may reach different clusters as different users) without showing their settings. */
const clientId = createObjectIds<Etcd3>();

/** The read itself runs on until its deadline: a grpc call made through etcd3 cannot be cancelled. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function readFailed(prefix: string, error: unknown): ConnectError {
  const message = error instanceof Error ? error.message : String(error);
  return new ConnectError(`etcd3 read of "${prefix}" failed: ${message}`, Code.Unavailable, undefined, undefined, error);
}

function checkDuration(name: string, ms: number): number {
  if (!(ms >= 0) || !Number.isFinite(ms)) {
    throw new ConnectError(`etcd3Discovery option ${name} must be a finite number of ms ≥ 0, got ${ms}`, Code.InvalidArgument);
  }
  return ms;
}
