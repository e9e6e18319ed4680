import { Code, ConnectError } from "@connectrpc/connect";
import type { Balancer } from "./balancer.js";
import { LatencyAverage } from "./latency-average.js";
import { StatsByPeer, failureFadeMs, isPeerFailure, recentFailures, recordFailure, twoChoices, type PeerLoad } from "./peer-stats.js";

export interface P2cOptions {
  /** Time constant in ms of a peer's estimate while it gets no calls, and the age past which its samples are forgotten (default 10,000, as Finagle's and Linkerd's decay). */
  readonly decayMs?: number;
}

/** The most a failure counts as: long enough to move traffic away, short enough to be forgiven. */
const maxPenaltyMs = 10_000;

/**
 * Power of two choices over latency (Finagle, Linkerd): of two peers chosen at
 * random, the one with the lower cost = latency × (calls in flight + 1). The
 * latency is the median of the peer's recent samples — robust where a peak
 * EWMA believes every spike of a noisy client — and fades with the time since
 * the last one; calls still waiting on a peer count as at least their age,
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
  /** The unary calls in flight on every peer, as each peer's `aged` and `startedSum`: what a peer's waiting calls are compared with. */
  const waiting: Waiting = { aged: 0, startedSum: 0 };
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
        const i = cost(peerStats[b]!, average, waiting, now, decayMs) < cost(peerStats[a]!, average, waiting, now, decayMs) ? b : a;
        const chosen = peerStats[i]!;
        // A stream stays open for as long as the caller likes: its age says nothing about the peer.
        const aged = request.method.methodKind === "unary" ? now : 0;
        const counted = aged === 0 ? 0 : 1;
        chosen.inflight++;
        chosen.startedSum += aged;
        chosen.aged += counted;
        waiting.startedSum += aged;
        waiting.aged += counted;
        return {
          peer: peers[i]!,
          done: (result, latencyMs) => {
            chosen.inflight--;
            chosen.startedSum -= aged;
            chosen.aged -= counted;
            waiting.startedSum -= aged;
            waiting.aged -= counted;
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

interface Waiting {
  aged: number;
  startedSum: number;
}

/** Latency × (calls in flight + 1); a peer never measured is assumed to be as fast as the average: neither starved nor flooded. */
function cost(stats: PeerLoad, average: LatencyAverage, all: Waiting, now: number, decayMs: number): number {
  const estimate = latency(stats, now, decayMs) ?? average.mean(now);
  // Recent server-side failures count as calls in flight: a peer that fails fast would otherwise look idle.
  return Math.max(estimate, waitedLonger(stats, all, now)) * (stats.inflight + 1 + recentFailures(stats, now, Math.min(failureFadeMs, decayMs)));
}

/**
 * How much longer the peer's unary calls in flight have waited, on average,
 * than those on the other peers: a peer that stopped answering shows it
 * before any of its calls returns. Compared with the others, because a stall
 * of the client itself (GC, a busy loop) ages every call in flight alike and
 * says nothing about any peer; by their own age alone, the fast peers looked
 * slow after each stall and the slow one won the comparisons.
 */
function waitedLonger(stats: PeerLoad, all: Waiting, now: number): number {
  if (stats.aged === 0) {
    return 0;
  }
  const others = all.aged - stats.aged;
  const othersAge = others === 0 ? 0 : now - (all.startedSum - stats.startedSum) / others;
  return Math.max(0, now - stats.startedSum / stats.aged - othersAge);
}

/**
 * The latency estimate as of now: it fades with the time since the last
 * sample, so a peer avoided for being slow is tried again later rather than
 * never (as tower's and Linkerd's peak EWMA do).
 */
function latency(stats: PeerLoad, now: number, decayMs: number): number | undefined {
  return stats.latencyMs === undefined ? undefined : stats.latencyMs * Math.exp(-(now - stats.sampledAt) / decayMs);
}

/**
 * How many recent samples the estimate is the median of. A peak believes one
 * spike at once, and a client's own stalls (GC, a busy event loop, other
 * processes on its cores) make spikes of every peer's samples: with the peak,
 * a fast peer's estimate stayed at its worst stall for seconds, and a slow
 * peer won the comparisons (1–2.8 % of calls to a 30× slower instance). The
 * median of 11 ignores up to 5 stalled samples, and follows a peer that
 * really turned slow after 6 (its waiting calls count as their age before).
 */
const recentSamples = 11;

/**
 * Takes a sample into the peer's estimate: the median of its recent samples.
 * Samples older than the time constant are dropped first, so a peer tried
 * again after being avoided is judged by what it does now.
 */
function record(stats: PeerLoad, sampleMs: number, decayMs: number): void {
  if (!Number.isFinite(sampleMs) || sampleMs < 0) {
    return;
  }
  const now = performance.now();
  const recent = (stats.recent ??= { samples: new Float64Array(recentSamples), next: 0, count: 0 });
  if (now - stats.sampledAt > decayMs) {
    recent.count = 0; // refilled from the start: the first `count` slots are the samples
    recent.next = 0;
  }
  recent.samples[recent.next] = sampleMs;
  recent.next = (recent.next + 1) % recentSamples;
  recent.count = Math.min(recentSamples, recent.count + 1);
  stats.average?.remove(stats);
  stats.latencyMs = median(recent.samples, recent.count);
  stats.sampledAt = now;
  stats.average?.add(stats);
}

/** Where median() sorts: one for the module, as picks never run concurrently. */
const scratch = new Float64Array(recentSamples);

/** The median of the ring's first `count` samples (their order in it does not matter): an insertion sort of at most 11, no allocation. */
function median(samples: Float64Array, count: number): number {
  for (let i = 0; i < count; i++) {
    const value = samples[i]!;
    let j = i;
    for (; j > 0 && scratch[j - 1]! > value; j--) {
      scratch[j] = scratch[j - 1]!;
    }
    scratch[j] = value;
  }
  return scratch[(count - 1) >> 1]!;
}
