import { Code, type ConnectError } from "@connectrpc/connect";
import type { Peer } from "../peer.js";
import type { LatencyAverage } from "./latency-average.js";

/**
 * What a learning policy knows about one peer. Kept by peer URL across
 * registry changes, so an unrelated registry update resets nothing.
 */
export interface PeerLoad {
  /** Calls picked for the peer that have not ended. */
  inflight: number;
  /** Unary calls among them, and the sum of the performance.now() at which they started: their mean age is a lower bound of the latency. */
  aged: number;
  startedSum: number;
  /** The latency estimate in ms (p2c: the median of `recent`); undefined until the first sample. */
  latencyMs: number | undefined;
  /** p2c's recent samples, a ring; made at the first. */
  recent: { readonly samples: Float64Array; next: number; count: number } | undefined;
  /** performance.now() of the last sample. */
  sampledAt: number;
  /** Recent server-side failures, fading with a 1 s time constant from `failedAt`. */
  failures: number;
  failedAt: number;
  /** The running latency average this peer's latency is counted in (p2c: that of the picker built or used last over it). */
  average: LatencyAverage | undefined;
}

export class StatsByPeer {
  private readonly byUrl = new Map<string, PeerLoad>();

  /**
   * The stats of each peer, in order. A picker may be built over a subset
   * (the healthy peers while one is ejected): the others' stats are kept for
   * when they come back, and only forgotten, once idle, when far more peers
   * are known than built over, so that registry churn cannot grow the map.
   */
  forPeers(peers: readonly Peer[]): PeerLoad[] {
    if (this.byUrl.size > 2 * peers.length + 16) {
      const live = new Set(peers.map((p) => p.url));
      for (const [url, stats] of this.byUrl) {
        if (!live.has(url) && stats.inflight === 0) {
          this.byUrl.delete(url);
        }
      }
    }
    return peers.map((peer) => {
      let stats = this.byUrl.get(peer.url);
      if (stats === undefined) {
        stats = { inflight: 0, aged: 0, startedSum: 0, latencyMs: undefined, recent: undefined, sampledAt: 0, failures: 0, failedAt: 0, average: undefined };
        this.byUrl.set(peer.url, stats);
      }
      return stats;
    });
  }
}

/** Two distinct indexes below n, uniformly (the same one twice only when n is 1). */
export function twoChoices(n: number): [number, number] {
  const a = Math.floor(Math.random() * n);
  if (n < 2) {
    return [a, a];
  }
  const b = Math.floor(Math.random() * (n - 1));
  return [a, b >= a ? b + 1 : b];
}

/** Failures that say the peer, not the request, is at fault (an application error such as NotFound shows a working server). */
const peerFailures = new Set([Code.Unavailable, Code.Internal, Code.Unknown, Code.DataLoss]);

export function isPeerFailure(error: ConnectError | undefined): boolean {
  return error !== undefined && peerFailures.has(error.code);
}

/** How fast failures are forgiven by default: a second, so a peer back on its feet gets calls at once. */
export const failureFadeMs = 1_000;

/** The recent failures of a peer as of now, each fading with time constant `fadeMs`: one counts as one more call in flight. */
export function recentFailures(stats: PeerLoad, now: number, fadeMs = failureFadeMs): number {
  if (stats.failures === 0) {
    return 0;
  }
  const left = stats.failures * Math.exp(-(now - stats.failedAt) / fadeMs);
  if (left < 0.01) {
    stats.failures = 0; // forgiven: a trace must not lose the peer every near tie
    return 0;
  }
  return left;
}

export function recordFailure(stats: PeerLoad, now: number, fadeMs = failureFadeMs): void {
  stats.failures = recentFailures(stats, now, fadeMs) + 1;
  stats.failedAt = now;
}
