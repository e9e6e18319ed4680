import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3, IWatchResponse } from "etcd3";
import type { RegistryEvent } from "../../discovery/decode.js";

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
    watcher.on("data", (response: IWatchResponse) => {
      if (done || response.events.length === 0) {
        return;
      }
      const events = registryEvents(response, prefix);
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
function registryEvents(response: IWatchResponse, prefix: string): RegistryEvent[] | string {
  const events: RegistryEvent[] = [];
  for (const { type, kv } of response.events) {
    const key = kv.key.toString();
    const revision = Number(kv.mod_revision);
    if (!key.startsWith(prefix)) {
      return "a key outside the prefix";
    }
    if (!Number.isSafeInteger(revision) || revision < 0) {
      return "a mod_revision that is not a non-negative integer";
    }
    events.push(type === "Delete" ? { kind: "delete", key, revision } : { kind: "put", key, value: kv.value.toString(), revision });
  }
  return events;
}
