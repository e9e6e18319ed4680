import { Code, ConnectError } from "@connectrpc/connect";
import type { Balancer, CallResult, Pick, Picker, PickRequest } from "../balancer/balancer.js";
import type { Peer } from "../peer.js";
import type { OutlierDetection } from "./outlier-detection.js";
import type { Reachability } from "./reachability.js";

/** Peers to pick from and the picker over them. */
export interface PickablePeers {
  readonly peers: readonly Peer[];
  readonly pick: Picker;
  /** Every peer is out of reach: the picker is over all of them all the same, and a fresh registry read is worth waiting for. */
  readonly noneReachable?: boolean;
}

/**
 * Chooses healthy peers before the pick, not after: the policy's picker is
 * built over the peers that can be reached and are not ejected, and rebuilt
 * only when one leaves or comes back — so weights and ring-hash affinity hold
 * for the others while one is out. Peers out of reach are left out whatever
 * their number (with none left, every peer is tried again); outlier
 * detection's ejections only down to the panic threshold, below which the
 * reachable peers are all used again.
 */
export class HealthyPicker {
  private built: (PickablePeers & { readonly all: PickablePeers; readonly reachVersion: number; readonly ejectVersion: number }) | undefined;

  constructor(
    private readonly balancer: Balancer,
    private readonly detection: OutlierDetection | undefined,
    private readonly reachability: Reachability,
  ) {}

  over(all: PickablePeers, now: number): PickablePeers {
    const { detection, reachability } = this;
    detection?.expire(now);
    reachability.expire(now);
    const reachVersion = reachability.version;
    const ejectVersion = detection?.version ?? 0;
    const built = this.built;
    if (built !== undefined && built.all === all && built.reachVersion === reachVersion && built.ejectVersion === ejectVersion) {
      return built;
    }
    this.built = { ...this.choose(all, detection, reachability), all, reachVersion, ejectVersion };
    return this.built;
  }

  private choose(all: PickablePeers, detection: OutlierDetection | undefined, reachability: Reachability): PickablePeers {
    const reachable = all.peers.filter((peer) => !reachability.isOut(peer));
    if (reachable.length === 0) {
      return { ...all, noneReachable: true };
    }
    const healthy = detection === undefined ? reachable : reachable.filter((peer) => !detection.isEjected(peer));
    const panic = detection !== undefined && healthy.length * 100 < reachable.length * detection.panicThresholdPercent;
    const chosen = panic ? reachable : healthy;
    return chosen.length === all.peers.length ? all : { peers: chosen, pick: this.balancer.build(chosen) };
  }
}

/** Ends a pick that was passed over before any call went out. */
const skipped: CallResult = Object.freeze({ error: new ConnectError("peer passed over: this call already tried it", Code.Canceled) });

/**
 * Picks a peer for one attempt, passing over the peers this call already
 * tried while others remain: the policy is asked again (a deterministic one,
 * ring_hash, moves to its next candidate); if its choices keep missing, an
 * untried healthy peer — else any untried peer — is taken at random.
 */
export function pickUntried(pickable: PickablePeers, all: readonly Peer[], request: Omit<PickRequest, "attempt">, tried: ReadonlySet<string>): Pick {
  let pick = pickable.pick({ ...request, attempt: 0 });
  if (tried.size === 0 || !tried.has(pick.peer.url)) {
    return pick;
  }
  for (let attempt = 1; attempt < pickable.peers.length && tried.has(pick.peer.url); attempt++) {
    pick.done?.(skipped, 0);
    pick = pickable.pick({ ...request, attempt });
  }
  const untried = tried.has(pick.peer.url) ? (untriedOf(pickable.peers, tried) ?? untriedOf(all, tried)) : undefined;
  if (untried === undefined) {
    return pick;
  }
  pick.done?.(skipped, 0);
  return { peer: untried[Math.floor(Math.random() * untried.length)]! };
}

function untriedOf(peers: readonly Peer[], tried: ReadonlySet<string>): Peer[] | undefined {
  const untried = peers.filter((peer) => !tried.has(peer.url));
  return untried.length > 0 ? untried : undefined;
}
