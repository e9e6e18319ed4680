/** RFC 9113 §7: the names of the HTTP/2 error codes, for messages a person reads. */
const names = [
  "NO_ERROR",
  "PROTOCOL_ERROR",
  "INTERNAL_ERROR",
  "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT",
  "STREAM_CLOSED",
  "FRAME_SIZE_ERROR",
  "REFUSED_STREAM",
  "CANCEL",
  "COMPRESSION_ERROR",
  "CONNECT_ERROR",
  "ENHANCE_YOUR_CALM",
  "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED",
] as const;

/** "HTTP/2 error code 2 (INTERNAL_ERROR)"; an unknown code by its number alone. */
export function describeHttp2Code(code: number): string {
  const name = names[code];
  return name === undefined ? `HTTP/2 error code ${code}` : `HTTP/2 error code ${code} (${name})`;
}

/**
 * Codes the client's own HTTP/2 layer (nghttp2) resets a stream with when
 * the server sent a frame it must not (a bad header, a frame too large, data
 * beyond the window): node:http2 reports them exactly as the server's own
 * RST_STREAM, so a message cannot say which side sent them. The other codes
 * (INTERNAL_ERROR, CANCEL, ENHANCE_YOUR_CALM …) come from the server.
 */
const raisedLocallyToo = new Set([1, 3, 5, 6, 9]);

/** The words for a stream that ended with RST_STREAM `code`: "reset by the server with HTTP/2 error code 2 (INTERNAL_ERROR)". */
export function describeReset(code: number): string {
  return `reset ${raisedLocallyToo.has(code) ? "" : "by the server "}with ${describeHttp2Code(code)}`;
}
