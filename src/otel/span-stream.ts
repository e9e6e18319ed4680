import type { AttemptEnd } from "./attempt-span.js";

/**
 * The response messages of a stream, ending its span when they end, fail, or
 * the caller stops reading — also before the first message, which an async
 * generator would not notice — or aborts the call without reading at all.
 */
export function endSpanWithStream<T>(messages: AsyncIterable<T>, end: AttemptEnd, signal: AbortSignal): AsyncIterable<T> {
  const onAbort = () => end.finish(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) {
    onAbort(); // aborted before the listener was there
  }
  const stopWatching = () => signal.removeEventListener("abort", onAbort);
  return {
    [Symbol.asyncIterator]() {
      const inner = messages[Symbol.asyncIterator]();
      return {
        async next() {
          try {
            const result = await inner.next();
            if (result.done === true) {
              stopWatching();
              end.finish();
            }
            return result;
          } catch (error) {
            stopWatching();
            end.finish(error);
            throw error;
          }
        },
        async return(value?: unknown) {
          stopWatching();
          end.abandon();
          await inner.return?.();
          return { done: true, value: value as T };
        },
      };
    },
  };
}
