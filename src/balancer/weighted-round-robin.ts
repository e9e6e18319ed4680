import type { Balancer } from "./balancer.js";

/**
 * Smooth weighted round robin (nginx): each peer gets calls in proportion to
 * its `weight` (registry metadata "weight", default 100), interleaved rather
 * than in bursts.
 */
export function weightedRoundRobin(): Balancer {
  return {
    name: "weighted_round_robin",
    build(peers) {
      const total = peers.reduce((sum, peer) => sum + peer.weight, 0);
      // Each process starts at a random point of the cycle, like round_robin.
      const current = peers.map(() => Math.floor(Math.random() * total) - total / 2);
      const picks = peers.map((peer) => ({ peer }));
      return () => {
        let best = 0;
        for (let i = 0; i < peers.length; i++) {
          current[i]! += peers[i]!.weight;
          if (current[i]! > current[best]!) {
            best = i;
          }
        }
        current[best]! -= total;
        return picks[best]!;
      };
    },
  };
}
