import { Code, ConnectError } from "@connectrpc/connect";

/** Resolves after ms, or at once when the signal aborts; leaves no timer behind either way. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Bounds a shared read by one call's signal and timeout; the read itself goes on for the others. */
export function withinCall<T>(
  promise: Promise<T>,
  service: string,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): Promise<T> {
  if (signal === undefined && timeoutMs === undefined) {
    return promise;
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => finish(() => reject(ConnectError.from(signal?.reason, Code.Canceled)));
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(
            () =>
              finish(() =>
                reject(new ConnectError(`reading the instances of "${service}" took longer than the call's ${timeoutMs} ms timeout`, Code.DeadlineExceeded)),
              ),
            timeoutMs,
          );
    function finish(settle: () => void) {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      settle();
    }
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener("abort", onAbort);
    promise.then(
      (value) => finish(() => resolve(value)),
      (error: unknown) => finish(() => reject(error)),
    );
  });
}
