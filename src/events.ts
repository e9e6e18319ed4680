import type { ConnectError } from "@connectrpc/connect";

/** What the library reports about a service; pass `onEvent` to route it to your logs or metrics. */
export type BalancerEvent =
  /** A new set of instances was read and is now served. */
  | { readonly type: "snapshot"; readonly service: string; readonly revision: number; readonly instances: number }
  /**
   * A registry entry was malformed and skipped; the other entries are still served.
   *
   * `key` is the entry's full etcd key, and `reason` may quote parts of its
   * value or carry a custom decoder's message: both are registry-controlled
   * text, of any length (a key may be 1.5 MiB) and with any characters,
   * newlines included. Escape and cap them before writing them to a log; the
   * default console output does (see logProblems).
   *
   * Reported once per key and reason (equal text) while the entry stays
   * malformed: a read reports the entries it skipped that the previous read
   * taken did not skip for the same reason. The value is not part of that
   * identity: rewritten but skipped for the same reason, the entry is not
   * reported again, as the event, which carries only key and reason, would
   * tell the operator nothing new. Another reason is reported, and so is an
   * entry fixed then broken again.
   *
   * The report goes to the transports sharing the service's process-wide
   * cache at the read that first skipped it; a transport created later is not
   * told of entries skipped before it (nor of the snapshot read before it),
   * or a transport created per request would repeat the whole list.
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
 * preceded by their count. Reads `clock` on each line: no timer. It is
 * monotonic by default: a wall clock stepped back (NTP, a VM resumed) would
 * keep one window open, and the console silent, for as long as the step.
 */
export function limitLines(
  write: (line: string) => void,
  maxLines: number,
  windowMs: number,
  clock: () => number = () => performance.now(),
): (line: string) => void {
  let windowStart = Number.NEGATIVE_INFINITY;
  let written = 0;
  let suppressed = 0;
  return (line) => {
    const now = clock();
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

/**
 * Most characters of registry-controlled text (a key, a reason) one console
 * line shows: the limiter counts lines, not bytes, and a key may be 1.5 MiB.
 */
const maxShownChars = 200;

/** Registry-controlled text as a console line shows it: its first maxShownChars characters (oneLine escapes the rest). */
function shown(text: string): string {
  return text.length > maxShownChars ? `${text.slice(0, maxShownChars)}…` : text;
}

/**
 * A console line with control, format and line-separator characters escaped:
 * a newline in a registry key cannot forge a log line of its own, nor a
 * terminal sequence or a bidi override disguise one.
 */
function oneLine(line: string): string {
  return line.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

// Looked up on each line, so that a replaced console.warn (a logger, a test spy) is used.
const warn = limitLines((line) => console.warn(oneLine(line)), consoleLinesPerWindow, consoleWindowMs);

/** Without an `onEvent` option, problems no caller sees go to the console (rate-limited); routine events go nowhere. */
export const logProblems: EventListener = (event) => {
  switch (event.type) {
    case "entry_skipped":
      warn(`connect-etcd-balancer: skipped registry entry ${shown(event.key)} of "${event.service}": ${shown(event.reason)}`);
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
