import type { Balancer, Picker } from "../balancer/balancer.js";
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
