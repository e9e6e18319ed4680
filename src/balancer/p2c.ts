import { Code } from "@connectrpc/connect";
import type { Balancer } from "./balancer.js";
import { StatsByPeer, twoChoices, type PeerStats } from "./peer-stats.js";

export interface P2cOptions {
  /** Time constant of the latency average in ms: how fast it forgets a slow sample (default 10,000, as Finagle and Linkerd). */
  readonly decayMs?: number;
}

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
  const stats = new StatsByPeer();
  return {
    name: "p2c",
    build(peers) {
      const peerStats = stats.forPeers(peers);
      return () => {
        const [a, b] = twoChoices(peers.length);
        const now = performance.now();
        const i = cost(peerStats, b, now, decayMs) < cost(peerStats, a, now, decayMs) ? b : a;
        const chosen = peerStats[i]!;
        chosen.inflight++;
        chosen.startedSum += now;
        return {
          peer: peers[i]!,
          done: (result, latencyMs) => {
            chosen.inflight--;
            chosen.startedSum -= now;
            if (result.error?.code === Code.Canceled) {
              return;
            }
            // A failure counts as at least twice the slowest peer's latency, so traffic moves away from it.
            const sample = result.error === undefined ? latencyMs : Math.max(latencyMs, 2 * slowest(peerStats, performance.now(), decayMs));
            record(chosen, sample, decayMs);
          },
        };
      };
    },
  };
}

function cost(all: readonly PeerStats[], i: number, now: number, decayMs: number): number {
  const stats = all[i]!;
  const estimate = latency(stats, now, decayMs) ?? averageLatency(all, now, decayMs);
  // Calls still waiting on the peer show it is at least this slow, before any of them answers.
  const waiting = stats.inflight === 0 ? 0 : now - stats.startedSum / stats.inflight;
  return Math.max(estimate, waiting) * (stats.inflight + 1);
}

/**
 * The latency estimate as of now: it fades with the time since the last
 * sample, so a peer avoided for being slow is tried again later rather than
 * never (as tower's and Linkerd's peak EWMA do).
 */
function latency(stats: PeerStats, now: number, decayMs: number): number | undefined {
  return stats.latencyMs === undefined ? undefined : stats.latencyMs * Math.exp(-(now - stats.sampledAt) / decayMs);
}

/** What an unmeasured peer is assumed to cost: neither starved nor flooded. */
function averageLatency(all: readonly PeerStats[], now: number, decayMs: number): number {
  let sum = 0;
  let measured = 0;
  for (const stats of all) {
    const estimate = latency(stats, now, decayMs);
    if (estimate !== undefined) {
      sum += estimate;
      measured++;
    }
  }
  return measured === 0 ? 1 : sum / measured;
}

function slowest(all: readonly PeerStats[], now: number, decayMs: number): number {
  return all.reduce((max, stats) => Math.max(max, latency(stats, now, decayMs) ?? 0), 0);
}

function record(stats: PeerStats, sampleMs: number, decayMs: number): void {
  const now = performance.now();
  const current = latency(stats, now, decayMs);
  if (current === undefined || sampleMs > current) {
    stats.latencyMs = sampleMs; // peak: a slower sample is believed at once
  } else {
    const keep = Math.exp(-(now - stats.sampledAt) / decayMs);
    stats.latencyMs = current * keep + sampleMs * (1 - keep);
  }
  stats.sampledAt = now;
}
