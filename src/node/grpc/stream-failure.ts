import { Code, ConnectError } from "@connectrpc/connect";
import { markDelivery, markNotConnected } from "../../transport/delivery.js";
import { describeHttp2Code, describeReset } from "./http2-error-codes.js";

/** What is known about a stream that ended without a gRPC status. */
export interface EndedStream {
  /** "host:port" of the peer, for the message. */
  readonly address: string;
  /** The HTTP/2 stream id; undefined when the request was never handed to the connection. */
  readonly streamId: number | undefined;
  /** RST_STREAM code the stream was closed with (0 when none). */
  readonly rstCode: number;
  /** Whether the connection was ever established. */
  readonly connected: boolean;
  /** Whether the connection was gone when the stream ended: node:http2 then closes its streams with CANCEL, which no server sent. */
  readonly connectionGone: boolean;
  /** The last stream id a GOAWAY from the peer promised to process. */
  readonly goawayLastStreamId: number | undefined;
  /** The stream's or the connection's error, if any. */
  readonly cause: Error | undefined;
}

const refusedStream = 7; // RFC 9113 §8.7: the server did not process the request
const cancel = 8;

/**
 * The error of a stream that ended without a status, marked with what became
 * of its request: "unprocessed" when the peer provably never acted on it
 * (no connection, never sent, REFUSED_STREAM, above GOAWAY's last stream id),
 * else "lost". Both are Unavailable: the peer, not the call, failed.
 */
export function streamFailure(ended: EndedStream): ConnectError {
  const { address, streamId, rstCode, cause } = ended;
  const why = describeEnd(ended);
  if (!ended.connected) {
    // Node cancels the pending stream "caused by" the connection's error: name that one.
    const connectError = cause?.cause instanceof Error ? cause.cause : cause;
    return markNotConnected(unavailable(`cannot connect to ${address}: ${connectError?.message ?? why}`, "unprocessed", connectError));
  }
  if (streamId === undefined) {
    return unavailable(`request not sent to ${address}: ${why}`, "unprocessed", cause);
  }
  if (rstCode === refusedStream) {
    return unavailable(`${address} refused the stream (REFUSED_STREAM): the request was not processed`, "unprocessed", cause);
  }
  if (ended.goawayLastStreamId !== undefined && streamId > ended.goawayLastStreamId) {
    return unavailable(`${address} is going away (GOAWAY) and did not process the request`, "unprocessed", cause);
  }
  if (rstCode !== 0 && isStreamReset(cause) && !(rstCode === cancel && ended.connectionGone)) {
    return unavailable(`stream to ${address} ${describeReset(rstCode)}: the request may have been processed`, "lost", cause);
  }
  return unavailable(`connection to ${address} lost: ${why}`, "lost", cause);
}

/** RST_STREAM on a live connection: no error from node:http2, or its stream error for that code. */
function isStreamReset(cause: Error | undefined): boolean {
  return cause === undefined || (cause as { code?: string }).code === "ERR_HTTP2_STREAM_ERROR";
}

/**
 * Why the stream ended, in words: node:http2's own messages ("Stream closed
 * with error code NGHTTP2_INTERNAL_ERROR") do not say whether the server
 * reset the stream or closed the connection (GOAWAY).
 */
function describeEnd({ rstCode, cause, connectionGone }: EndedStream): string {
  if (rstCode !== 0 && (cause as { code?: string } | undefined)?.code === "ERR_HTTP2_SESSION_ERROR") {
    return `the server closed the connection (GOAWAY) with ${describeHttp2Code(rstCode)}`;
  }
  if (rstCode === cancel && cause === undefined && connectionGone) {
    return "the connection closed while the call was open (the server process died, or the network dropped it)";
  }
  if (rstCode !== 0 && isStreamReset(cause)) {
    return `stream ${describeReset(rstCode)}`;
  }
  return cause?.message ?? "stream closed without a status";
}

function unavailable(message: string, delivery: "unprocessed" | "lost", cause: Error | undefined): ConnectError {
  return markDelivery(new ConnectError(message, Code.Unavailable, undefined, undefined, cause), delivery);
}
