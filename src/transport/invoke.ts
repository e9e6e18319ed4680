import type { ContextValues, Interceptor, StreamRequest, StreamResponse, Transport, UnaryRequest, UnaryResponse } from "@connectrpc/connect";
import { create, type DescMessage, type DescMethodStreaming, type DescMethodUnary, type MessageShape } from "@bufbuild/protobuf";
import type { Peer } from "../peer.js";

/** One attempt as it goes to a peer's transport. */
export type Invocation<I extends DescMessage, O extends DescMessage> = {
  readonly signal: AbortSignal | undefined;
  readonly timeoutMs: number | undefined;
  readonly header: Headers;
  readonly contextValues: ContextValues;
} & (
  | { readonly stream: false; readonly method: DescMethodUnary<I, O>; readonly message: unknown }
  | { readonly stream: true; readonly method: DescMethodStreaming<I, O>; readonly message: AsyncIterable<unknown> }
);

/**
 * Sends an attempt to the peer's transport through the balancer's
 * interceptors, one path for unary calls and streams. Without interceptors
 * the request object is not built at all: its fresh AbortSignal alone would
 * cost more than the rest of the balancer together.
 */
export function invoke<I extends DescMessage, O extends DescMessage>(
  interceptors: readonly Interceptor[],
  transport: Transport,
  peer: Peer,
  call: Invocation<I, O>,
): Promise<UnaryResponse<I, O> | StreamResponse<I, O>> {
  const { timeoutMs } = call;
  if (interceptors.length === 0) {
    return call.stream
      ? transport.stream(call.method, call.signal, timeoutMs, call.header, call.message as never, call.contextValues)
      : transport.unary(call.method, call.signal, timeoutMs, call.header, call.message as never, call.contextValues);
  }
  const next = (req: UnaryRequest<I, O> | StreamRequest<I, O>) =>
    req.stream
      ? transport.stream(req.method, req.signal, timeoutMs, req.header, req.message, req.contextValues)
      : transport.unary(req.method, req.signal, timeoutMs, req.header, req.message, req.contextValues);
  const intercepted = interceptors.reduceRight<typeof next>((inner, interceptor) => interceptor(inner as never) as never, next);
  const common = {
    service: call.method.parent,
    requestMethod: "POST",
    url: `${peer.url}/${call.method.parent.typeName}/${call.method.name}`,
    signal: call.signal ?? new AbortController().signal,
    header: call.header,
    contextValues: call.contextValues,
  };
  return call.stream
    ? intercepted({ ...common, stream: true, method: call.method, message: call.message as AsyncIterable<MessageShape<I>> })
    : intercepted({ ...common, stream: false, method: call.method, message: create(call.method.input, call.message as never) as MessageShape<I> });
}
