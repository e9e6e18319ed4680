import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3, IWatchResponse } from "etcd3";
import { readKey, type RegistryEvent } from "../../discovery/decode.js";

/** What the watch tells: as the gateway's watch (see GatewayWatchListener). */
export interface PrefixListener {
  opened(): void;
  /** Keys under the prefix changed, as these events say. */
  changed(events: readonly RegistryEvent[]): void;
}

/**
 * Follows a key prefix from `afterRevision` with one etcd3 watcher, per the
 * Discovery.watch contract: resolves when the signal aborts, rejects when the
 * watch breaks. A break is never retried here: etcd3 would resume from the
 * revision of its last response, which may be past events not yet delivered,
 * while the cache re-reads and watches again from what it has read.
 */
export function watchPrefix(client: Etcd3, prefix: string, afterRevision: number, signal: AbortSignal, listener: PrefixListener): Promise<void> {
  if (signal.aborted) {
    return Promise.resolve();
  }
  const watcher = client.watch().prefix(prefix).startRevision(String(afterRevision + 1)).watcher();
  // An 'error' with no listener kills the process; this one outlives the watch.
  watcher.on("error", () => {});
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (error?: Error) => {
      if (done) {
        return;
      }
      done = true;
      signal.removeEventListener("abort", onAbort);
      // Cancels also a watcher still connecting: etcd3 then drops it or cancels it once created.
      watcher.cancel().catch(() => {});
      error === undefined ? resolve() : reject(error);
    };
    const onAbort = () => finish();
    const broken = (what: string) => (error: Error) =>
      finish(new ConnectError(`etcd ${what} the watch of "${prefix}" from revision ${afterRevision + 1}: ${error.message}`, Code.Unavailable, undefined, undefined, error));
    signal.addEventListener("abort", onAbort);
    watcher.on("connected", () => done || listener.opened());
    /** The highest header revision so far: etcd's revision never goes back within a watch. */
    let seen = 0;
    watcher.on("data", (response: IWatchResponse) => {
      if (done || response.events.length === 0) {
        return;
      }
      const header = Number(response.header?.revision);
      if (!Number.isSafeInteger(header) || header < seen) {
        finish(new ConnectError(`etcd sent changes of "${prefix}" at a header revision that is not one, or below a line before: refused`, Code.Internal));
        return;
      }
      seen = header;
      const events = registryEvents(response, prefix, header);
      if (typeof events === "string") {
        finish(new ConnectError(`etcd sent changes of "${prefix}" that cannot be applied: ${events}`, Code.Internal));
      } else {
        listener.changed(events);
      }
    });
    watcher.on("disconnected", broken("disconnected"));
    // etcd cancels a watch whose start revision was compacted; the cache then reads afresh.
    watcher.on("error", broken("cancelled"));
  });
}

/** The events of a watch response, or what is wrong with them: a key outside the prefix, a revision that is not one. */
function registryEvents(response: IWatchResponse, prefix: string, header: number): RegistryEvent[] | string {
  const events: RegistryEvent[] = [];
  const prefixBytes = Buffer.from(prefix);
  for (const { type, kv } of response.events) {
    // a key that is not UTF-8 is shown, marked, and skipped by the index (see readKey)
    const { key, unreadable } = readKey(kv.key);
    const marked = unreadable === undefined ? {} : { unreadable };
    const revision = Number(kv.mod_revision);
    if (!kv.key.subarray(0, prefixBytes.length).equals(prefixBytes)) {
      return "a key outside the prefix";
    }
    if (!Number.isSafeInteger(revision) || revision < 0) {
      return "a mod_revision that is not a non-negative integer";
    }
    if (revision > header) {
      return "a mod_revision above the header revision of its response";
    }
    events.push(type === "Delete" ? { kind: "delete", key, revision, ...marked } : { kind: "put", key, value: kv.value.toString(), revision, ...marked });
  }
  return events;
}
