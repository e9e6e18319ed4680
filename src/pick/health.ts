import type { Peer } from "../peer.js";
import type { OutlierDetection } from "../transport/outlier-detection.js";
import type { Reachability } from "../transport/reachability.js";

/** The health of one group of peers (a zone's, or all of them), as the stages above it need it. */
export interface Health {
  /**
   * The peers calls may go to, in the order given: the reachable ones that
   * are not ejected; below the panic threshold every reachable one; with none
   * reachable, all of them (a fresh registry read is then worth waiting for).
   */
  readonly usable: readonly Peer[];
  /** How many peers are reachable and not ejected: what zone priority weighs a zone by. */
  readonly healthy: number;
  readonly noneReachable: boolean;
}

/**
 * Peers out of reach are left out whatever their number (a connection that
 * cannot even be made says the peer is gone); outlier detection's ejections
 * only down to the panic threshold, below which spreading over sick peers
 * beats piling onto the few left (Envoy) — when `panicAllowed`: not while
 * other zones can take the calls.
 */
export function healthOf(peers: readonly Peer[], detection: OutlierDetection | undefined, reachability: Reachability, panicAllowed: boolean): Health {
  if (peers.length > 0 && !reachability.anyOut && detection?.anyEjected !== true) {
    return { usable: peers, healthy: peers.length, noneReachable: false }; // the common case: no pass over the peers
  }
  const reachable = peers.filter((peer) => !reachability.isOut(peer));
  if (reachable.length === 0) {
    return { usable: peers, healthy: 0, noneReachable: peers.length > 0 };
  }
  const healthy = detection === undefined ? reachable : reachable.filter((peer) => !detection.isEjected(peer));
  const panic = panicAllowed && detection !== undefined && healthy.length * 100 < reachable.length * detection.panicThresholdPercent;
  // every reachable peer ejected with panic turned off (threshold 0): calls go on to them rather than nowhere
  return { usable: panic || healthy.length === 0 ? reachable : healthy, healthy: healthy.length, noneReachable: false };
}
