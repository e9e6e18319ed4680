import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3 } from "etcd3";
import { decodeSnapshot } from "../discovery/decode.js";
import type { Discovery } from "../discovery/discovery.js";
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
}

const defaultTtlMs = 10_000;
const defaultRequestTimeoutMs = 5_000;

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
  const where = `etcd3 client (namespace "${namespace}", ${layout.name} format)`;
  return {
    key: JSON.stringify(["etcd3", clientId(client), namespace, layout.name, ttlMs, requestTimeoutMs]),
    ttlMs,
    describe: () => where,
    async load(service, signal) {
      const prefix = servicePrefix(namespace, service);
      const read = client.getAll().prefix(prefix).options({ deadline: Date.now() + requestTimeoutMs }).exec();
      const { header, kvs } = await untilAborted(read, signal).catch((error: unknown) => {
        throw signal.aborted ? ConnectError.from(signal.reason, Code.Canceled) : readFailed(prefix, error);
      });
      const entries = kvs.map((kv) => ({ key: kv.key.toString(), value: kv.value.toString() }));
      return decodeSnapshot(layout, service, Number(header.revision), entries);
    },
    watch: (service, afterRevision, signal, listener) => watchPrefix(client, servicePrefix(namespace, service), afterRevision, signal, listener),
  };
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
