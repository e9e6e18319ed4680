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
 * One attempt of a stream call, from before its response until the stream
 * ends. It has its own AbortController, given to the per-peer transport in
 * place of the caller's signal: a transport without close() (connect-node's)
 * queues an iterator's return() behind a pending read, so only an abort
 * resets the HTTP/2 stream and stops pumping the request input when the
 * stream is cut (its peer's transport closed, the caller aborted).
 */
export interface StreamAttempt {
  /** For the per-peer transport: aborted with the cut's error. */
  readonly signal: AbortSignal;
  /** The peer responded: the stream holds the pick until it ends. */
  track<T>(messages: AsyncIterable<T>, finish: EndStream): AsyncIterable<T>;
  /** The attempt failed before a response: nothing is left to cut. */
  drop(): void;
}

/**
 * Starts a stream attempt: kept in `open` from now on, so that closing its
 * peer's transport aborts it even before the peer responded (a client stream
 * answers only at its end), and linked to the caller's signal.
 */
export function beginStreamAttempt(signal: AbortSignal | undefined, open: OpenStreams): StreamAttempt {
  const controller = new AbortController();
  // before the response, a cut only aborts: the failed send ends the attempt
  let cutNow: EndStream = (reason) => {
    controller.abort(reason);
    return undefined;
  };
  const cut: EndStream = (reason) => cutNow(reason);
  // the transport sees the caller's own reason, as it would without the balancer
  const onAbort = () => cutNow(signal?.reason);
  const detach = () => {
    signal?.removeEventListener("abort", onAbort);
    open.delete(cut);
  };
  signal?.addEventListener("abort", onAbort);
  open.add(cut);
  if (signal?.aborted === true) {
    onAbort(); // aborted before the listener was there
  }
  return {
    signal: controller.signal,
    drop: detach,
    track(messages, finish) {
      const stream = trackStream(messages, controller, (error) => {
        detach();
        return finish(error);
      });
      cutNow = (reason) => stream.cut(signal?.aborted === true ? callerAborted() : reason);
      if (controller.signal.aborted) {
        cutNow(controller.signal.reason); // cut as the response came
      }
      return stream.messages;
    },
  };
}

function callerAborted(): ConnectError {
  return markDelivery(new ConnectError("the caller aborted the stream", Code.Canceled), "canceled");
}

/**
 * Holds a stream response's pick until the stream ends: read to the end,
 * failed or returned — and also when it is cut, whether or not anybody
 * reads it. A cut aborts the attempt's controller and returns the response
 * iterator inside, so what wraps it below (an interceptor's span, the
 * per-peer transport's HTTP/2 stream) learns it is over too, and every read
 * fails with why, also one pending at the cut.
 */
function trackStream<T>(messages: AsyncIterable<T>, controller: AbortController, finish: EndStream): { messages: AsyncIterable<T>; cut: EndStream } {
  const inner = sharedIterator(messages);
  let ended = false;
  let cutBy: ConnectError | undefined;
  let rejectPending: (reason: ConnectError) => void = () => {};
  // a read pending at the cut must not wait for a transport that ignores the abort
  const cutPromise = new Promise<never>((_, reject) => (rejectPending = reject));
  cutPromise.catch(() => {}); // nobody may be reading
  const end: EndStream = (error) => {
    if (ended) {
      return undefined;
    }
    ended = true;
    return finish(error);
  };
  const cut: EndStream = (reason) => {
    const error = end(reason);
    if (error !== undefined) {
      cutBy = error;
      rejectPending(error);
      controller.abort(reason); // first: a span below ends with the cut's error rather than as abandoned
      returnQuietly(inner());
    }
    return error;
  };
  return { messages: endOnIteration(inner, end, cut, () => cutBy, cutPromise), cut };
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
function endOnIteration<T>(
  inner: () => AsyncIterator<T>,
  end: EndStream,
  cut: EndStream,
  cutBy: () => ConnectError | undefined,
  cutPromise: Promise<never>,
): AsyncIterable<T> {
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
            result = await Promise.race([inner().next(), cutPromise]);
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
        // the caller gave up on the stream: canceled by it, not a success of the peer
        async throw(error?: unknown) {
          cut(markDelivery(new ConnectError("the caller ended the stream with throw()", Code.Canceled), "canceled"));
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
