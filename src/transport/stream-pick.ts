import { Code, ConnectError } from "@connectrpc/connect";
import { markDelivery } from "./delivery.js";

/** Ends a stream's attempt; returns the error naming its peer, once. */
export type EndStream = (error?: unknown) => ConnectError | undefined;

/** Where open streams are kept, so that closing their peer's transport can end them. */
export interface OpenStreams {
  add(end: EndStream): void;
  delete(end: EndStream): void;
}

/**
 * Holds a stream response's pick until the stream ends: read to the end,
 * failed or returned — and also when the caller's signal aborts or its
 * peer's transport closes (through `open`), whether or not anybody reads it.
 */
export function trackStream<T>(messages: AsyncIterable<T>, signal: AbortSignal | undefined, open: OpenStreams, finish: EndStream): AsyncIterable<T> {
  let ended = false;
  const end: EndStream = (error) => {
    if (ended) {
      return undefined;
    }
    ended = true;
    signal?.removeEventListener("abort", onAbort);
    open.delete(end);
    return finish(error);
  };
  const onAbort = () => end(markDelivery(new ConnectError("the caller aborted the stream", Code.Canceled), "canceled"));
  signal?.addEventListener("abort", onAbort);
  open.add(end);
  if (signal?.aborted === true) {
    onAbort(); // aborted before the listener was there
  }
  return endOnIteration(messages, end);
}

/**
 * Ends the stream when it ends, fails, or the caller stops reading it — also
 * when it stops before the first message, which an async generator would not notice.
 */
function endOnIteration<T>(messages: AsyncIterable<T>, end: EndStream): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const inner = messages[Symbol.asyncIterator]();
      return {
        async next() {
          try {
            const result = await inner.next();
            if (result.done === true) {
              end();
            }
            return result;
          } catch (error) {
            throw end(error) ?? error;
          }
        },
        async return(value?: unknown) {
          end();
          await inner.return?.();
          return { done: true, value: value as T };
        },
        async throw(error?: unknown) {
          end();
          if (inner.throw !== undefined) {
            return inner.throw(error);
          }
          throw error;
        },
      };
    },
  };
}

/** Every message of a stream input, read at once (a server-streaming request has one). */
export async function collect<T>(messages: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const message of messages) {
    all.push(message);
  }
  return all;
}
