import type { ConnectError } from "@connectrpc/connect";

/** What the library reports about a service; pass `onEvent` to route it to your logs or metrics. */
export type BalancerEvent =
  /** A new set of instances was read and is now served. */
  | { readonly type: "snapshot"; readonly service: string; readonly revision: number; readonly instances: number }
  /**
   * A registry entry was malformed and skipped; the other entries are still served.
   * Reported once per entry (its key and reason) while it stays malformed: later
   * reads that still skip it say nothing, and one fixed then broken again is
   * reported again. The report goes to the transports sharing the service's
   * process-wide cache at the read that first skipped it; a transport created
   * later is not told of entries skipped before it (nor of the snapshot read
   * before it), or a transport created per request would repeat the whole list.
   * Once every transport of the service closed and its idle cache entry was
   * dropped, a new transport starts over and reports the entry again.
   */
  | { readonly type: "entry_skipped"; readonly service: string; readonly key: string; readonly reason: string }
  /** Reading the registry failed; `serving` says whether an older snapshot keeps serving calls. */
  | { readonly type: "discovery_failed"; readonly service: string; readonly error: ConnectError; readonly serving: boolean }
  /** The registry listed no instance any more; the last `instances` keep serving until it lists some again. */
  | { readonly type: "empty_registry_ignored"; readonly service: string; readonly revision: number; readonly instances: number }
  /**
   * A peer gets no calls for `forMs` (unless too few peers are healthy): it could not be
   * reached or its connection was lost, or it failed too many calls in a row.
   */
  | {
      readonly type: "peer_ejected";
      readonly service: string;
      readonly address: string;
      readonly forMs: number;
      readonly reason: "unreachable" | "consecutive_failures";
      readonly error: ConnectError;
    }
  /** The snapshot store could not be written ("put"), or what it held was not used ("get": unreadable, corrupt, older than the maximum age). */
  | { readonly type: "snapshot_store_failed"; readonly service: string; readonly operation: "get" | "put"; readonly reason: string }
  /** A per-peer transport's close() failed when its peer left or the balancer closed. */
  | { readonly type: "peer_close_failed"; readonly service: string; readonly address: string; readonly error: unknown };

export type EventListener = (event: BalancerEvent) => void;

/**
 * At most this many console lines per window, process-wide. Enough for the real
 * problems of dozens of services at once (etcd down, a few ejected peers: a
 * line or two each), while a registry with thousands of malformed entries or a
 * flapping fleet cannot flood a log bill or block the process writing to the
 * console. A minute is the span log views and alarms usually count over.
 */
const consoleLinesPerWindow = 100;
const consoleWindowMs = 60_000;

/**
 * Passes at most `maxLines` lines per window to `write`; the first line over
 * says that the rest are counted, and the first line of a later window is
 * preceded by their count. Reads the clock on each line: no timer.
 */
export function limitLines(write: (line: string) => void, maxLines: number, windowMs: number): (line: string) => void {
  let windowStart = Number.NEGATIVE_INFINITY;
  let written = 0;
  let suppressed = 0;
  return (line) => {
    const now = Date.now();
    if (now - windowStart >= windowMs) {
      if (suppressed > 0) {
        write(`connect-etcd-balancer: ${suppressed} more warnings were suppressed (at most ${maxLines} per ${windowMs / 1000} s)`);
      }
      windowStart = now;
      written = 0;
      suppressed = 0;
    }
    if (written < maxLines) {
      written++;
      write(line);
    } else if (suppressed++ === 0) {
      write(`connect-etcd-balancer: more than ${maxLines} warnings within ${windowMs / 1000} s; the rest are counted, not shown, until the next window`);
    }
  };
}

// Looked up on each line, so that a replaced console.warn (a logger, a test spy) is used.
const warn = limitLines((line) => console.warn(line), consoleLinesPerWindow, consoleWindowMs);

/** Without an `onEvent` option, problems no caller sees go to the console (rate-limited); routine events go nowhere. */
export const logProblems: EventListener = (event) => {
  switch (event.type) {
    case "entry_skipped":
      warn(`connect-etcd-balancer: skipped registry entry ${event.key} of "${event.service}": ${event.reason}`);
      break;
    case "discovery_failed":
      // Without a snapshot the failing call carries the error itself.
      if (event.serving) {
        warn(`connect-etcd-balancer: ${event.error.message} (still serving the last snapshot)`);
      }
      break;
    case "peer_close_failed":
      warn(`connect-etcd-balancer: closing the transport of ${event.address} failed: ${String(event.error)}`);
      break;
    case "empty_registry_ignored":
      warn(
        `connect-etcd-balancer: the registry lists no instance of "${event.service}" (revision ${event.revision}); still calling the last ${event.instances}`,
      );
      break;
    case "peer_ejected":
      warn(
        `connect-etcd-balancer: ${event.address} of "${event.service}" ${event.reason === "unreachable" ? "is unreachable" : "failed too many calls in a row"} (${event.error.rawMessage}); no calls for ${event.forMs} ms`,
      );
      break;
    case "snapshot_store_failed":
      warn(`connect-etcd-balancer: snapshot store ${event.operation} for "${event.service}" failed: ${event.reason}`);
      break;
    case "snapshot":
      break;
  }
};

/** Calls a listener; neither its exception nor its rejected promise may break a call or the process. */
export function notify(listener: EventListener, event: BalancerEvent): void {
  try {
    const result: unknown = listener(event);
    if (typeof (result as PromiseLike<unknown> | undefined)?.then === "function") {
      (result as PromiseLike<unknown>).then(undefined, () => {});
    }
  } catch {
    // a broken listener must not break calls
  }
}
