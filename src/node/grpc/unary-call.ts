import { Code, ConnectError, type UnaryResponse } from "@connectrpc/connect";
import type { DescMessage, DescMethodUnary, MessageShape } from "@bufbuild/protobuf";
import { GrpcCall, type CallSettings } from "./call.js";
import { prepareCall, remainingMs, type ClientContext } from "./client-context.js";
import { encodeMessage, parseEnvelope, type MethodCodec } from "./codec.js";
import type { Connection } from "./connection.js";
import type { Envelope } from "./envelope-reader.js";
import type { OutgoingHttpHeaders } from "node:http2";

/** Sends one unary call: the request is encoded (and compressed) before its stream opens. */
export function callUnary<I extends DescMessage, O extends DescMessage>(
  context: ClientContext,
  method: DescMethodUnary<I, O>,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  header: HeadersInit | undefined,
  input: unknown,
): Promise<UnaryResponse<I, O>> {
  const codec = context.codecs(method);
  const send = (body: Uint8Array, timeout: number | undefined) =>
    new Promise<UnaryResponse<I, O>>((resolve, reject) => {
      const { headers, connection, timerMs } = prepareCall(context, method, signal, timeout, header);
      new UnaryCall(context.settings, signal, timerMs, method, codec, resolve, reject).send(connection, headers, body);
    });
  try {
    const body = encodeMessage(codec, input, context.codecOptions);
    if (body instanceof Uint8Array) {
      return send(body, timeoutMs);
    }
    const startedAt = performance.now();
    return body.then((compressed) => send(compressed, remainingMs(timeoutMs, startedAt)));
  } catch (error) {
    return Promise.reject(ConnectError.from(error));
  }
}

/**
 * A unary call without an async pipeline: the request is one buffer written
 * with END_STREAM, the response envelope is kept as it arrives and parsed
 * once the status is known.
 */
export class UnaryCall<I extends DescMessage, O extends DescMessage> extends GrpcCall {
  private envelope: Envelope | undefined;

  constructor(
    settings: CallSettings,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    private readonly method: DescMethodUnary<I, O>,
    private readonly codec: MethodCodec,
    private readonly resolve: (response: UnaryResponse<I, O>) => void,
    private readonly reject: (error: ConnectError) => void,
  ) {
    super(settings, signal, timeoutMs);
  }

  send(connection: Connection, headers: OutgoingHttpHeaders, body: Uint8Array): void {
    this.open(connection, headers)?.end(body);
  }

  protected onHeaders(): void {}

  protected onEnvelope(envelope: Envelope): void {
    if (this.envelope !== undefined) {
      this.fail(new ConnectError("protocol error: received extra output message for unary method", Code.Unimplemented));
      return;
    }
    this.envelope = envelope;
  }

  protected onEnd(error: ConnectError | undefined): void {
    if (error !== undefined) {
      this.reject(error);
    } else if (this.envelope === undefined) {
      this.reject(new ConnectError("protocol error: missing output message for unary method", Code.Unimplemented));
    } else {
      try {
        const message = parseEnvelope(this.envelope, this.codec, this.compression, this.settings.readMaxBytes);
        if (message instanceof Promise) {
          message.then((decompressed) => this.respond(decompressed), (error) => this.reject(ConnectError.from(error)));
        } else {
          this.respond(message);
        }
      } catch (error) {
        this.reject(ConnectError.from(error));
      }
    }
  }

  private respond(message: unknown): void {
    this.resolve({
      stream: false,
      service: this.method.parent,
      method: this.method,
      header: this.header!,
      message: message as MessageShape<O>,
      trailer: this.trailer,
    });
  }
}
