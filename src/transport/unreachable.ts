/**
 * Marks an error raised by fetch() itself: fetch reports every network
 * failure as a TypeError, and a TypeError from anywhere else (a bug in an
 * interceptor) must not get a healthy peer ejected.
 */
const mark = Symbol.for("connect-etcd-balancer.fetch-network-failure");

export function markFetchNetworkFailure(error: unknown): unknown {
  if (error instanceof TypeError) {
    Object.defineProperty(error, mark, { value: true });
  }
  return error;
}

export function isFetchNetworkFailure(error: unknown): boolean {
  return typeof error === "object" && error !== null && mark in error;
}
