import { Code, ConnectError } from "@connectrpc/connect";
import type { Balancer } from "./balancer.js";
import { LatencyAverage } from "./latency-average.js";
import { StatsByPeer, failureFadeMs, isPeerFailure, recentFailures, recordFailure, twoChoices, type PeerLoad } from "./peer-stats.js";

export interface P2cOptions {
  /** Time constant of the latency average in ms: how fast it forgets a slow sample (default 10,000, as Finagle and Linkerd). */
  readonly decayMs?: number;
}

/** The most a failure counts as: long enough to move traffic away, short enough to be forgiven. */
const maxPenaltyMs = 10_000;

/**
 * Power of two choices over peak-EWMA latency (Finagle, Linkerd): of two peers
 * chosen at random, the one with the lower cost = latency × (calls in flight + 1).
 * The latency jumps up to a slower sample at once and decays toward faster
 * ones with time; calls still waiting on a peer count as at least their age,
 * so a peer that stopped answering is avoided before any of them returns.
 * Unlike kratos' p2c, a new peer is not starved (it starts at the average of
 * the measured peers), a registry update resets nothing, and a call the
 * caller cancelled says nothing about the peer.
 */
export function p2c(options: P2cOptions = {}): Balancer {
  const decayMs = options.decayMs ?? 10_000;
  if (!(decayMs > 0) || !Number.isFinite(decayMs)) {
    throw new ConnectError(`p2c: decayMs must be a finite number of ms > 0, got ${decayMs}`, Code.InvalidArgument);
  }
  return p2cOver(new StatsByPeer(), decayMs);
}

/**
 * p2c keeping its statistics in `stats` (tests count what a pick reads
 * there). A pick reads two peers' stats and a running average, so it costs
 * the same at any number of peers; building a picker counts its peers'
 * latencies into a fresh average.
 */
export function p2cOver(stats: StatsByPeer, decayMs: number): Balancer {
  /** The average the peers' new samples go to: that of the picker built or used again last. */
  let current: LatencyAverage | undefined;
  const fleetLatency = (now: number) => current?.mean(now) ?? 1;
  return {
    name: "p2c",
    build(peers) {
      const peerStats = stats.forPeers(peers);
      let average = (current = countLatencies(peerStats, decayMs));
      return (request) => {
        if (average !== current) {
          // an older picker used again (the one over all peers once an ejection ends): once per switch, not per pick
          average = current = countLatencies(peerStats, decayMs);
        }
        const [a, b] = twoChoices(peers.length);
        const now = performance.now();
        const i = cost(peerStats[b]!, average, now, decayMs) < cost(peerStats[a]!, average, now, decayMs) ? b : a;
        const chosen = peerStats[i]!;
        // A stream stays open for as long as the caller likes: its age says nothing about the peer.
        const aged = request.method.methodKind === "unary" ? now : 0;
        chosen.inflight++;
        chosen.startedSum += aged;
        chosen.aged += aged === 0 ? 0 : 1;
        return {
          peer: peers[i]!,
          done: (result, latencyMs) => {
            chosen.inflight--;
            chosen.startedSum -= aged;
            chosen.aged -= aged === 0 ? 0 : 1;
            if (result.error?.code === Code.Canceled) {
              return;
            }
            // A server-side failure counts as twice the average latency (bounded), so a peer that fails
            // fast does not look attractive (Linkerd); an application error (NotFound) is an ordinary answer.
            if (isPeerFailure(result.error)) {
              recordFailure(chosen, performance.now(), Math.min(failureFadeMs, decayMs));
            }
            const sample = !isPeerFailure(result.error)
              ? latencyMs
              : Math.min(maxPenaltyMs, Math.max(latencyMs, 2 * fleetLatency(performance.now())));
            record(chosen, sample, decayMs);
          },
        };
      };
    },
  };
}

/** A fresh average over these peers' latencies, which their new samples go to from now on. */
function countLatencies(peerStats: readonly PeerLoad[], decayMs: number): LatencyAverage {
  const average = new LatencyAverage(decayMs, performance.now());
  for (const stats of peerStats) {
    average.add(stats);
    stats.average = average;
  }
  return average;
}

/** Latency × (calls in flight + 1); a peer never measured is assumed to be as fast as the average: neither starved nor flooded. */
function cost(stats: PeerLoad, average: LatencyAverage, now: number, decayMs: number): number {
  const estimate = latency(stats, now, decayMs) ?? average.mean(now);
  // Unary calls still waiting on the peer show it is at least this slow, before any of them answers.
  const waiting = stats.aged === 0 ? 0 : now - stats.startedSum / stats.aged;
  // Recent server-side failures count as calls in flight: a peer that fails fast would otherwise look idle.
  return Math.max(estimate, waiting) * (stats.inflight + 1 + recentFailures(stats, now, Math.min(failureFadeMs, decayMs)));
}

/**
 * The latency estimate as of now: it fades with the time since the last
 * sample, so a peer avoided for being slow is tried again later rather than
 * never (as tower's and Linkerd's peak EWMA do).
 */
function latency(stats: PeerLoad, now: number, decayMs: number): number | undefined {
  return stats.latencyMs === undefined ? undefined : stats.latencyMs * Math.exp(-(now - stats.sampledAt) / decayMs);
}

function record(stats: PeerLoad, sampleMs: number, decayMs: number): void {
  if (!Number.isFinite(sampleMs) || sampleMs < 0) {
    return;
  }
  const now = performance.now();
  const estimate = latency(stats, now, decayMs);
  stats.average?.remove(stats);
  if (estimate === undefined || sampleMs > estimate) {
    stats.latencyMs = sampleMs; // peak: a slower sample is believed at once
  } else {
    const keep = Math.exp(-(now - stats.sampledAt) / decayMs);
    stats.latencyMs = estimate * keep + sampleMs * (1 - keep);
  }
  stats.sampledAt = now;
  stats.average?.add(stats);
}
