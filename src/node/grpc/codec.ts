import { Code, ConnectError } from "@connectrpc/connect";
import { compressedFlag, createClientMethodSerializers, encodeEnvelope, type Compression } from "@connectrpc/connect/protocol";
import { create, isMessage, type BinaryReadOptions, type BinaryWriteOptions, type DescMessage, type DescMethod, type JsonReadOptions, type JsonWriteOptions } from "@bufbuild/protobuf";
import type { Envelope } from "./envelope-reader.js";

/** How messages of one method become envelopes and back. */
export interface MethodCodec {
  serialize(message: unknown): Uint8Array;
  parse(data: Uint8Array): unknown;
  readonly input: DescMessage;
}

export interface CodecOptions {
  readonly useBinaryFormat: boolean;
  readonly binaryOptions?: Partial<BinaryReadOptions & BinaryWriteOptions>;
  readonly jsonOptions?: Partial<JsonReadOptions & JsonWriteOptions>;
  readonly sendCompression: Compression | null;
  readonly compressMinBytes: number;
  readonly writeMaxBytes: number;
}

/** Codecs made once per method and transport (connect's serializers, cached). */
export function createCodecCache(options: CodecOptions): (method: DescMethod) => MethodCodec {
  const cache = new Map<DescMethod, MethodCodec>();
  return (method) => {
    let codec = cache.get(method);
    if (codec === undefined) {
      const { serialize, parse } = createClientMethodSerializers(method, options.useBinaryFormat, options.jsonOptions, options.binaryOptions);
      codec = { serialize: serialize as (message: unknown) => Uint8Array, parse, input: method.input };
      cache.set(method, codec);
    }
    return codec;
  };
}

/** One request message as one envelope buffer: serialized, size-checked, compressed when worth it. */
export function encodeMessage(codec: MethodCodec, init: unknown, options: CodecOptions): Uint8Array | Promise<Uint8Array> {
  const message = isMessage(init, codec.input) ? init : create(codec.input, init as never);
  const bytes = codec.serialize(message);
  if (bytes.byteLength > options.writeMaxBytes) {
    throw new ConnectError(`message size ${bytes.byteLength} is larger than configured writeMaxBytes ${options.writeMaxBytes}`, Code.ResourceExhausted);
  }
  const compression = options.sendCompression;
  if (compression === null || bytes.byteLength < options.compressMinBytes) {
    return encodeEnvelope(0, bytes);
  }
  return compression.compress(bytes).then((compressed) => encodeEnvelope(compressedFlag, compressed));
}

/** The message of a response envelope, decompressed when flagged; synchronous unless it was compressed. */
export function parseEnvelope(envelope: Envelope, codec: MethodCodec, compression: Compression | null, readMaxBytes: number): unknown {
  if ((envelope.flags & compressedFlag) === 0) {
    return codec.parse(envelope.data);
  }
  if (compression === null) {
    throw new ConnectError("protocol error: received compressed output without grpc-encoding", Code.Internal);
  }
  return compression.decompress(envelope.data, readMaxBytes).then((data) => codec.parse(data));
}
