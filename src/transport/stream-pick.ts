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
 * A stream ended that way is cut: the response iterator inside is returned,
 * so what wraps it below (an interceptor's span, the per-peer transport's
 * HTTP/2 stream) learns it is over too, and every later read fails with why.
 */
export function trackStream<T>(messages: AsyncIterable<T>, signal: AbortSignal | undefined, open: OpenStreams, finish: EndStream): AsyncIterable<T> {
  const inner = sharedIterator(messages);
  let ended = false;
  let cutBy: ConnectError | undefined;
  const end: EndStream = (error) => {
    if (ended) {
      return undefined;
    }
    ended = true;
    signal?.removeEventListener("abort", onAbort);
    open.delete(cut);
    return finish(error);
  };
  const cut: EndStream = (reason) => {
    const error = end(reason);
    if (error !== undefined) {
      cutBy = error;
      returnQuietly(inner());
    }
    return error;
  };
  const onAbort = () => cut(markDelivery(new ConnectError("the caller aborted the stream", Code.Canceled), "canceled"));
  signal?.addEventListener("abort", onAbort);
  open.add(cut);
  if (signal?.aborted === true) {
    onAbort(); // aborted before the listener was there
  }
  return endOnIteration(inner, end, () => cutBy);
}

/**
 * The stream's one iterator, made when first needed: by the reader, or by a
 * cut that must return it though nobody read. A response stream is read once.
 */
function sharedIterator<T>(messages: AsyncIterable<T>): () => AsyncIterator<T> {
  let iterator: AsyncIterator<T> | undefined;
  return () => (iterator ??= messages[Symbol.asyncIterator]());
}

/** Returns the iterator without waiting: its answer could only say how the cut stream ended, which is already decided. */
function returnQuietly(iterator: AsyncIterator<unknown>): void {
  try {
    iterator.return?.().catch(() => {});
  } catch {
    // a return() that throws at once has ended as well as it can
  }
}

/**
 * Ends the stream when it ends, fails, or the caller stops reading it — also
 * when it stops before the first message, which an async generator would not
 * notice. Once cut, reads fail with the reason, also one pending at the cut.
 */
function endOnIteration<T>(inner: () => AsyncIterator<T>, end: EndStream, cutBy: () => ConnectError | undefined): AsyncIterable<T> {
  const throwIfCut = () => {
    const reason = cutBy();
    if (reason !== undefined) {
      throw reason;
    }
  };
  return {
    [Symbol.asyncIterator]() {
      return {
        async next() {
          throwIfCut();
          let result: IteratorResult<T>;
          try {
            result = await inner().next();
          } catch (error) {
            throw end(error) ?? cutBy() ?? error;
          }
          throwIfCut();
          if (result.done === true) {
            end();
          }
          return result;
        },
        async return(value?: unknown) {
          end();
          await inner().return?.();
          return { done: true, value: value as T };
        },
        async throw(error?: unknown) {
          end();
          const iterator = inner();
          if (iterator.throw !== undefined) {
            return iterator.throw(error);
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
