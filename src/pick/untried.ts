import { Code, ConnectError } from "@connectrpc/connect";
import type { CallResult, Pick, Picker, PickRequest } from "../balancer/balancer.js";
import type { Peer } from "../peer.js";

/** Ends a pick that was passed over before any call went out: a cancel, which says nothing about the peer. */
export const passedOver: CallResult = Object.freeze({ error: new ConnectError("peer passed over: this call already tried it", Code.Canceled) });

/**
 * Picks a peer for one attempt, passing over the peers this call already
 * tried while others remain: the policy is asked again (a deterministic one,
 * ring_hash, moves to its next candidate); if its choices keep missing, an
 * untried peer of those the picker chooses from — else of the members, out
 * of order as they may be — is taken at random. Never a peer outside the
 * members: a retry must not open connections beyond the subset and zone.
 */
export function pickUntried(pickable: { readonly peers: readonly Peer[]; readonly members: readonly Peer[]; readonly pick: Picker }, request: Omit<PickRequest, "attempt">, tried: ReadonlySet<string>): Pick {
  let pick = pickable.pick({ ...request, attempt: 0 });
  if (tried.size === 0 || !tried.has(pick.peer.url)) {
    return pick;
  }
  for (let attempt = 1; attempt < pickable.peers.length && tried.has(pick.peer.url); attempt++) {
    pick.done?.(passedOver, 0);
    pick = pickable.pick({ ...request, attempt });
  }
  const untried = tried.has(pick.peer.url) ? (untriedOf(pickable.peers, tried) ?? untriedOf(pickable.members, tried)) : undefined;
  if (untried === undefined) {
    return pick;
  }
  pick.done?.(passedOver, 0);
  return { peer: untried[Math.floor(Math.random() * untried.length)]! };
}

function untriedOf(peers: readonly Peer[], tried: ReadonlySet<string>): Peer[] | undefined {
  const untried = peers.filter((peer) => !tried.has(peer.url));
  return untried.length > 0 ? untried : undefined;
}
