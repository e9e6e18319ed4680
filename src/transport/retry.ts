import { ConnectError, type ContextValues, type Transport } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Peer } from "../peer.js";
import { requestHeader } from "../request-header.js";
import type { Attempt, AttemptFailure } from "./attempt.js";
import { deliveryOf } from "./delivery.js";
import type { RetryBudget } from "./retry-budget.js";

/** One call as the retry loop sees it. */
export interface RetriedCall<R> {
  readonly method: DescMethod;
  readonly signal: AbortSignal | undefined;
  readonly timeoutMs: number | undefined;
  readonly header: HeadersInit | undefined;
  readonly contextValues: ContextValues;
  /** Whether the request can be sent again at all (its input can be read again). */
  readonly resendable: boolean;
  /** Sends one attempt; `attempt` is for a stream to keep its peer's open streams (a unary call ignores it). */
  send(transport: Transport, peer: Peer, headers: Headers, remainingMs: number | undefined, attempt: Attempt): Promise<R>;
}

/** What the retry loop needs from the balanced transport. */
export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly budget: RetryBudget;
  /** Picks a peer this call has not tried while there is one, and starts an attempt on it. */
  begin(call: RetriedCall<unknown>, headers: Headers, remainingMs: number | undefined, tried: ReadonlySet<string>): Promise<Attempt>;
  finish(attempt: Attempt, error: unknown): AttemptFailure;
  /** Waits (within the call) for a fresh registry read, where one may start now; rejects only when the transport closed meanwhile. */
  awaitFreshRead(call: RetriedCall<unknown>, remainingMs: number | undefined): Promise<void>;
  /** Whether the current peers include one not in `tried`. */
  hasUntried(tried: ReadonlySet<string>): boolean;
}

const noneTried: ReadonlySet<string> = new Set<string>();

/**
 * Attempts that no server processed, per call, that do not count toward
 * maxAttempts: the connection could not be made (each such peer leaves the
 * picker at once), or the server refused the stream or had announced GOAWAY
 * below it — gRFC A6's transparent retries. So during a rolling deploy, or
 * while several servers shut down gracefully, a call is not failed by the
 * departing instances it met first. Bounded, as a failing network must not
 * make one call try a whole fleet.
 */
const maxUnprocessedAttempts = 4;

/**
 * Sends a call, and sends it again to another peer while that is safe and
 * allowed — the failure says the request can be resent, attempts are left,
 * the caller has not aborted, the deadline has not passed, a peer is left to
 * try, and the retry budget allows it (resends after a connection failure
 * are not counted: that peer is ejected at once) — until a peer answers.
 * Attempts no server processed do not count toward maxAttempts (up to
 * maxUnprocessedAttempts). The attempt that answered is
 * returned still open: the caller finishes it.
 */
export async function untilResponse<R>(policy: RetryPolicy, call: RetriedCall<R>): Promise<{ response: R; attempt: Attempt }> {
  const deadline = call.timeoutMs === undefined ? undefined : performance.now() + call.timeoutMs;
  let tried = noneTried; // allocated on the first failure: most calls have none
  let earlier: string[] | undefined;
  let attempts = 0;
  let unprocessedAttempts = 0;
  let reread = false;
  let retries = 0;
  policy.budget.callStarted();
  try {
    for (;;) {
      // each attempt starts from the caller's headers, whatever interceptors added last time
      const headers = requestHeader(call.header);
      const attempt = await policy.begin(call, headers, remainingOf(deadline), tried);
      try {
        return { response: await call.send(attempt.entry.transport, attempt.pick.peer, headers, remainingOf(deadline), attempt), attempt };
      } catch (error) {
        const failure = policy.finish(attempt, error);
        const unprocessed = failure.kind.notConnected || failure.kind.refused || deliveryOf(failure.error) === "unprocessed";
        if (!unprocessed || ++unprocessedAttempts > maxUnprocessedAttempts) {
          attempts++;
        }
        tried = new Set([...tried, attempt.pick.peer.url]);
        const free = failure.kind.unreachable || failure.kind.refused; // never reached a server, or a dead one
        const allowed = call.resendable && failure.kind.retryable && attempts < policy.maxAttempts && call.signal?.aborted !== true;
        if (allowed && free && !reread && !policy.hasUntried(tried)) {
          // Every peer known was tried and is gone: the registry has likely moved on. Read it once before giving up.
          reread = true;
          await policy.awaitFreshRead(call, remainingOf(deadline));
        }
        const timeLeft = deadline === undefined || deadline - performance.now() > 0;
        const worthRetrying = allowed && timeLeft && policy.hasUntried(tried);
        if (!worthRetrying || !(free || policy.budget.tryRetry())) {
          throw earlier === undefined ? failure.error : withEarlierAttempts(failure.error, earlier);
        }
        (earlier ??= []).push(`${attempt.pick.peer.address}: ${failure.error.cause instanceof ConnectError ? failure.error.cause.message : failure.error.rawMessage}`);
        retries += free ? 0 : 1;
      }
    }
  } finally {
    policy.budget.callEnded(retries);
  }
}

/** The time left until the deadline in whole ms, at least 1; undefined without a deadline. */
function remainingOf(deadline: number | undefined): number | undefined {
  return deadline === undefined ? undefined : Math.max(1, Math.round(deadline - performance.now()));
}

/** The error of the last attempt, its message also saying how each earlier attempt failed. */
function withEarlierAttempts(last: ConnectError, earlier: readonly string[]): ConnectError {
  const error = new ConnectError(`${last.rawMessage}; ${earlier.length + 1} peers tried, earlier: ${earlier.join("; ")}`, last.code, last.metadata, undefined, last.cause);
  error.details = last.details;
  return error;
}
