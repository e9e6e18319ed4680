/// <reference types="node" />
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import { headerGrpcStatus, validateResponseWithCompression, validateTrailer } from "@connectrpc/connect/protocol-grpc";
import { markDelivery, markNotConnected } from "../../transport/delivery.js";
import type { Connection } from "./connection.js";
import { EnvelopeReader, type Envelope } from "./envelope-reader.js";
import { streamFailure } from "./stream-failure.js";

/** What a call needs from its transport. */
export interface CallSettings {
  readonly address: string;
  readonly acceptCompression: Compression[];
  readonly readMaxBytes: number;
}

const { NGHTTP2_CANCEL } = http2.constants;
const callOf = Symbol("grpc call");
type CallStream = http2.ClientHttp2Stream & { [callOf]: GrpcCall };

/**
 * One gRPC call on one HTTP/2 stream: the response side (headers, envelopes,
 * trailers, status), the caller's signal and deadline, and the one place that
 * decides how the call ended. Unary and streaming calls differ only in what
 * they do with headers, envelopes and the end. Stream events go to shared
 * functions through the stream, so a call allocates no closures for them.
 */
export abstract class GrpcCall {
  protected header: Headers | undefined;
  protected readonly trailer = new Headers();
  protected compression: Compression | null = null;
  /** A trailers-only response: the status came with the headers. */
  private statusInHeader = false;
  private trailerReceived = false;
  private headerError: ConnectError | undefined;
  private cause: Error | undefined;
  private ended = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly reader: EnvelopeReader;
  protected stream: http2.ClientHttp2Stream | undefined;
  private connection: Connection | undefined;

  constructor(
    protected readonly settings: CallSettings,
    private readonly signal: AbortSignal | undefined,
    timerMs: number | undefined,
  ) {
    this.reader = new EnvelopeReader(settings.readMaxBytes, settings.address);
    if (timerMs !== undefined) {
      this.timer = setTimeout(onDeadline, timerMs, this);
    }
    signal?.addEventListener("abort", this);
  }

  /** Opens the stream on the connection; the call ends with a failure when that is refused. */
  protected open(connection: Connection, headers: http2.OutgoingHttpHeaders): http2.ClientHttp2Stream | undefined {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = connection.request(headers);
    } catch (error) {
      this.end(refusedRequest(error as Error & { code?: string }, this.settings.address, connection.connected));
      return undefined;
    }
    (stream as CallStream)[callOf] = this;
    stream.on("response", onResponse);
    stream.on("data", onData);
    stream.on("trailers", onTrailers);
    stream.on("end", onEnd);
    stream.on("error", onError);
    stream.on("close", onClose);
    this.stream = stream;
    this.connection = connection;
    return stream;
  }

  /** The response headers are valid and the status was not in them. */
  protected abstract onHeaders(header: Headers): void;
  protected abstract onEnvelope(envelope: Envelope): void;
  /** Once: the call ended, with its error unless the status was OK. */
  protected abstract onEnd(error: ConnectError | undefined): void;

  /** Fails the call from the client side (caller abort, deadline, a bad request or response) and resets its stream. */
  fail(error: ConnectError): void {
    if (this.ended) {
      return;
    }
    this.reset();
    this.end(error);
  }

  /**
   * @internal The deadline passed. Before the connection was established
   * (a frozen process, a host that drops packets) it says the peer could not
   * be reached, which the balancer may take it out of rotation for.
   */
  deadlinePassed(): void {
    const error = new ConnectError("the operation timed out", Code.DeadlineExceeded);
    this.fail(this.connection === undefined || this.connection.connected ? error : markNotConnected(error));
  }

  /** EventListener for the caller's signal. */
  handleEvent(): void {
    this.fail(canceledBy(this.signal!));
  }

  protected reset(): void {
    const stream = this.stream;
    if (stream !== undefined && !stream.closed && !stream.destroyed) {
      // A stream still waiting for its connection cannot send RST_STREAM; it is dropped instead.
      if (stream.pending) {
        stream.destroy();
      } else {
        stream.close(NGHTTP2_CANCEL);
      }
    }
  }

  protected get isEnded(): boolean {
    return this.ended;
  }

  private end(error: ConnectError | undefined): void {
    if (this.ended) {
      return;
    }
    this.ended = true;
    clearTimeout(this.timer);
    this.signal?.removeEventListener("abort", this);
    this.onEnd(error);
  }

  /** @internal stream events */
  receiveHeaders(headers: http2.IncomingHttpHeaders, flags: number): void {
    const header = toHeaders(headers);
    this.header = header;
    try {
      keepMalformedMessage(header);
      const { compression, headerError } = validateResponseWithCompression(this.settings.acceptCompression, Number(headers[":status"]), header);
      this.compression = compression ?? null;
      this.headerError = headerError;
      this.statusInHeader = header.has(headerGrpcStatus);
    } catch (error) {
      this.fail(ConnectError.from(error));
      return;
    }
    if (!this.statusInHeader || (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) === 0) {
      this.onHeaders(header);
    }
  }

  /** @internal */
  receiveData(chunk: Uint8Array): void {
    if (this.ended) {
      return;
    }
    try {
      this.reader.push(chunk, (envelope) => this.onEnvelope(envelope));
    } catch (error) {
      this.fail(ConnectError.from(error));
    }
  }

  /** @internal */
  receiveTrailers(trailers: http2.IncomingHttpHeaders): void {
    this.trailerReceived = true;
    appendHeaders(this.trailer, trailers);
  }

  /**
   * @internal The response ended. When the request is still being sent (the
   * server answered early), node:http2 would wait for flow control that the
   * server no longer grants, and never close the stream: reset it, and the
   * call ends on close as usual.
   */
  receiveEnd(): void {
    const stream = this.stream!;
    if (!stream.writableFinished) {
      if (stream.closed) {
        stream.destroy(); // reset by the peer already (RST_STREAM NO_ERROR): only the local side is left
      } else {
        this.reset();
      }
    }
  }

  /** @internal */
  receiveError(error: Error): void {
    this.cause ??= error;
  }

  /** @internal the stream closed: the only place a call that was not failed by the client ends. */
  receiveClose(): void {
    this.connection!.release();
    if (!this.ended) {
      this.end(this.outcome(this.stream!));
    }
  }

  /** How a stream that closed by itself ended: its status, or what the lack of one means. */
  private outcome(stream: http2.ClientHttp2Stream): ConnectError | undefined {
    const statusReceived = this.statusInHeader || this.trailerReceived;
    const connection = this.connection!;
    // A lost connection ends a stream's readable side too: only a stream that ended
    // without a reset or error, on a live connection, ended by the server's choice.
    // (node:http2 reports a reset after the response headers of a request that was
    // sent in full as such an end, with rstCode 0: no client can tell them apart.)
    const endedCleanly = stream.readableEnded && (stream.rstCode ?? 0) === 0 && this.cause === undefined && !connection.session.destroyed;
    if (this.header !== undefined && !statusReceived && endedCleanly) {
      // The server may have acted on the request; an idempotent call is resent.
      const message = `${this.settings.address} ended the response without a gRPC status (missing status): no trailers, or RST_STREAM(NO_ERROR)`;
      return markDelivery(new ConnectError(message, Code.Internal), "lost");
    }
    if (this.header === undefined || !statusReceived) {
      return streamFailure({
        address: this.settings.address,
        streamId: stream.id,
        rstCode: stream.rstCode ?? 0,
        connected: connection.connected,
        connectionGone: connection.session.destroyed || connection.session.closed,
        goawayLastStreamId: connection.goawayLastStreamId,
        cause: this.cause ?? connection.error,
      });
    }
    if (this.statusInHeader) {
      return this.headerError;
    }
    try {
      keepMalformedMessage(this.trailer);
      validateTrailer(this.trailer, this.header);
    } catch (error) {
      return ConnectError.from(error);
    }
    return this.reader.buffered > 0 ? new ConnectError("protocol error: incomplete message at the end of the stream", Code.Internal) : undefined;
  }

}

/** The error of a call whose caller aborted it: Canceled, marked as the caller's doing (unless the reason carries another code). */
export function canceledBy(signal: AbortSignal): ConnectError {
  const error = ConnectError.from(signal.reason, Code.Canceled);
  return error.code === Code.Canceled ? markDelivery(error, "canceled") : error;
}

/** Session states in which node:http2 refuses a new stream: the peer's doing, and the request never left. */
const sessionGone = new Set(["ERR_HTTP2_INVALID_SESSION", "ERR_HTTP2_GOAWAY_SESSION", "ERR_HTTP2_OUT_OF_STREAMS"]);

/** Why node:http2 refused to open the stream: a session that cannot take it, or a request it will not send (a bad header). */
function refusedRequest(error: Error & { code?: string }, address: string, connected: boolean): ConnectError {
  if (error.code !== undefined && sessionGone.has(error.code)) {
    return streamFailure({ address, streamId: undefined, rstCode: 0, connected, connectionGone: false, goawayLastStreamId: undefined, cause: error });
  }
  return new ConnectError(`invalid request to ${address}: ${error.message}`, Code.InvalidArgument, undefined, undefined, error);
}

/**
 * A grpc-message that is not valid percent-encoding is kept as it is: the
 * gRPC spec says a client must not fail on it, and connect's parser would
 * replace the server's status with "URI malformed".
 */
function keepMalformedMessage(headers: Headers): void {
  const message = headers.get("grpc-message");
  if (message !== null && message.includes("%")) {
    try {
      decodeURIComponent(message);
    } catch {
      headers.set("grpc-message", encodeURIComponent(message));
    }
  }
}

function onDeadline(call: GrpcCall): void {
  call.deadlinePassed();
}

function onResponse(this: CallStream, headers: http2.IncomingHttpHeaders, flags: number): void {
  this[callOf].receiveHeaders(headers, flags);
}

function onData(this: CallStream, chunk: Buffer): void {
  this[callOf].receiveData(chunk);
}

function onTrailers(this: CallStream, trailers: http2.IncomingHttpHeaders): void {
  this[callOf].receiveTrailers(trailers);
}

function onEnd(this: CallStream): void {
  this[callOf].receiveEnd();
}

function onError(this: CallStream, error: Error): void {
  this[callOf].receiveError(error);
}

function onClose(this: CallStream): void {
  this[callOf].receiveClose();
}

function toHeaders(headers: http2.IncomingHttpHeaders): Headers {
  return appendHeaders(new Headers(), headers);
}

function appendHeaders(target: Headers, headers: http2.IncomingHttpHeaders): Headers {
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ":" pseudo-header */) {
      continue;
    }
    const value = headers[name];
    if (typeof value === "string") {
      target.append(name, value);
    } else if (Array.isArray(value)) {
      for (const one of value) {
        target.append(name, one);
      }
    }
  }
  return target;
}
