import type { Peer } from "../peer.js";

/** What a subset hands up: the peers to balance over, and the members that the stats show. */
export interface Subset {
  /** The first `size` usable peers of the ranking. */
  readonly chosen: readonly Peer[];
  /** The ranking down to the last chosen peer (all of it when too few are usable): the chosen ones and the members out of order (ejected, unreachable) that they stand in for. */
  readonly members: readonly Peer[];
}

/**
 * Takes the first `size` usable peers of a ranking (RendezvousRanking): a
 * member out of order is replaced by the next-ranked usable peer while it is
 * out, so the policy balances over `size` healthy peers whenever there are
 * that many, and takes its place back when it returns.
 */
export function takeSubset(ranked: readonly Peer[], usable: readonly Peer[], size: number): Subset {
  if (usable.length <= size) {
    return { chosen: usable, members: ranked };
  }
  const chosen = usable.slice(0, size);
  const end = ranked.indexOf(chosen.at(-1)!) + 1;
  return { chosen, members: ranked.slice(0, end) };
}
