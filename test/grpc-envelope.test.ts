// The pure parts of the gRPC client: envelope splitting and what a failed stream means.
import { describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { EnvelopeReader, type Envelope } from "../src/node/grpc/envelope-reader.js";
import { streamFailure, type EndedStream } from "../src/node/grpc/stream-failure.js";
import { deliveryOf } from "../src/transport/delivery.js";

function readAll(chunks: Uint8Array[], readMaxBytes = 1 << 30): Envelope[] {
  const reader = new EnvelopeReader(readMaxBytes);
  const out: Envelope[] = [];
  for (const chunk of chunks) {
    reader.push(chunk, (envelope) => out.push(envelope));
  }
  return out;
}

const bytes = (n: number, fill = 7) => new Uint8Array(n).fill(fill);

describe("EnvelopeReader", () => {
  it("reads several envelopes from one Node Buffer, each message a plain Uint8Array of its own", () => {
    const wire = Buffer.from([...encodeEnvelope(0, bytes(3, 1)), ...encodeEnvelope(1, bytes(2, 2))]);
    const [a, b] = readAll([wire]);
    expect(a).toEqual({ flags: 0, data: bytes(3, 1) });
    expect(b).toEqual({ flags: 1, data: bytes(2, 2) });
    expect(Buffer.isBuffer(a!.data)).toBe(false);
    expect(a!.data.buffer.byteLength).toBe(3);
  });

  it("joins an envelope split at every possible byte", () => {
    const wire = new Uint8Array([...encodeEnvelope(0, bytes(10, 3)), ...encodeEnvelope(0, bytes(0))]);
    for (let cut = 1; cut < wire.length; cut++) {
      const envelopes = readAll([wire.subarray(0, cut), wire.subarray(cut)]);
      expect(envelopes.map((e) => e.data.length), `cut at ${cut}`).toEqual([10, 0]);
      expect(envelopes[0]!.data).toEqual(bytes(10, 3));
    }
  });

  it("joins an envelope delivered one byte at a time", () => {
    const wire = encodeEnvelope(0, bytes(300, 9));
    const envelopes = readAll(Array.from(wire, (b) => new Uint8Array([b])));
    expect(envelopes).toEqual([{ flags: 0, data: bytes(300, 9) }]);
  });

  it("refuses a declared size above readMaxBytes before buffering it, also when the prefix is split", () => {
    const head = encodeEnvelope(0, bytes(101)).subarray(0, 5);
    for (const chunks of [[head], [head.subarray(0, 3), head.subarray(3)]]) {
      const reader = new EnvelopeReader(100);
      const error = (() => {
        try {
          chunks.forEach((chunk) => reader.push(chunk, () => {}));
        } catch (thrown) {
          return thrown;
        }
        return undefined;
      })();
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
      expect((error as ConnectError).message).toMatch(/sent a message of 101 bytes, over the limit of 100 bytes \(readMaxBytes\)/);
    }
  });

  it("counts the bytes of an incomplete envelope", () => {
    const reader = new EnvelopeReader(1000);
    reader.push(encodeEnvelope(0, bytes(50)).subarray(0, 20), () => {});
    expect(reader.buffered).toBe(20);
  });
});

describe("streamFailure", () => {
  const base: EndedStream = { address: "10.0.0.7:9000", streamId: 5, rstCode: 0, connected: true, connectionGone: false, goawayLastStreamId: undefined, cause: undefined };
  const cases: [string, Partial<EndedStream>, "unprocessed" | "lost", RegExp][] = [
    ["never connected", { connected: false, streamId: undefined, cause: Object.assign(new Error("connect ECONNREFUSED 10.0.0.7:9000"), { code: "ECONNREFUSED" }) }, "unprocessed", /cannot connect to 10\.0\.0\.7:9000: connect ECONNREFUSED/],
    ["pending stream cancelled by a connection error", { connected: false, streamId: undefined, cause: new Error("The pending stream has been canceled", { cause: new Error("connect ECONNREFUSED 10.0.0.7:9000") }) }, "unprocessed", /cannot connect to 10\.0\.0\.7:9000: connect ECONNREFUSED 10\.0\.0\.7:9000$/],
    ["never handed to the connection", { streamId: undefined }, "unprocessed", /request not sent to 10\.0\.0\.7:9000/],
    ["REFUSED_STREAM", { rstCode: 7 }, "unprocessed", /refused the stream \(REFUSED_STREAM\)/],
    ["above GOAWAY's last stream id", { streamId: 7, goawayLastStreamId: 5 }, "unprocessed", /going away \(GOAWAY\)/],
    ["at GOAWAY's last stream id", { streamId: 5, goawayLastStreamId: 5, cause: new Error("read ECONNRESET") }, "lost", /connection to 10\.0\.0\.7:9000 lost: read ECONNRESET/],
    ["reset by the server", { rstCode: 8 }, "lost", /stream to 10\.0\.0\.7:9000 reset by the server with HTTP\/2 error code 8 \(CANCEL\): the request may have been processed/],
    ["cancelled by node:http2 as the connection died", { rstCode: 8, connectionGone: true }, "lost", /connection to 10\.0\.0\.7:9000 lost: the connection closed while the call was open/],
    ["reset by the client's HTTP/2 layer or the server", { rstCode: 1, cause: Object.assign(new Error("Stream closed with error code NGHTTP2_PROTOCOL_ERROR"), { code: "ERR_HTTP2_STREAM_ERROR" }) }, "lost", /stream to 10\.0\.0\.7:9000 reset with HTTP\/2 error code 1 \(PROTOCOL_ERROR\)/],
    ["an unknown reset code", { rstCode: 0x77 }, "lost", /reset by the server with HTTP\/2 error code 119:/],
    ["GOAWAY with an error", { rstCode: 11, cause: Object.assign(new Error("Session closed with error code 11"), { code: "ERR_HTTP2_SESSION_ERROR" }) }, "lost", /connection to 10\.0\.0\.7:9000 lost: the server closed the connection \(GOAWAY\) with HTTP\/2 error code 11 \(ENHANCE_YOUR_CALM\)/],
    ["closed without a status", {}, "lost", /lost: stream closed without a status/],
  ];
  it.each(cases)("%s → Unavailable, %s", (_name, ended, delivery, message) => {
    const error = streamFailure({ ...base, ...ended });
    expect(error.code).toBe(Code.Unavailable);
    expect(deliveryOf(error)).toBe(delivery);
    expect(error.message).toMatch(message);
  });
});
