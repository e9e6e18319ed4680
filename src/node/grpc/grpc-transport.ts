/// <reference types="node" />
import { ConnectError, createContextValues, type Interceptor, type StreamResponse, type Transport, type UnaryResponse } from "@connectrpc/connect";
import { createMethodUrl, runStreamingCall, runUnaryCall, validateReadWriteMaxBytes, type Compression } from "@connectrpc/connect/protocol";
import type { BinaryReadOptions, BinaryWriteOptions, DescMessage, DescMethodStreaming, DescMethodUnary, JsonReadOptions, JsonWriteOptions } from "@bufbuild/protobuf";
import { canceledBy, type CallSettings } from "./call.js";
import { createCodecCache, encodeMessage, type CodecOptions } from "./codec.js";
import { brotli, gzip } from "./compression.js";
import { PeerConnection, type ConnectionOptions } from "./connection.js";
import { createRequestHeaders } from "./request-headers.js";
import { StreamCall } from "./stream-call.js";
import { UnaryCall } from "./unary-call.js";

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
  readonly readMaxBytes?: number;
  readonly writeMaxBytes?: number;
  /** Timeout of calls that give none; 0 or less for none. */
  readonly defaultTimeoutMs?: number;
  /** Run inside the balancer's interceptors, around this peer's calls. */
  readonly interceptors?: Interceptor[];
}

/** Where the client sends: the peer's base URL and its "host:port". */
export interface GrpcTarget {
  readonly url: string;
  readonly address: string;
}

/**
 * connect's Transport for one peer, implemented on node:http2 directly: one
 * connection, a unary call without async-iterator plumbing, no AbortController
 * unless the caller passed a signal, and every failure marked with what
 * became of its request (deliveryOf()).
 */
export function createGrpcClientTransport(target: GrpcTarget, options: GrpcClientOptions = {}): Transport & { close(): void } {
  const limits = validateReadWriteMaxBytes(options.readMaxBytes, options.writeMaxBytes, options.compressMinBytes);
  const acceptCompression = options.acceptCompression ?? [gzip, brotli];
  const codecOptions: CodecOptions = {
    useBinaryFormat: options.useBinaryFormat ?? true,
    binaryOptions: options.binaryOptions,
    jsonOptions: options.jsonOptions,
    sendCompression: options.sendCompression ?? null,
    compressMinBytes: limits.compressMinBytes,
    writeMaxBytes: limits.writeMaxBytes,
  };
  const settings: CallSettings = { address: target.address, acceptCompression, readMaxBytes: limits.readMaxBytes };
  const codecs = createCodecCache(codecOptions);
  const base = new URL(target.url);
  const requestHeaders = createRequestHeaders({
    authority: base.host,
    pathPrefix: base.pathname.replace(/\/+$/, ""),
    useBinaryFormat: codecOptions.useBinaryFormat,
    acceptCompression,
    sendCompression: codecOptions.sendCompression,
  });
  const connection = new PeerConnection(base.origin, options);
  const interceptors = options.interceptors ?? [];

  function unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: unknown,
  ): Promise<UnaryResponse<I, O>> {
    if (signal?.aborted === true) {
      return Promise.reject(canceledBy(signal));
    }
    const codec = codecs(method);
    const send = (body: Uint8Array) =>
      new Promise<UnaryResponse<I, O>>((resolve, reject) => {
        const on = connection.acquire();
        new UnaryCall(settings, signal, timeoutMs, method, codec, resolve, reject).send(on, requestHeaders(method, timeoutMs, header), body);
      });
    try {
      const body = encodeMessage(codec, input, codecOptions);
      return body instanceof Uint8Array ? send(body) : body.then(send);
    } catch (error) {
      return Promise.reject(ConnectError.from(error));
    }
  }

  function stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: AsyncIterable<unknown>,
  ): Promise<StreamResponse<I, O>> {
    if (signal?.aborted === true) {
      return Promise.reject(canceledBy(signal));
    }
    const codec = codecs(method);
    return new Promise((resolve, reject) => {
      const on = connection.acquire();
      new StreamCall(settings, signal, timeoutMs, method, codec, codecOptions, resolve, reject).send(on, requestHeaders(method, timeoutMs, header), input);
    });
  }

  const timeoutOf = (timeoutMs: number | undefined) => {
    const ms = timeoutMs ?? options.defaultTimeoutMs;
    return ms === undefined || ms <= 0 ? undefined : ms;
  };

  return {
    unary(method, signal, timeoutMs, header, input, contextValues) {
      const timeout = timeoutOf(timeoutMs);
      if (interceptors.length === 0) {
        return unary(method, signal, timeout, header, input);
      }
      return runUnaryCall({
        interceptors,
        signal,
        timeoutMs: timeout,
        req: { stream: false, service: method.parent, method, requestMethod: "POST", url: createMethodUrl(target.url, method), header: new Headers(header), contextValues: contextValues ?? createContextValues(), message: input },
        next: (req) => unary(req.method, req.signal, timeout, req.header, req.message),
      });
    },
    stream(method, signal, timeoutMs, header, input, contextValues) {
      const timeout = timeoutOf(timeoutMs);
      if (interceptors.length === 0) {
        return stream(method, signal, timeout, header, input);
      }
      return runStreamingCall({
        interceptors,
        signal,
        timeoutMs: timeout,
        req: { stream: true, service: method.parent, method, requestMethod: "POST", url: createMethodUrl(target.url, method), header: new Headers(header), contextValues: contextValues ?? createContextValues(), message: input },
        next: (req) => stream(req.method, req.signal, timeout, req.header, req.message),
      });
    },
    close() {
      connection.close();
    },
  };
}
