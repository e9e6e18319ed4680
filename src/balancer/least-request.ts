import type { Balancer } from "./balancer.js";
import { StatsByPeer, twoChoices } from "./peer-stats.js";

/**
 * Envoy's least request: of two peers chosen at random, the one with fewer
 * calls in flight. Cheap, needs no latency history, and steers away from a
 * peer that is slow or stuck because its calls pile up.
 */
export function leastRequest(): Balancer {
  const stats = new StatsByPeer();
  return {
    name: "least_request",
    build(peers) {
      const peerStats = stats.forPeers(peers);
      return () => {
        const [a, b] = twoChoices(peers.length);
        const i = peerStats[b]!.inflight < peerStats[a]!.inflight ? b : a;
        const chosen = peerStats[i]!;
        chosen.inflight++;
        return {
          peer: peers[i]!,
          done: () => {
            chosen.inflight--;
          },
        };
      };
    },
  };
}
