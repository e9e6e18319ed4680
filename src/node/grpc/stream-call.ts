import { Code, ConnectError, type StreamResponse } from "@connectrpc/connect";
import type { DescMessage, DescMethodStreaming, MessageShape } from "@bufbuild/protobuf";
import type { ClientHttp2Stream, OutgoingHttpHeaders } from "node:http2";
import { markDelivery } from "../../transport/delivery.js";
import { GrpcCall, type CallSettings } from "./call.js";
import { prepareCall, type ClientContext } from "./client-context.js";
import { encodeMessage, parseEnvelope, type CodecOptions, type MethodCodec } from "./codec.js";
import type { Connection } from "./connection.js";
import type { Envelope } from "./envelope-reader.js";

/** Envelopes read ahead of the caller before the stream is paused (HTTP/2 flow control then holds the peer). */
const readAhead = 32;

/** Starts a streaming call; resolves with the response once its headers arrive. */
export function callStream<I extends DescMessage, O extends DescMessage>(
  context: ClientContext,
  method: DescMethodStreaming<I, O>,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  header: HeadersInit | undefined,
  input: AsyncIterable<unknown>,
): Promise<StreamResponse<I, O>> {
  return new Promise((resolve, reject) => {
    const { headers, connection, timerMs } = prepareCall(context, method, signal, timeoutMs, header);
    new StreamCall(context.settings, signal, timerMs, method, context.codecs(method), context.codecOptions, resolve, reject).send(connection, headers, input);
  });
}

/**
 * A streaming call: the request messages are written as the caller's
 * iterable yields them (respecting backpressure), and the response is handed
 * out once its headers arrive, its messages read on demand.
 */
export class StreamCall<I extends DescMessage, O extends DescMessage> extends GrpcCall implements AsyncIterator<MessageShape<O>> {
  private readonly queue: Envelope[] = [];
  /** Callers of next() waiting for an envelope or the end; several when next() is called again before it settled. */
  private waiters: (() => void)[] = [];
  private returned = false;
  private endError: ConnectError | undefined;
  private done = false;
  private responded = false;

  constructor(
    settings: CallSettings,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    private readonly method: DescMethodStreaming<I, O>,
    private readonly codec: MethodCodec,
    private readonly codecOptions: CodecOptions,
    private readonly resolve: (response: StreamResponse<I, O>) => void,
    private readonly reject: (error: ConnectError) => void,
  ) {
    super(settings, signal, timeoutMs);
  }

  send(connection: Connection, headers: OutgoingHttpHeaders, input: AsyncIterable<unknown>): void {
    const stream = this.open(connection, headers);
    if (stream !== undefined) {
      void this.pump(stream, input);
    }
  }

  private async pump(stream: ClientHttp2Stream, input: AsyncIterable<unknown>): Promise<void> {
    try {
      for await (const message of input) {
        if (this.isEnded) {
          return;
        }
        const envelope = await encodeMessage(this.codec, message, this.codecOptions);
        if (this.isEnded) {
          return; // ended while compressing
        }
        if (!stream.write(envelope)) {
          await drained(stream);
        }
      }
      if (!this.isEnded) {
        stream.end();
      }
    } catch (error) {
      this.fail(ConnectError.from(error));
    }
  }

  protected onHeaders(header: Headers): void {
    this.respond(header);
  }

  protected onEnvelope(envelope: Envelope): void {
    this.queue.push(envelope);
    if (this.queue.length >= readAhead) {
      this.stream?.pause();
    }
    this.wake();
  }

  protected onEnd(error: ConnectError | undefined): void {
    this.done = true;
    this.endError = error;
    if (!this.responded) {
      if (error !== undefined) {
        this.reject(error);
        return;
      }
      this.respond(this.header ?? new Headers()); // trailers-only OK: no messages
    }
    this.wake();
  }

  private respond(header: Headers): void {
    this.responded = true;
    this.resolve({
      stream: true,
      service: this.method.parent,
      method: this.method,
      header,
      trailer: this.trailer,
      message: { [Symbol.asyncIterator]: () => this },
    });
  }

  async next(): Promise<IteratorResult<MessageShape<O>>> {
    for (;;) {
      const envelope = this.queue.shift();
      if (envelope !== undefined) {
        if (this.queue.length < readAhead / 2 && this.stream?.isPaused() === true) {
          this.stream.resume();
        }
        try {
          const value = await parseEnvelope(envelope, this.codec, this.compression, this.settings.readMaxBytes);
          return { done: false, value: value as MessageShape<O> };
        } catch (error) {
          const failure = ConnectError.from(error);
          this.fail(failure);
          throw failure;
        }
      }
      if (this.done) {
        if (this.endError !== undefined && !this.returned) {
          throw this.endError;
        }
        return { done: true, value: undefined };
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** The caller stopped reading: the call is cancelled, and the peer is told with RST_STREAM. */
  async return(): Promise<IteratorResult<MessageShape<O>>> {
    this.returned = true;
    this.fail(markDelivery(new ConnectError("the caller stopped reading the response", Code.Canceled), "canceled"));
    this.queue.length = 0;
    return { done: true, value: undefined };
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) {
      resolve();
    }
  }
}

/** Resolves when the stream can take more data, or has closed. */
function drained(stream: ClientHttp2Stream): Promise<void> {
  if (stream.destroyed || stream.closed) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}
