import type { Peer } from "../peer.js";

/**
 * Backoff between attempts to reach a peer whose connection could not be
 * established, as gRPC's connection backoff: 1 s, then × 1.6 each time, at
 * most 120 s, each ± 20 % so that a fleet of clients does not retry in step.
 */
const initialBackoffMs = 1_000;
const backoffMultiplier = 1.6;
const maxBackoffMs = 120_000;
const jitter = 0.2;

interface Unreached {
  /** performance.now() until which the peer gets no calls. */
  until: number;
  /** The backoff the next failure to connect starts from. */
  nextBackoffMs: number;
}

/**
 * Peers whose connection could not be established: refused, timed out, a
 * failed TLS handshake. Unlike outlier detection, which ejects at most a
 * share of the peers because a call that fails on a live server may be the
 * caller's fault, a connection that cannot even be made says the peer is
 * gone — as gRPC keeps a subchannel in TRANSIENT_FAILURE out of the picker
 * whatever their number. Such a peer leaves the picker at once, whatever the
 * count; when its backoff ends, the next call to it is the reconnect: an
 * answer of any kind brings it back for good, another refusal sends it out
 * for longer. A refused call is resent to another peer for free, so a probe
 * costs the caller one refused connection, not a failed call.
 */
export class Reachability {
  private readonly byUrl = new Map<string, Unreached>();
  /** The earliest end of a backoff. */
  private nextExpiry = Infinity;
  /** Peers out of reach now. */
  private out = 0;
  /** Moves whenever a peer leaves or comes back, so pickers over reachable peers know to rebuild. */
  version = 0;
  /** The URLs of the peers in the registry, as last given to retain() (and kept up to date by its owner); undefined before. */
  private live: ReadonlySet<string> | undefined;
  /** Peers recorded while not in `live`: forget() does not name them. */
  private readonly strays = new Set<string>();

  constructor(private readonly random: () => number = Math.random) {}

  /** The peer's connection could not be established; returns how long it gets no calls, or undefined when it was out already. */
  unreached(peer: Peer, now: number): number | undefined {
    if (this.live?.has(peer.url) === false) {
      this.strays.add(peer.url); // a call that went out before its peer left: forgotten at the next change, unless it came back
    }
    let record = this.byUrl.get(peer.url);
    if (record === undefined) {
      record = { until: 0, nextBackoffMs: initialBackoffMs };
      this.byUrl.set(peer.url, record);
    }
    if (record.until > now) {
      return undefined; // calls sent before it went out fail the same way: one backoff for all of them
    }
    const forMs = Math.round(record.nextBackoffMs * (1 + jitter * (2 * this.random() - 1)));
    record.nextBackoffMs = Math.min(maxBackoffMs, record.nextBackoffMs * backoffMultiplier);
    record.until = now + forMs;
    this.out++;
    this.nextExpiry = Math.min(this.nextExpiry, record.until);
    this.version++;
    return forMs;
  }

  /** The peer answered (whatever it said): its connection works, and its backoff starts over. */
  reached(peer: Peer): void {
    if (this.byUrl.size === 0) {
      return; // the common case costs one comparison
    }
    const record = this.byUrl.get(peer.url);
    if (record !== undefined) {
      this.forgetRecord(peer.url, record);
    }
  }

  /** Whether any peer is out of reach now. */
  get anyOut(): boolean {
    return this.out > 0;
  }

  isOut(peer: Peer): boolean {
    return this.out > 0 && (this.byUrl.get(peer.url)?.until ?? 0) > 0;
  }

  /** Ends the backoffs whose time is up: those peers get calls again, the next of which reconnects. */
  expire(now: number): void {
    if (now < this.nextExpiry) {
      return;
    }
    this.nextExpiry = Infinity;
    for (const record of this.byUrl.values()) {
      if (record.until > 0 && record.until <= now) {
        record.until = 0; // the backoff grown so far stays until the peer answers
        this.out--;
        this.version++;
      } else if (record.until > 0) {
        this.nextExpiry = Math.min(this.nextExpiry, record.until);
      }
    }
  }

  /** Forgets peers that left the registry; `live` may be kept up to date in place by its owner, with forget() for those that leave. */
  retain(live: ReadonlySet<string>): void {
    this.live = live;
    this.strays.clear();
    for (const [url, record] of this.byUrl) {
      if (!live.has(url)) {
        this.forgetRecord(url, record);
      }
    }
  }

  /** As retain(), for the URLs of peers that left: costs in proportion to them. */
  forget(urls: Iterable<string>): void {
    for (const url of [...urls, ...this.strays]) {
      const record = this.byUrl.get(url);
      if (record !== undefined && this.live?.has(url) !== true) {
        this.forgetRecord(url, record);
      }
    }
    this.strays.clear();
  }

  private forgetRecord(url: string, record: Unreached): void {
    this.byUrl.delete(url);
    if (record.until > 0) {
      this.out--;
      this.version++;
    }
  }
}
