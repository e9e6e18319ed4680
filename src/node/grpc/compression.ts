/// <reference types="node" />
import * as zlib from "node:zlib";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";

/**
 * gzip and brotli over node:zlib, as connect-node's compressionGzip and
 * compressionBrotli (interchangeable with them), here so that the gRPC
 * client does not load connect-node at start-up.
 */
export const gzip = zlibCompression("gzip", promisify(zlib.gzip), promisify(zlib.gunzip));
export const brotli = zlibCompression("br", promisify(zlib.brotliCompress), promisify(zlib.brotliDecompress));

type ZlibFn = (bytes: Uint8Array, options: zlib.ZlibOptions & zlib.BrotliOptions) => Promise<Buffer>;

function zlibCompression(name: string, compress: ZlibFn, decompress: ZlibFn): Compression {
  return {
    name,
    compress: (bytes) => compress(bytes, {}).then(ownBuffer),
    decompress(bytes, readMaxBytes) {
      if (bytes.byteLength === 0) {
        return Promise.resolve(new Uint8Array(0));
      }
      return decompress(bytes, { maxOutputLength: readMaxBytes }).then(ownBuffer, (error: { code?: string }) => {
        throw error.code === "ERR_BUFFER_TOO_LARGE"
          ? new ConnectError(`message is larger than the limit of ${readMaxBytes} bytes (readMaxBytes) after decompression`, Code.ResourceExhausted)
          : new ConnectError(`${name} decompression failed`, Code.InvalidArgument, undefined, undefined, error);
      });
    },
  };
}

/** zlib's result as a plain Uint8Array (a view, not a copy): bytes fields must not come out as Node Buffers. */
function ownBuffer(bytes: Buffer): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new Uint8Array(bytes);
}
