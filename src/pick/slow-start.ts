import { Code, ConnectError } from "@connectrpc/connect";
import type { Picker } from "../balancer/balancer.js";
import type { Peer } from "../peer.js";
import { passedOver } from "./untried.js";

export interface SlowStartOptions {
  /** How long a new peer takes to reach its full share, in ms. */
  readonly windowMs: number;
  /** How the share grows over the window: 1 linearly, above 1 faster at first (Envoy's `aggression`). Default 1. */
  readonly aggression?: number;
  /** The share a new peer starts with, in percent of its full share. Default 10. */
  readonly minWeightPercent?: number;
}

/** How often a pick of a ramping peer may be passed over before it is taken anyway: bounds the cost when every peer ramps. */
const maxRejections = 8;

/**
 * Ramps a peer in from a fraction of its share to all of it over
 * `windowMs`, as Envoy's slow start: weight × max(minWeightPercent / 100,
 * (t / windowMs)^(1 / aggression)). A peer ramps when it comes into
 * rotation after the first look: new in the registry, or back from an
 * ejection or from being out of reach (its caches are cold); the peers of
 * the first look do not, so a cold start does not slow-start the fleet.
 *
 * The weight is applied on top of any policy by passing over a ramping
 * peer's pick with the probability of its missing share (rejection
 * sampling), so round_robin and random become weighted while a peer ramps,
 * and nothing is added to a pick once every ramp has ended.
 */
export class SlowStart {
  private readonly windowMs: number;
  private readonly exponent: number;
  private readonly minFactor: number;
  /** When each ramping peer came into rotation. */
  private readonly rampingSince = new Map<string, number>();
  /** The peers in rotation at the last look; undefined before the first. */
  private inRotation: Set<string> | undefined;

  constructor(options: SlowStartOptions) {
    this.windowMs = options.windowMs;
    this.exponent = 1 / (options.aggression ?? 1);
    this.minFactor = (options.minWeightPercent ?? 10) / 100;
  }

  /** Notes which peers are in rotation now; those that were not at the last look start their ramp at `now`. */
  look(usable: readonly Peer[], now: number): void {
    const before = this.inRotation;
    const current = new Set<string>();
    for (const peer of usable) {
      current.add(peer.url);
      if (before !== undefined && !before.has(peer.url)) {
        this.rampingSince.set(peer.url, now);
      }
    }
    this.inRotation = current;
  }

  /**
   * As look(), told how the peers in rotation changed since the last look
   * instead of all of them: costs in proportion to the change. A peer that
   * departs and comes back under the same URL (its instance changed) does not ramp.
   */
  lookChange(departed: readonly Peer[], added: readonly Peer[], now: number): void {
    const current = this.inRotation;
    if (current === undefined) {
      return;
    }
    const staying = new Set(added.map((peer) => peer.url));
    for (const peer of added) {
      if (!current.has(peer.url)) {
        this.rampingSince.set(peer.url, now);
      }
    }
    for (const peer of departed) {
      if (!staying.has(peer.url)) {
        current.delete(peer.url);
      }
    }
    for (const url of staying) {
      current.add(url);
    }
  }

  /** The share of its weight a peer gets at `now`: 1 once its ramp is over, or without one. */
  factor(peer: Peer, now: number): number {
    const since = this.rampingSince.get(peer.url);
    if (since === undefined) {
      return 1;
    }
    const elapsed = now - since;
    if (elapsed >= this.windowMs) {
      this.rampingSince.delete(peer.url);
      return 1;
    }
    return Math.max(this.minFactor, Math.pow(Math.max(elapsed, 0) / this.windowMs, this.exponent));
  }

  /** `pick` over `peers`, weighted by the ramps of those ramping; `pick` itself when none is, or all are. */
  wrap(pick: Picker, peers: readonly Peer[], now: number): Picker {
    let rampsEnd = -Infinity;
    let ramping = 0;
    for (const peer of peers) {
      const since = this.rampingSince.get(peer.url);
      if (since !== undefined && since + this.windowMs > now) {
        rampsEnd = Math.max(rampsEnd, since + this.windowMs);
        ramping++;
      }
    }
    // with every peer ramping (a whole fleet swapped at once) there is no one to shift calls to
    if (ramping === 0 || ramping === peers.length) {
      return pick;
    }
    return (request) => {
      const now = performance.now();
      if (now >= rampsEnd) {
        return pick(request);
      }
      let chosen = pick(request);
      for (let i = 0; i < maxRejections && Math.random() >= this.factor(chosen.peer, now); i++) {
        chosen.done?.(passedOver, 0);
        chosen = pick(request);
      }
      return chosen;
    };
  }

  /** Forgets the peers that left the registry: a peer that comes back ramps again. */
  retain(live: ReadonlySet<string>): void {
    for (const url of this.rampingSince.keys()) {
      if (!live.has(url)) {
        this.rampingSince.delete(url);
      }
    }
  }

  /** As retain(), for the URLs of peers that left. */
  forget(urls: Iterable<string>): void {
    for (const url of urls) {
      this.rampingSince.delete(url);
    }
  }
}

/** Checks `slowStart` as given to createBalancedTransport. */
export function validSlowStart(options: SlowStartOptions): SlowStartOptions {
  const { windowMs, aggression = 1, minWeightPercent = 10 } = options;
  const valid = Number.isFinite(windowMs) && windowMs > 0 && Number.isFinite(aggression) && aggression > 0 && minWeightPercent >= 0 && minWeightPercent <= 100;
  if (!valid) {
    throw new ConnectError(
      `createBalancedTransport: slowStart needs windowMs > 0, aggression > 0 and minWeightPercent in 0–100, got ${JSON.stringify({ windowMs, aggression, minWeightPercent })}`,
      Code.InvalidArgument,
    );
  }
  return { windowMs, aggression, minWeightPercent };
}
