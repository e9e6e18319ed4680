import type { Balancer } from "./balancer.js";
import { StatsByPeer, isPeerFailure, recentFailures, recordFailure, twoChoices, type PeerLoad } from "./peer-stats.js";

/**
 * Envoy's least request: of two peers chosen at random, the one with fewer
 * calls in flight. Cheap, needs no latency history, and steers away from a
 * peer that is slow or stuck because its calls pile up. A peer that fails
 * fast would look idle and attract traffic (Linkerd's observation): each
 * recent server-side failure counts as one more call in flight, fading
 * within seconds.
 */
export function leastRequest(): Balancer {
  const stats = new StatsByPeer();
  return {
    name: "least_request",
    build(peers) {
      const peerStats = stats.forPeers(peers);
      return () => {
        const [a, b] = twoChoices(peers.length);
        const now = performance.now();
        const i = load(peerStats[b]!, now) < load(peerStats[a]!, now) ? b : a;
        const chosen = peerStats[i]!;
        chosen.inflight++;
        return {
          peer: peers[i]!,
          done: (result) => {
            chosen.inflight--;
            if (isPeerFailure(result.error)) {
              recordFailure(chosen, performance.now());
            }
          },
        };
      };
    },
  };
}

function load(stats: PeerLoad, now: number): number {
  return stats.inflight + recentFailures(stats, now);
}
