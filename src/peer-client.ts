import { makeAnyClient, ConnectError, Code, type CallOptions } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import type {
  DescMessage,
  DescMethodBiDiStreaming,
  DescMethodClientStreaming,
  DescMethodServerStreaming,
  DescMethodUnary,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import type { Peer } from "./peer.js";
import type { BalancedTransport } from "./transport/balanced-transport.js";

/** A single response with the peer that produced it. */
export interface PeerResult<O extends DescMessage> {
  /** The response message. */
  readonly message: MessageShape<O>;
  /** The instance that served the call. */
  readonly peer: Peer;
  /** The response headers. */
  readonly header: Headers;
  /** The response trailers. */
  readonly trailer: Headers;
}

/**
 * A response stream with the peer that serves it. `header` is there as soon as
 * the promise resolves; `trailer` is filled once `message` has been read to the end.
 */
export interface PeerStream<O extends DescMessage> {
  /** The response messages; read them to the end, or abort the call's signal, to end the stream. */
  readonly message: AsyncIterable<MessageShape<O>>;
  /** The instance serving the stream. */
  readonly peer: Peer;
  /** The response headers. */
  readonly header: Headers;
  /** The response trailers, filled once `message` has been read to the end. */
  readonly trailer: Headers;
}

/** Like connect's Client, but every method resolves to the response together with its peer. */
export type PeerClient<Desc extends DescService> = {
  [P in keyof Desc["method"]]: Desc["method"][P] extends DescMethodUnary<infer I, infer O>
    ? (request: MessageInitShape<I>, options?: CallOptions) => Promise<PeerResult<O>>
    : Desc["method"][P] extends DescMethodServerStreaming<infer I, infer O>
      ? (request: MessageInitShape<I>, options?: CallOptions) => Promise<PeerStream<O>>
      : Desc["method"][P] extends DescMethodClientStreaming<infer I, infer O>
        ? (request: AsyncIterable<MessageInitShape<I>>, options?: CallOptions) => Promise<PeerResult<O>>
        : Desc["method"][P] extends DescMethodBiDiStreaming<infer I, infer O>
          ? (request: AsyncIterable<MessageInitShape<I>>, options?: CallOptions) => Promise<PeerStream<O>>
          : never;
};

/** A typed client for a service whose methods resolve to `{ message, peer, header, trailer }`. */
export function createPeerClient<Desc extends DescService>(service: Desc, transport: BalancedTransport): PeerClient<Desc> {
  return makeAnyClient(service, (method) => {
    switch (method.methodKind) {
      case "unary":
        return async (request: MessageInitShape<DescMessage>, options?: CallOptions) => {
          const response = await transport.unary(method, options?.signal, options?.timeoutMs, options?.headers, request, options?.contextValues);
          options?.onHeader?.(response.header);
          options?.onTrailer?.(response.trailer);
          return { message: response.message, peer: response.peer, header: response.header, trailer: response.trailer };
        };
      case "server_streaming":
      case "bidi_streaming":
        return async (request: unknown, options?: CallOptions) => {
          const input = method.methodKind === "server_streaming" ? createAsyncIterable([request]) : request;
          const response = await transport.stream(method, options?.signal, options?.timeoutMs, options?.headers, input as AsyncIterable<never>, options?.contextValues);
          options?.onHeader?.(response.header);
          return {
            message: withTrailerCallback(response.message, () => options?.onTrailer?.(response.trailer)),
            peer: response.peer,
            header: response.header,
            trailer: response.trailer,
          };
        };
      case "client_streaming":
        return async (request: AsyncIterable<never>, options?: CallOptions) => {
          const response = await transport.stream(method, options?.signal, options?.timeoutMs, options?.headers, request, options?.contextValues);
          options?.onHeader?.(response.header);
          const messages = [];
          for await (const message of response.message) {
            messages.push(message);
          }
          if (messages.length !== 1) {
            throw new ConnectError(
              `protocol error: client streaming method ${method.name} answered ${messages.length} messages, not 1 (peer ${response.peer.address})`,
              Code.Unimplemented,
            );
          }
          options?.onTrailer?.(response.trailer);
          return { message: messages[0], peer: response.peer, header: response.header, trailer: response.trailer };
        };
    }
  }) as PeerClient<Desc>;
}

/** Calls onEnd after the last message; return() and throw() reach the stream itself, even before the first read. */
function withTrailerCallback<T>(messages: AsyncIterable<T>, onEnd: () => void): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const inner = messages[Symbol.asyncIterator]();
      let finished = false;
      return {
        async next() {
          const result = await inner.next();
          if (result.done === true && !finished) {
            finished = true;
            onEnd();
          }
          return result;
        },
        return(value?: unknown) {
          finished = true;
          return inner.return?.(value) ?? Promise.resolve({ done: true as const, value: value as T });
        },
        throw(error?: unknown) {
          finished = true;
          return inner.throw?.(error) ?? Promise.reject(error);
        },
      };
    },
  };
}
