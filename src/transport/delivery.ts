/**
 * What became of a request that failed, as far as the per-peer transport knows.
 * It decides whether the balancer may send the call again and whether the
 * failure says anything about the peer:
 *
 * - `"unprocessed"`: the request never reached the server's application —
 *   the connection could not be made, the server refused the stream
 *   (HTTP/2 REFUSED_STREAM), or the stream was above a GOAWAY's last stream
 *   id. Safe to send again to another peer, whatever the method.
 * - `"lost"`: the request was sent, then the connection was lost before the
 *   response ended (socket reset, session destroyed, RST_STREAM from the
 *   peer). The server may have acted on it: sent again only for idempotent
 *   methods. The peer is likely gone.
 * - `"canceled"`: the caller aborted the call. Never sent again and never
 *   held against the peer.
 *
 * `nodeHttp2Transport()` and `fetchTransport()` mark their errors; a custom
 * per-peer transport can mark its own with `markDelivery()`.
 */
export type Delivery = "unprocessed" | "lost" | "canceled";

// Symbol.for: the mark must survive two copies of this library in one bundle.
const deliveryMark = Symbol.for("connect-etcd-balancer.delivery");

/** Marks an error (or the cause a ConnectError wraps) with what became of its request; returns the error. */
export function markDelivery<E>(error: E, delivery: Delivery): E {
  if (typeof error === "object" && error !== null) {
    Object.defineProperty(error, deliveryMark, { value: delivery, configurable: true });
  }
  return error;
}

/** What became of the failed request, from the error or the first marked error in its cause chain; undefined when nobody said. */
export function deliveryOf(error: unknown): Delivery | undefined {
  let current = error;
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const delivery = (current as { [deliveryMark]?: Delivery })[deliveryMark];
    if (delivery !== undefined) {
      return delivery;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

const notConnectedMark = Symbol.for("connect-etcd-balancer.not-connected");

/**
 * Marks an error as the peer's connection never being established (refused,
 * timed out, a failed TLS handshake): the peer, not only this call, is out
 * of reach, so it leaves the picker until it can be reached again.
 */
export function markNotConnected<E>(error: E): E {
  if (typeof error === "object" && error !== null) {
    Object.defineProperty(error, notConnectedMark, { value: true, configurable: true });
  }
  return error;
}

/** Whether the error, or an error in its cause chain, was marked by markNotConnected(). */
export function isNotConnected(error: unknown): boolean {
  let current = error;
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    if ((current as { [notConnectedMark]?: boolean })[notConnectedMark] === true) {
      return true;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
