import { Code, ConnectError } from "@connectrpc/connect";
import type { Balancer, CallResult, Pick, Picker, PickRequest } from "../balancer/balancer.js";
import type { Peer } from "../peer.js";
import type { OutlierDetection } from "./outlier-detection.js";

/** Peers to pick from and the picker over them. */
export interface PickablePeers {
  readonly peers: readonly Peer[];
  readonly pick: Picker;
}

/**
 * Chooses healthy peers before the pick, not after: the policy's picker is
 * built over the peers that are not ejected, and rebuilt only when an
 * ejection starts or ends — so weights and ring-hash affinity hold for the
 * healthy peers while one is out. Below the panic threshold every peer is
 * used again.
 */
export class HealthyPicker {
  private built: (PickablePeers & { readonly all: PickablePeers; readonly version: number }) | undefined;

  constructor(
    private readonly balancer: Balancer,
    private readonly detection: OutlierDetection | undefined,
  ) {}

  over(all: PickablePeers, now: number): PickablePeers {
    const detection = this.detection;
    if (detection === undefined) {
      return all;
    }
    detection.expire(now);
    const built = this.built;
    if (built !== undefined && built.all === all && built.version === detection.version) {
      return built;
    }
    const healthy = all.peers.filter((peer) => !detection.isEjected(peer));
    const panic = healthy.length * 100 < all.peers.length * detection.panicThresholdPercent;
    const chosen = panic || healthy.length === all.peers.length ? all : { peers: healthy, pick: this.balancer.build(healthy) };
    this.built = { ...chosen, all, version: detection.version };
    return this.built;
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
