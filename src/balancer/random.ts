import type { Balancer } from "./balancer.js";

/** Picks a peer uniformly at random for every call. */
export function random(): Balancer {
  return {
    name: "random",
    build(peers) {
      const picks = peers.map((peer) => ({ peer }));
      return () => picks[Math.floor(Math.random() * picks.length)]!;
    },
  };
}
