import { Code, type ConnectError } from "@connectrpc/connect";
import { isPeerFailure } from "../balancer/peer-stats.js";
import type { Peer } from "../peer.js";

/**
 * Outlier detection in the spirit of gRFC A50 and Envoy. The defaults and why:
 * - a peer that cannot be reached, or whose connection was lost, is ejected at
 *   once: every call sent to it would fail the same way;
 * - 5 consecutive server-side failures eject a peer (Envoy's consecutive_5xx):
 *   a single failure is noise, five in a row is a broken instance;
 * - an ejection lasts 30 s, n × 30 s for the n-th in a row, at most 300 s
 *   (A50), so a flapping instance is kept out longer each time;
 * - at most 10 % of the peers are ejected at once, but always one (A50,
 *   Envoy): a client-side fault must not eject the whole fleet;
 * - below 50 % healthy peers, calls go to all of them (Envoy's panic
 *   threshold): spreading over sick peers beats piling onto the few left.
 */
export interface OutlierDetectionOptions {
  /** Consecutive server-side failures that eject a peer (default 5). */
  readonly consecutiveFailures?: number;
  /** How long a first ejection lasts, in ms (default 30,000); the n-th in a row lasts n times as long. */
  readonly baseEjectionMs?: number;
  /** The longest an ejection lasts, in ms (default 300,000). */
  readonly maxEjectionMs?: number;
  /** The most peers ejected at once, in percent of the peers (default 10; always at least one peer). */
  readonly maxEjectionPercent?: number;
  /** Below this percentage of healthy peers, calls go to all peers (default 50). */
  readonly panicThresholdPercent?: number;
}

/**
 * What a call's end says about its peer's health. "unreached": its connection
 * could not be established, which the transport's reachability handles (the
 * peer leaves the picker until it reconnects), not outlier detection.
 */
export type PeerOutcome = "alive" | "failed" | "unreachable" | "unreached" | "unknown";

/**
 * What the end of a call says about the peer: a success or an application
 * error (NotFound, InvalidArgument…) shows a working server; a caller's
 * cancellation and a refused stream say nothing. A passed deadline says
 * nothing either, unless `otherPeersAnswered`: another peer answered the same
 * method in less time while this call waited, so this peer is a black hole.
 */
export function outcomeOf(
  error: ConnectError | undefined,
  kind: { unreachable: boolean; refused: boolean; notConnected: boolean },
  canceledByCaller: boolean,
  otherPeersAnswered = false,
): PeerOutcome {
  if (error === undefined) {
    return "alive";
  }
  if (canceledByCaller || kind.refused) {
    return "unknown";
  }
  if (error.code === Code.DeadlineExceeded) {
    return otherPeersAnswered ? "failed" : "unknown";
  }
  if (kind.notConnected) {
    return "unreached";
  }
  if (kind.unreachable) {
    return "unreachable";
  }
  return isPeerFailure(error) ? "failed" : "alive"; // A50's and Envoy's 5xx: Unavailable, Internal, Unknown, DataLoss
}

interface PeerHealth {
  consecutiveFailures: number;
  /** performance.now() until which the peer is ejected; 0 when it is not. */
  ejectedUntil: number;
  /** Ejections in a row: grows with each, shrinks by one per base period spent healthy. */
  multiplier: number;
  /** When the multiplier was last brought up to date. */
  multiplierAt: number;
}

export class OutlierDetection {
  private readonly byUrl = new Map<string, PeerHealth>();
  /** The peers of the current registry snapshot, once known. */
  private live: ReadonlySet<string> | undefined;
  private ejected = 0;
  /** The earliest end of an ongoing ejection. */
  private nextExpiry = Infinity;
  /** Moves whenever a peer is ejected or comes back, so pickers over healthy peers know to rebuild. */
  version = 0;
  private readonly consecutiveFailures: number;
  private readonly baseEjectionMs: number;
  private readonly maxEjectionMs: number;
  private readonly maxEjectionPercent: number;
  readonly panicThresholdPercent: number;

  constructor(options: OutlierDetectionOptions = {}) {
    this.consecutiveFailures = options.consecutiveFailures ?? 5;
    this.baseEjectionMs = options.baseEjectionMs ?? 30_000;
    this.maxEjectionMs = options.maxEjectionMs ?? 300_000;
    this.maxEjectionPercent = options.maxEjectionPercent ?? 10;
    this.panicThresholdPercent = options.panicThresholdPercent ?? 50;
  }

  /**
   * Records how a call to the peer ended; returns how long the peer is now
   * ejected for, or undefined when this call ejected nobody. `peerCount` is
   * the number of peers the ejection limit is a share of.
   */
  record(peer: Peer, outcome: PeerOutcome, now: number, peerCount: number): number | undefined {
    // a peer that left the registry (its last calls end after it) must not take an ejection slot
    if (outcome === "unknown" || outcome === "unreached" || (this.live !== undefined && !this.live.has(peer.url))) {
      return undefined;
    }
    this.expire(now); // an ejection that ran out must end before the peer can be ejected again
    const health = this.healthOf(peer.url, now);
    if (outcome === "alive") {
      health.consecutiveFailures = 0;
      return undefined;
    }
    health.consecutiveFailures++;
    const eject = outcome === "unreachable" || health.consecutiveFailures >= this.consecutiveFailures;
    if (!eject || health.ejectedUntil > now || this.ejected >= Math.max(1, Math.floor((peerCount * this.maxEjectionPercent) / 100))) {
      return undefined;
    }
    this.decay(health, now);
    health.multiplier++;
    const forMs = Math.min(this.maxEjectionMs, this.baseEjectionMs * health.multiplier);
    health.ejectedUntil = now + forMs;
    health.consecutiveFailures = 0;
    this.ejected++;
    this.nextExpiry = Math.min(this.nextExpiry, health.ejectedUntil);
    this.version++;
    return forMs;
  }

  /** Whether any peer is ejected now. */
  get anyEjected(): boolean {
    return this.ejected > 0;
  }

  isEjected(peer: Peer): boolean {
    return this.ejected > 0 && (this.byUrl.get(peer.url)?.ejectedUntil ?? 0) > 0;
  }

  /** Ends the ejections whose time is up; cheap when none is due. */
  expire(now: number): void {
    if (now < this.nextExpiry) {
      return;
    }
    this.nextExpiry = Infinity;
    for (const health of this.byUrl.values()) {
      if (health.ejectedUntil > 0 && health.ejectedUntil <= now) {
        health.multiplierAt = health.ejectedUntil; // healthy since then, however late this runs
        health.ejectedUntil = 0;
        this.ejected--;
        this.version++;
      } else if (health.ejectedUntil > 0) {
        this.nextExpiry = Math.min(this.nextExpiry, health.ejectedUntil);
      }
    }
  }

  /** Forgets peers that left the registry; `live` may be kept up to date in place by its owner, with forget() for those that leave. */
  retain(live: ReadonlySet<string>): void {
    this.live = live;
    for (const [url, health] of this.byUrl) {
      if (!live.has(url)) {
        this.forgetRecord(url, health);
      }
    }
  }

  /** As retain(), for the URLs of peers that left: costs in proportion to them. */
  forget(urls: Iterable<string>): void {
    for (const url of urls) {
      const health = this.byUrl.get(url);
      if (health !== undefined) {
        this.forgetRecord(url, health);
      }
    }
  }

  private forgetRecord(url: string, health: PeerHealth): void {
    this.byUrl.delete(url);
    if (health.ejectedUntil > 0) {
      this.ejected--;
      this.version++;
    }
  }

  private healthOf(url: string, now: number): PeerHealth {
    let health = this.byUrl.get(url);
    if (health === undefined) {
      health = { consecutiveFailures: 0, ejectedUntil: 0, multiplier: 0, multiplierAt: now };
      this.byUrl.set(url, health);
    }
    return health;
  }

  /** A50: the multiplier drops by one for each base period the peer spent not ejected. */
  private decay(health: PeerHealth, now: number): void {
    const periods = Math.floor((now - health.multiplierAt) / this.baseEjectionMs);
    health.multiplier = Math.max(0, health.multiplier - periods);
    health.multiplierAt = now;
  }
}
