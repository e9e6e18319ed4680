import type { Interceptor, StreamRequest, UnaryRequest } from "@connectrpc/connect";
import { context, propagation, SpanKind, trace, type Attributes, type TextMapSetter, type TracerProvider } from "@opentelemetry/api";
import { peerKey, type Peer } from "../peer.js";
import { attemptEnd } from "./attempt-span.js";
import { rpcSystemOf, spanName, startAttributes, type RpcSystem } from "./attributes.js";
import { endSpanWithStream } from "./span-stream.js";

export interface OtelInterceptorOptions {
  /** Where the spans go; the globally registered provider by default. */
  readonly tracerProvider?: TracerProvider;
  /**
   * The spans' `rpc.system`: "grpc" or "connect_rpc", or a function of the
   * peer. By default "connect_rpc" for peers registered under http:// or
   * https://, "grpc" otherwise. Set it when the per-peer transport speaks
   * another protocol than the scheme says, e.g. `nodeHttp2Transport({
   * protocol: "connect" })` on grpc:// endpoints: the interceptor runs before
   * that transport writes its protocol's headers, so it cannot read them.
   */
  readonly rpcSystem?: RpcSystem | ((peer: Peer | undefined) => RpcSystem);
  /**
   * Attributes added to each attempt's span when it starts (so samplers see
   * them), e.g. `(peer) => ({ "cloud.availability_zone": peer?.metadata.zone })`.
   * The peer is undefined only outside a balanced transport.
   */
  readonly attributes?: (peer: Peer | undefined, request: UnaryRequest | StreamRequest) => Attributes;
}

const tracerName = "connect-etcd-balancer";

const headerSetter: TextMapSetter<Headers> = {
  set: (header, key, value) => header.set(key, value),
};

/**
 * An interceptor for createBalancedTransport's `interceptors` that traces each
 * attempt as a CLIENT span, child of the caller's active context: a call
 * retried on another peer gives one span per peer tried. The span carries the
 * RPC semantic conventions (see attributes.ts) and the peer that served, ends
 * with the attempt — for streams, when the response stream ends, fails or is
 * abandoned — and its context goes to the server in the request headers
 * (traceparent with the W3C propagator), so the trace continues there.
 */
export function otelInterceptor(options: OtelInterceptorOptions = {}): Interceptor {
  const { rpcSystem = rpcSystemOf, attributes } = options;
  const systemOf = typeof rpcSystem === "function" ? rpcSystem : () => rpcSystem;
  return (next) => async (req) => {
    const peer = req.contextValues.get(peerKey);
    const system = systemOf(peer);
    // looked up per attempt: a provider registered after the interceptor was made is still found
    const tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer(tracerName);
    const parent = context.active();
    const span = tracer.startSpan(
      spanName(req.method),
      { kind: SpanKind.CLIENT, attributes: { ...startAttributes(system, req.method, peer), ...attributes?.(peer, req) } },
      parent,
    );
    const active = trace.setSpan(parent, span);
    propagation.inject(active, req.header, headerSetter);
    const end = attemptEnd(span, system);
    try {
      const res = await context.with(active, () => next(req));
      if (!res.stream) {
        end.finish();
        return res;
      }
      return { ...res, message: endSpanWithStream(res.message, end, req.signal) };
    } catch (error) {
      end.finish(error);
      throw error;
    }
  };
}
