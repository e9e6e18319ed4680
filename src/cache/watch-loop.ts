import type { Discovery, RegistryUpdate } from "../discovery/discovery.js";
import { pause } from "./signals.js";

/** A watch open at least this long before it broke counts as having worked. */
const healthyWatchMs = 30_000;
/**
 * Longest wait before watching again after the watch broke: short, because
 * after an etcd outage the watch is how changes arrive within a second, and
 * one attempt per service every few seconds costs etcd nothing.
 */
const maxWatchBackoffMs = 4_000;

export interface WatchLoopHooks {
  /** The revision to watch after: the highest read so far. */
  revision(): number;
  /** The registry changed as the update says, or (without one) in ways a read must tell, or a broken watch may have missed a change. */
  changed(update?: RegistryUpdate): void;
  /** The watch broke; it is opened again after a backoff. */
  failed(error: unknown): void;
}

/** Keeps a service's watch open until the signal aborts, re-opening a broken one with backoff. */
export async function watchLoop(
  watch: NonNullable<Discovery["watch"]>,
  service: string,
  signal: AbortSignal,
  hooks: WatchLoopHooks,
): Promise<void> {
  let failures = 0;
  let openedAt: number | undefined;
  const listener = {
    opened: () => (openedAt = Date.now()),
    changed: (update?: RegistryUpdate) => hooks.changed(update),
  };
  while (!signal.aborted) {
    try {
      openedAt = undefined;
      await watch(service, hooks.revision(), signal, listener);
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
      hooks.failed(error);
      hooks.changed(); // catch up on whatever the broken watch missed
      await pause(Math.min(maxWatchBackoffMs, 250 * 2 ** failures), signal);
    }
  }
}
