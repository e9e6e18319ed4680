import { Code, ConnectError } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { deliveryOf, isNotConnected, markDelivery } from "./delivery.js";

/** System error codes raised before a request could reach the peer at all (Node's names; fetch wraps them as `cause`). */
const notConnectedCodes = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "ENOTFOUND", "EAI_AGAIN"]);

/** How a failed call relates to the peer it was sent to. */
export interface FailureKind {
  /**
   * The peer could not be reached, or the connection to it was lost: it should
   * get no calls for a while. Resending such a call takes nothing from the
   * retry budget: the budget keeps retries from piling onto servers that
   * answer (overloaded ones), and the ejection already keeps calls away from
   * this one — while a crash fails all of a peer's calls in flight at once.
   */
  readonly unreachable: boolean;
  /** Sending the call again, to another peer, cannot repeat a side effect. */
  readonly retryable: boolean;
  /**
   * A live peer refused the stream (HTTP/2 REFUSED_STREAM): resent for free,
   * but no sign against the peer — a server's rapid-reset protection refuses
   * streams after a storm of our own cancellations.
   */
  readonly refused: boolean;
  /**
   * The connection to the peer could not be established (refused, timed out,
   * a failed handshake): the peer leaves the picker whatever the number of
   * such peers, until a reconnect succeeds, and the registry is read again
   * early — it is likely gone from it.
   */
  readonly notConnected: boolean;
}

const ordinary: FailureKind = { unreachable: false, retryable: false, refused: false, notConnected: false };

export function classifyFailure(error: ConnectError, method: DescMethod): FailureKind {
  const delivery = deliveryOf(error);
  if (delivery === "canceled") {
    return ordinary;
  }
  if ([error, ...causes(error)].some(isRefusedStream)) {
    return { unreachable: false, retryable: true, refused: true, notConnected: false };
  }
  const notConnected = isNotConnected(error) || neverSent(error);
  if (delivery === "unprocessed" || notConnected) {
    return { unreachable: true, retryable: true, refused: false, notConnected };
  }
  if (delivery === "lost") {
    return { unreachable: true, retryable: isIdempotent(method), refused: false, notConnected: false };
  }
  if (error.code === Code.Unavailable) {
    return { unreachable: false, retryable: isIdempotent(method), refused: false, notConnected: false };
  }
  return ordinary;
}

/**
 * The error of a failed attempt as the balancer should see it. connect-node
 * reports the calls of a connection that died as Canceled ("http/2 stream
 * closed with error code CANCEL") or Aborted ("read ECONNRESET"), the codes
 * of a caller's own cancellation; when the caller did not cancel and the
 * error came from the connection (a reset, or a Node system error as its
 * cause) rather than from a server's status, the connection was lost:
 * Unavailable, "lost". A server's own ABORTED (a conflict) stays as it is.
 */
export function asPeerFailure(error: ConnectError, callerAborted: boolean): ConnectError {
  const misreported =
    (error.code === Code.Canceled || error.code === Code.Aborted) &&
    !callerAborted &&
    deliveryOf(error) === undefined &&
    (error.rawMessage.startsWith("http/2 stream closed with error code") || causes(error).some(isSystemError));
  if (!misreported) {
    return error;
  }
  return markDelivery(new ConnectError(`connection lost: ${error.rawMessage}`, Code.Unavailable, error.metadata, undefined, error), "lost");
}

/** A Node system error (ECONNRESET, ERR_HTTP2_STREAM_ERROR…), as opposed to a status a server sent. */
function isSystemError(cause: unknown): boolean {
  return cause instanceof Error && !(cause instanceof ConnectError) && typeof (cause as { code?: unknown }).code === "string";
}

/** For transports that do not mark their errors (connect-node's, fetch's causes): the request provably never left. */
function neverSent(error: ConnectError): boolean {
  return causes(error).some((cause) => notConnectedCodes.has(String((cause as { code?: unknown }).code)));
}

/** HTTP/2 REFUSED_STREAM: the server guarantees it did not process the request (RFC 9113 §8.7); node:http2 names it in its stream error. */
function isRefusedStream(cause: unknown): boolean {
  return /\bREFUSED_STREAM\b|NGHTTP2_REFUSED_STREAM/.test(String((cause as { message?: unknown }).message));
}

function isIdempotent(method: DescMethod): boolean {
  return method.idempotency !== MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN;
}

function causes(error: Error): unknown[] {
  const chain: unknown[] = [];
  for (let cause: unknown = error.cause; cause !== undefined && cause !== null && chain.length < 8; ) {
    chain.push(cause);
    cause = (cause as { cause?: unknown }).cause;
  }
  return chain;
}
