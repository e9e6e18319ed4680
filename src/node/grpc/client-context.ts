import type { DescMethod } from "@bufbuild/protobuf";
import type { OutgoingHttpHeaders } from "node:http2";
import { canceledBy, type CallSettings } from "./call.js";
import type { CodecOptions, MethodCodec } from "./codec.js";
import type { Connection, PeerConnection } from "./connection.js";

/** What every call of one peer's client shares: settled once per transport. */
export interface ClientContext {
  readonly settings: CallSettings;
  readonly codecOptions: CodecOptions;
  readonly codecs: (method: DescMethod) => MethodCodec;
  readonly requestHeaders: (method: DescMethod, timeoutMs: number | undefined, callerHeader: HeadersInit | undefined) => OutgoingHttpHeaders;
  readonly connection: PeerConnection;
}

/** Longest timer Node keeps (about 24.8 days); a longer deadline is left to the server. */
const maxTimerMs = 0x7fffffff;

/**
 * What a call needs before its stream opens: its headers and its connection.
 * Fails (rejecting, nothing started) when the caller already aborted or a
 * header is invalid; so no call sets up a timer or listener it cannot end.
 */
export function prepareCall(
  context: ClientContext,
  method: DescMethod,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  header: HeadersInit | undefined,
): { headers: OutgoingHttpHeaders; connection: Connection; timerMs: number | undefined } {
  if (signal?.aborted === true) {
    throw canceledBy(signal);
  }
  const headers = context.requestHeaders(method, timeoutMs, header);
  return { headers, connection: context.connection.acquire(), timerMs: timeoutMs !== undefined && timeoutMs <= maxTimerMs ? timeoutMs : undefined };
}

/** The time left of a deadline set `elapsedMs` ago, for work (compression) done before the call starts. */
export function remainingMs(timeoutMs: number | undefined, startedAt: number): number | undefined {
  return timeoutMs === undefined ? undefined : Math.max(1, Math.ceil(timeoutMs - (performance.now() - startedAt)));
}
