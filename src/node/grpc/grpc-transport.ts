/// <reference types="node" />
import { Code, ConnectError, createContextValues, type Interceptor, type Transport } from "@connectrpc/connect";
import { createMethodUrl, runStreamingCall, runUnaryCall, validateReadWriteMaxBytes, type Compression } from "@connectrpc/connect/protocol";
import type { BinaryReadOptions, BinaryWriteOptions, DescMethod, JsonReadOptions, JsonWriteOptions } from "@bufbuild/protobuf";
import { deliveryOf, markDelivery } from "../../transport/delivery.js";
import type { ClientContext } from "./client-context.js";
import { createCodecCache, type CodecOptions } from "./codec.js";
import { brotli, gzip } from "./compression.js";
import { PeerConnection, type ConnectionOptions } from "./connection.js";
import { createRequestHeaders } from "./request-headers.js";
import { callStream } from "./stream-call.js";
import { callUnary } from "./unary-call.js";

/** The options of connect-node's gRPC transport that apply to one peer over one HTTP/2 connection. */
export interface GrpcClientOptions extends ConnectionOptions {
  readonly useBinaryFormat?: boolean;
  readonly binaryOptions?: Partial<BinaryReadOptions & BinaryWriteOptions>;
  readonly jsonOptions?: Partial<JsonReadOptions & JsonWriteOptions>;
  /** Response compressions to accept (default gzip and br). */
  readonly acceptCompression?: Compression[];
  /** Compress requests with this (default none). */
  readonly sendCompression?: Compression | null;
  /** Smallest message worth compressing (default 1 KiB). */
  readonly compressMinBytes?: number;
  /** Largest response message accepted, in bytes (default 4 MiB, as grpc-js and grpc-go); a larger one fails with ResourceExhausted before it is read. */
  readonly readMaxBytes?: number;
  readonly writeMaxBytes?: number;
  /** Timeout of calls that give none; 0 or less for none. */
  readonly defaultTimeoutMs?: number;
  /** Run inside the balancer's interceptors, around this peer's calls. */
  readonly interceptors?: Interceptor[];
}

/**
 * The largest response message a call accepts unless readMaxBytes says
 * otherwise: 4 MiB, as grpc-js (grpc.max_receive_message_length) and grpc-go
 * (MaxCallRecvMsgSize). connect's own default, 4 GiB, lets one hostile or
 * broken peer make a call buffer gigabytes.
 */
export const defaultReadMaxBytes = 4 * 1024 * 1024;

/**
 * connect's Transport for one peer, implemented on node:http2 directly: one
 * connection, a unary call without async-iterator plumbing, no AbortController
 * unless the caller passed a signal, and every failure marked with what
 * became of its request (deliveryOf()).
 */
export function createGrpcClientTransport(peer: { readonly url: string; readonly address: string }, options: GrpcClientOptions = {}): Transport & { close(): void } {
  const context = createClientContext(peer, options);
  const interceptors = options.interceptors ?? [];
  const timeoutOf = (timeoutMs: number | undefined) => {
    const ms = timeoutMs ?? options.defaultTimeoutMs;
    return ms === undefined || ms <= 0 ? undefined : ms;
  };
  return {
    unary(method, signal, timeoutMs, header, input, contextValues) {
      const timeout = timeoutOf(timeoutMs);
      if (interceptors.length === 0) {
        return callUnary(context, method, signal, timeout, header, input);
      }
      return keepCanceledMark(
        signal,
        runUnaryCall({
          interceptors,
          signal,
          timeoutMs: timeout,
          req: { ...interceptedRequest(peer.url, method, header, contextValues), stream: false, method, message: input },
          next: (req) => callUnary(context, req.method, req.signal, timeout, req.header, req.message),
        }),
      );
    },
    stream(method, signal, timeoutMs, header, input, contextValues) {
      const timeout = timeoutOf(timeoutMs);
      if (interceptors.length === 0) {
        return callStream(context, method, signal, timeout, header, input);
      }
      return keepCanceledMark(
        signal,
        runStreamingCall({
          interceptors,
          signal,
          timeoutMs: timeout,
          req: { ...interceptedRequest(peer.url, method, header, contextValues), stream: true, method, message: input },
          next: (req) => callStream(context, req.method, req.signal, timeout, req.header, req.message),
        }),
      );
    },
    close() {
      context.connection.close();
    },
  };
}

function createClientContext(peer: { readonly url: string; readonly address: string }, options: GrpcClientOptions): ClientContext {
  const limits = validateReadWriteMaxBytes(options.readMaxBytes ?? defaultReadMaxBytes, options.writeMaxBytes, options.compressMinBytes);
  const acceptCompression = options.acceptCompression ?? [gzip, brotli];
  const codecOptions: CodecOptions = {
    useBinaryFormat: options.useBinaryFormat ?? true,
    binaryOptions: options.binaryOptions,
    jsonOptions: options.jsonOptions,
    sendCompression: options.sendCompression ?? null,
    compressMinBytes: limits.compressMinBytes,
    writeMaxBytes: limits.writeMaxBytes,
  };
  const base = new URL(peer.url);
  return {
    settings: { address: peer.address, acceptCompression, readMaxBytes: limits.readMaxBytes },
    codecOptions,
    codecs: createCodecCache(codecOptions),
    requestHeaders: createRequestHeaders({
      authority: base.host,
      pathPrefix: base.pathname.replace(/\/+$/, ""),
      useBinaryFormat: codecOptions.useBinaryFormat,
      acceptCompression,
      sendCompression: codecOptions.sendCompression,
    }),
    connection: new PeerConnection(base.origin, options),
  };
}

/** The request fields interceptors see besides the message (built only when there are interceptors). */
function interceptedRequest(baseUrl: string, method: DescMethod, header: HeadersInit | undefined, contextValues: ReturnType<typeof createContextValues> | undefined) {
  return {
    service: method.parent,
    requestMethod: "POST",
    url: createMethodUrl(baseUrl, method),
    header: new Headers(header),
    contextValues: contextValues ?? createContextValues(),
  };
}

/** connect's runUnaryCall/runStreamingCall rewrap a caller's abort: mark it again as the caller's doing. */
function keepCanceledMark<T>(signal: AbortSignal | undefined, call: Promise<T>): Promise<T> {
  return call.catch((error: unknown) => {
    const failure = ConnectError.from(error);
    throw signal?.aborted === true && failure.code === Code.Canceled && deliveryOf(failure) === undefined ? markDelivery(failure, "canceled") : failure;
  });
}
