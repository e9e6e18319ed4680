import type { ConnectError } from "@connectrpc/connect";

/** What the library reports about a service; pass `onEvent` to route it to your logs or metrics. */
export type BalancerEvent =
  /** A new set of instances was read and is now served. */
  | { readonly type: "snapshot"; readonly service: string; readonly revision: number; readonly instances: number }
  /** A registry entry was malformed and skipped; the other entries are still served. */
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

/** Without an `onEvent` option, problems no caller sees go to the console; routine events go nowhere. */
export const logProblems: EventListener = (event) => {
  switch (event.type) {
    case "entry_skipped":
      console.warn(`connect-etcd-balancer: skipped registry entry ${event.key} of "${event.service}": ${event.reason}`);
      break;
    case "discovery_failed":
      // Without a snapshot the failing call carries the error itself.
      if (event.serving) {
        console.warn(`connect-etcd-balancer: ${event.error.message} (still serving the last snapshot)`);
      }
      break;
    case "peer_close_failed":
      console.warn(`connect-etcd-balancer: closing the transport of ${event.address} failed: ${String(event.error)}`);
      break;
    case "empty_registry_ignored":
      console.warn(
        `connect-etcd-balancer: the registry lists no instance of "${event.service}" (revision ${event.revision}); still calling the last ${event.instances}`,
      );
      break;
    case "peer_ejected":
      console.warn(
        `connect-etcd-balancer: ${event.address} of "${event.service}" ${event.reason === "unreachable" ? "is unreachable" : "failed too many calls in a row"} (${event.error.rawMessage}); no calls for ${event.forMs} ms`,
      );
      break;
    case "snapshot_store_failed":
      console.warn(`connect-etcd-balancer: snapshot store ${event.operation} for "${event.service}" failed: ${event.reason}`);
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
