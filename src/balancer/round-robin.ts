import type { Balancer } from "./balancer.js";

/**
 * Takes the peers in turn. Each balancer starts at a random offset, so a fleet
 * of fresh serverless instances does not send its first calls all to the
 * same peer.
 */
export function roundRobin(): Balancer {
  let next = Math.floor(Math.random() * 0x7fffffff);
  return {
    name: "round_robin",
    build(peers) {
      const picks = peers.map((peer) => ({ peer }));
      return () => picks[next++ % picks.length]!;
    },
  };
}
