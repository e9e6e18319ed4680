import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import type { CallResult, Pick } from "../balancer/balancer.js";
import type { EventListener } from "../events.js";
import { peerKey, type Peer } from "../peer.js";
import { deliveryOf, markDelivery } from "./delivery.js";
import { asPeerFailure, classifyFailure, type FailureKind } from "./failures.js";
import type { MethodAnswers } from "./method-answers.js";
import { outcomeOf, type OutlierDetection } from "./outlier-detection.js";
import type { PeerTransport, PeerTransports } from "./peer-transports.js";
import type { Reachability } from "./reachability.js";
import { countEnd } from "./transport-stats.js";

/** One attempt of a call on one peer: from the pick to the end of the response. */
export interface Attempt {
  readonly method: DescMethod;
  /** The caller's signal: a failure after it aborted is the caller's doing. */
  readonly signal: AbortSignal | undefined;
  readonly pick: Pick;
  readonly entry: PeerTransport;
  readonly started: number;
  /** When the response started, for a stream still open. */
  responded?: number;
}

/** How an attempt failed: the error naming its peer, and what the failure means for resending. */
export interface AttemptFailure {
  readonly error: ConnectError;
  readonly kind: FailureKind;
}

/** What starting and ending attempts touches: the per-peer transports, the policy, health, events. */
export interface AttemptScope {
  readonly service: string;
  readonly pool: PeerTransports;
  readonly detection: OutlierDetection | undefined;
  readonly reachability: Reachability;
  readonly answers: MethodAnswers;
  readonly onEvent: EventListener;
  /** A peer could not be reached: it has likely left the registry, which is read again early. */
  onUnreached(): void;
  /** How many peers there are now: ejection limits are a share of it. */
  peerCount(): number;
  /** Why the balanced transport was closed, once it was: then every failure is that close. */
  closedBy(): ConnectError | undefined;
}

const succeeded: CallResult = Object.freeze({});

/** Starts an attempt on the picked peer: the peer goes into the context values, and its transport is taken. */
export function beginAttempt(scope: AttemptScope, pick: Pick, method: DescMethod, signal: AbortSignal | undefined, contextValues: ContextValues): Attempt {
  const started = performance.now();
  contextValues.set(peerKey, pick.peer);
  let entry: PeerTransport;
  try {
    entry = scope.pool.acquire(pick.peer);
  } catch (error) {
    const failure = ConnectError.from(error, Code.Internal);
    pick.done?.({ error: failure }, 0);
    throw attributeToPeer(failure, pick.peer, scope.service);
  }
  return { method, signal, pick, entry, started };
}

/**
 * Ends an attempt, once: frees the peer's transport, tells the policy,
 * the peer's counters and outlier detection, and returns the failure naming the peer.
 */
export function finishAttempt(scope: AttemptScope, attempt: Attempt, error?: unknown): AttemptFailure | undefined {
  const { pick, entry, started, method } = attempt;
  const now = performance.now();
  const latencyMs = (attempt.responded ?? now) - started;
  scope.pool.release(entry);
  if (error === undefined) {
    pick.done?.(succeeded, latencyMs);
    countEnd(entry, "alive", latencyMs);
    entry.answeredAt = now;
    scope.reachability.reached(pick.peer);
    scope.answers.answered(method, pick.peer, now, latencyMs);
    scope.detection?.record(pick.peer, "alive", now, scope.peerCount());
    return undefined;
  }
  const canceledByCaller = attempt.signal?.aborted === true;
  const failure = closedFailure(scope, error) ?? asPeerFailure(ConnectError.from(error), canceledByCaller);
  pick.done?.({ error: failure }, latencyMs);
  const kind = classifyFailure(failure, method);
  // A deadline before any answer: a black hole if another peer answered the method meanwhile, faster,
  // and this one answered nothing at all since the attempt started.
  const unanswered = failure.code === Code.DeadlineExceeded && attempt.responded === undefined && entry.answeredAt < started;
  const othersAnswered = unanswered && scope.answers.answeredElsewhere(method, pick.peer, now, now - started);
  const outcome = othersAnswered && kind.notConnected ? "unreached" : outcomeOf(failure, kind, canceledByCaller || deliveryOf(failure) === "canceled", othersAnswered);
  countEnd(entry, outcome);
  if (outcome === "unreached") {
    reportEjection(scope, pick.peer, "unreachable", scope.reachability.unreached(pick.peer, now), failure);
    scope.onUnreached();
  } else {
    if (outcome === "alive" || (outcome === "failed" && !unanswered)) {
      scope.reachability.reached(pick.peer); // it answered: its connection works
    }
    const forMs = scope.detection?.record(pick.peer, outcome, now, scope.peerCount());
    reportEjection(scope, pick.peer, outcome === "unreachable" ? "unreachable" : "consecutive_failures", forMs, failure);
  }
  return { error: attributeToPeer(failure, pick.peer, scope.service), kind };
}

function reportEjection(scope: AttemptScope, peer: Peer, reason: "unreachable" | "consecutive_failures", forMs: number | undefined, error: ConnectError): void {
  if (forMs !== undefined) {
    scope.onEvent({ type: "peer_ejected", service: scope.service, address: peer.address, forMs, reason, error });
  }
}

/**
 * A failure once the transport is closing is the close's doing — its per-peer
 * transports drop their connections, which would read as lost peers: it is
 * Canceled, "canceled", neither retried nor held against the peer.
 */
function closedFailure(scope: AttemptScope, error: unknown): ConnectError | undefined {
  const reason = scope.closedBy();
  if (reason === undefined || error === reason) {
    return reason;
  }
  return markDelivery(new ConnectError(reason.rawMessage, reason.code, undefined, undefined, error), "canceled");
}

/** The same error, its message naming the peer that was tried. */
export function attributeToPeer(error: ConnectError, peer: Peer, service: string): ConnectError {
  const attributed = new ConnectError(`${error.rawMessage} (peer ${peer.address} of "${service}")`, error.code, error.metadata, undefined, error);
  attributed.details = error.details;
  return attributed;
}
