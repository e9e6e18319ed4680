import { Code, type ConnectError } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { deliveryOf } from "./delivery.js";

/** System error codes raised before a request could reach the peer at all (Node's names; fetch wraps them as `cause`). */
const notConnectedCodes = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "ENOTFOUND", "EAI_AGAIN"]);

/** How a failed call relates to the peer it was sent to. */
export interface FailureKind {
  /** The peer could not be reached: it should get no calls for a while. */
  readonly unreachable: boolean;
  /** Sending the call again, to another peer, cannot repeat a side effect. */
  readonly retryable: boolean;
}

const ordinary: FailureKind = { unreachable: false, retryable: false };

export function classifyFailure(error: ConnectError, method: DescMethod): FailureKind {
  const delivery = deliveryOf(error);
  if (delivery === "canceled") {
    return ordinary;
  }
  if (delivery === "unprocessed" || neverSent(error)) {
    return { unreachable: true, retryable: true };
  }
  if (delivery === "lost") {
    return { unreachable: true, retryable: isIdempotent(method) };
  }
  if (error.code === Code.Unavailable) {
    return { unreachable: false, retryable: isIdempotent(method) };
  }
  return ordinary;
}

/** For transports that do not mark their errors (connect-node's, fetch's causes): the request provably never left. */
function neverSent(error: ConnectError): boolean {
  return causes(error).some(
    (cause) =>
      notConnectedCodes.has(String((cause as { code?: unknown }).code)) ||
      // HTTP/2 REFUSED_STREAM: the server guarantees it did not process the request
      // (RFC 9113 §8.7) — what an instance that is shutting down answers on an open connection.
      String((cause as { message?: unknown }).message).includes("NGHTTP2_REFUSED_STREAM"),
  );
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
