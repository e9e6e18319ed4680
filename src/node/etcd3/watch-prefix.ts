import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3, IWatchResponse } from "etcd3";
import type { WatchListener } from "../../discovery/discovery.js";

/**
 * Follows a key prefix from `afterRevision` with one etcd3 watcher, per the
 * Discovery.watch contract: resolves when the signal aborts, rejects when the
 * watch breaks. A break is never retried here: etcd3 would resume from the
 * revision of its last response, which may be past events not yet delivered,
 * while the cache re-reads and watches again from what it has read.
 */
export function watchPrefix(client: Etcd3, prefix: string, afterRevision: number, signal: AbortSignal, listener: WatchListener): Promise<void> {
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
      if (!done && response.events.length > 0) {
        listener.changed();
      }
    });
    watcher.on("disconnected", broken("disconnected"));
    // etcd cancels a watch whose start revision was compacted; the cache then reads afresh.
    watcher.on("error", broken("cancelled"));
  });
}
