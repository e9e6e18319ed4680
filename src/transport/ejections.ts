import type { Peer } from "../peer.js";

/**
 * Peers that could not be reached are skipped for a while, so a crashed
 * instance whose lease has not expired yet (kratos: up to 15 s) costs one failed
 * connection attempt per ejection period instead of one per pick.
 */
export class Ejections {
  private readonly until = new Map<string, number>();

  constructor(readonly periodMs: number) {}

  /** How many peers are (or were, until their next success or departure) ejected. */
  get size(): number {
    return this.until.size;
  }

  eject(peer: Peer, now: number): void {
    this.until.set(peer.url, now + this.periodMs);
  }

  /** A call to the peer succeeded: it is back. */
  clear(peer: Peer): void {
    if (this.until.size > 0) {
      this.until.delete(peer.url);
    }
  }

  isEjected(peer: Peer, now: number): boolean {
    const until = this.until.get(peer.url);
    return until !== undefined && until > now;
  }

  /** Forgets peers that left the registry. */
  retain(peers: readonly Peer[]): void {
    const live = new Set(peers.map((p) => p.url));
    for (const url of this.until.keys()) {
      if (!live.has(url)) {
        this.until.delete(url);
      }
    }
  }
}
