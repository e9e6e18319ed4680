import { Code, ConnectError } from "@connectrpc/connect";

/** One gRPC length-prefixed message: flags (bit 0: compressed) and its bytes. */
export interface Envelope {
  readonly flags: number;
  readonly data: Uint8Array;
}

const prefixBytes = 5;

/**
 * Splits HTTP/2 DATA chunks into gRPC envelopes, each message a plain
 * Uint8Array (not a Node Buffer), so that protobuf-es' bytes fields, which are
 * views on it, behave as everywhere else and do not keep a whole network
 * chunk alive: a message is copied out of the chunk it came in, or, when it
 * was joined from several chunks, is a view on the joined buffer — one copy
 * either way. A declared size above readMaxBytes fails before any of it is
 * buffered.
 */
export class EnvelopeReader {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  /** `address` names the peer in the error of a message over the limit. */
  constructor(
    private readonly readMaxBytes: number,
    private readonly address = "the server",
  ) {}

  /** Bytes received that do not yet form a whole envelope. */
  get buffered(): number {
    return this.pendingBytes;
  }

  /** Feeds one chunk; calls `onEnvelope` for each envelope it completes. Throws ResourceExhausted over the limit. */
  push(chunk: Uint8Array, onEnvelope: (envelope: Envelope) => void): void {
    let data = chunk;
    let joined = false;
    if (this.pendingBytes > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.byteLength;
      const size = this.declaredSize();
      if (size === undefined || this.pendingBytes < prefixBytes + size) {
        return;
      }
      data = concat(this.pending, this.pendingBytes);
      joined = true;
      this.pending = [];
      this.pendingBytes = 0;
    }
    let offset = 0;
    while (data.byteLength - offset >= prefixBytes) {
      const size = readSize(data, offset + 1);
      this.assertSize(size);
      const end = offset + prefixBytes + size;
      if (end > data.byteLength) {
        break;
      }
      // A message joined from several chunks is already in a buffer of its own.
      const message = joined && offset === 0 ? data.subarray(prefixBytes, end) : copy(data, offset + prefixBytes, end);
      onEnvelope({ flags: data[offset]!, data: message });
      offset = end;
    }
    if (offset < data.byteLength) {
      const rest = data.subarray(offset);
      this.pending.push(rest);
      this.pendingBytes = rest.byteLength;
    }
  }

  /** The size the buffered envelope declares, once its prefix is complete. */
  private declaredSize(): number | undefined {
    if (this.pendingBytes < prefixBytes) {
      return undefined;
    }
    const head = this.pending[0]!.byteLength >= prefixBytes ? this.pending[0]! : concat(this.pending, prefixBytes);
    const size = readSize(head, 1);
    this.assertSize(size);
    return size;
  }

  private assertSize(size: number): void {
    if (size > this.readMaxBytes) {
      throw new ConnectError(
        `${this.address} sent a message of ${size} bytes, over the limit of ${this.readMaxBytes} bytes (readMaxBytes): refused before reading it`,
        Code.ResourceExhausted,
      );
    }
  }
}

function copy(bytes: Uint8Array, start: number, end: number): Uint8Array {
  const out = new Uint8Array(end - start);
  out.set(bytes.subarray(start, end));
  return out;
}

function readSize(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) >>> 0) + (bytes[at + 1]! << 16) + (bytes[at + 2]! << 8) + bytes[at + 3]!;
}

/** The first `length` bytes of the chunks, in one new buffer. */
function concat(chunks: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    const take = Math.min(chunk.byteLength, length - offset);
    out.set(take === chunk.byteLength ? chunk : chunk.subarray(0, take), offset);
    offset += take;
    if (offset === length) {
      break;
    }
  }
  return out;
}
