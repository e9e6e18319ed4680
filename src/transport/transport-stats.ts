import type { Peer } from "../peer.js";
import type { OutlierDetection, PeerOutcome } from "./outlier-detection.js";
import type { Reachability } from "./reachability.js";

/**
 * What `transport.stats()` tells about one peer, for health endpoints and
 * dashboards. The transport counts these itself, so they are the same under
 * every balancer. They are kept while the peer stays in the registry (other
 * registry changes reset nothing) and start again from zero when a peer that
 * left comes back. A plain frozen object: JSON.stringify() shows it whole.
 */
export interface PeerStats {
  /** "host:port" as dialled, as `Peer.address`. */
  readonly address: string;
  /** The instance id from the registry, as `Peer.id`. */
  readonly id: string;
  /** Attempts sent to the peer: a call retried on it, or resent to it, counts once per attempt. */
  readonly calls: number;
  /**
   * Attempts that failed for a reason held against the peer, as outlier
   * detection counts them: the peer was unreachable, the connection to it was
   * lost, or it answered Unavailable, Internal, Unknown or DataLoss. Not
   * counted: the caller's cancellation, a passed deadline, a stream the peer
   * refused (resent for free), and application errors (NotFound…), which
   * show a working server.
   */
  readonly failures: number;
  /** Attempts on the peer not ended yet; a stream counts until it ends. */
  readonly inflight: number;
  /**
   * Moving average of the latency of the peer's successful attempts, in ms:
   * the whole call for unary methods, the time until the response started for
   * streams. Each success moves it 1/8 of the way to its own latency (as TCP's
   * smoothed round-trip time); null until an attempt on the peer succeeded.
   */
  readonly latencyMs: number | null;
  /**
   * The peer gets no calls now: its connection could not be established (it
   * comes back, to be tried again, after a backoff of 1 s growing to 120 s),
   * or outlier detection ejected it (below the panic threshold every
   * reachable peer gets calls again all the same).
   */
  readonly ejected: boolean;
}

/** The counters kept on each peer's transport, updated in place: nothing is allocated per call. */
export interface AttemptCounters {
  calls: number;
  failures: number;
  latencyMs: number | null;
}

/** How much one success moves the latency average (RFC 6298's alpha). */
const latencyWeight = 1 / 8;

/** Counts how an attempt ended: a failure held against the peer, or the latency of a success. */
export function countEnd(counters: AttemptCounters, outcome: PeerOutcome, succeededInMs?: number): void {
  if (outcome === "failed" || outcome === "unreachable" || outcome === "unreached") {
    counters.failures++;
  } else if (succeededInMs !== undefined) {
    const average = counters.latencyMs;
    counters.latencyMs = average === null ? succeededInMs : average + (succeededInMs - average) * latencyWeight;
  }
}

/** The stats of each peer, in the order given; peers not called yet show zeros. */
export function statsOf(
  peers: readonly Peer[],
  countersOf: (peer: Peer) => (AttemptCounters & { readonly inflight: number }) | undefined,
  detection: OutlierDetection | undefined,
  reachability: Reachability,
  now: number,
): PeerStats[] {
  detection?.expire(now); // an ejection whose time is up shows as over
  reachability.expire(now);
  return peers.map((peer) => {
    const counters = countersOf(peer);
    return Object.freeze({
      address: peer.address,
      id: peer.id,
      calls: counters?.calls ?? 0,
      failures: counters?.failures ?? 0,
      inflight: counters?.inflight ?? 0,
      latencyMs: counters?.latencyMs ?? null,
      ejected: reachability.isOut(peer) || (detection?.isEjected(peer) ?? false),
    });
  });
}
