import type { Transport } from "@connectrpc/connect";
import type { Peer } from "../peer.js";

/** Builds the transport for one peer; called once per peer, and the result is reused. */
export type PeerTransportFactory = (peer: Peer) => Transport;

export interface PeerTransport {
  readonly transport: Transport;
  readonly address: string;
  /** Calls in flight; a peer that left the snapshot is closed when this drops to zero. */
  inflight: number;
  retired: boolean;
}

/**
 * The per-peer transports of one balanced transport, keyed by peer URL.
 * Connect's Transport has no close(); when the factory's result has `close()`
 * or `[Symbol.asyncDispose]()`, it is called once the peer is gone.
 */
export class PeerTransports {
  private readonly entries = new Map<string, PeerTransport>();
  /** Transports of peers that left while calls were still using them. */
  private readonly retiring = new Set<PeerTransport>();

  constructor(
    private readonly factory: PeerTransportFactory,
    private readonly onCloseFailed: (address: string, error: unknown) => void,
  ) {}

  /** The peer's transport with one more call in flight; pair with release(). */
  acquire(peer: Peer): PeerTransport {
    let entry = this.entries.get(peer.url);
    if (entry === undefined) {
      entry = { transport: this.factory(peer), address: peer.address, inflight: 0, retired: false };
      this.entries.set(peer.url, entry);
    }
    entry.inflight++;
    return entry;
  }

  release(entry: PeerTransport): void {
    entry.inflight--;
    if (entry.retired && entry.inflight === 0 && this.retiring.delete(entry)) {
      void this.close(entry);
    }
  }

  /** Drops the transports of peers no longer in the set; busy ones close when their last call ends. */
  retain(peers: readonly Peer[]): void {
    const live = new Set(peers.map((p) => p.url));
    for (const [url, entry] of this.entries) {
      if (!live.has(url)) {
        this.entries.delete(url);
        entry.retired = true;
        if (entry.inflight === 0) {
          void this.close(entry);
        } else {
          this.retiring.add(entry);
        }
      }
    }
  }

  /** Closes every transport now, busy or not. */
  async closeAll(): Promise<void> {
    const all = [...this.entries.values(), ...this.retiring];
    this.entries.clear();
    this.retiring.clear();
    await Promise.all(all.map((entry) => this.close(entry)));
  }

  private async close(entry: PeerTransport): Promise<void> {
    const closable = entry.transport as unknown as { close?: () => unknown } & Partial<Record<symbol, () => unknown>>;
    try {
      if (typeof closable.close === "function") {
        await closable.close();
      } else if (asyncDispose !== undefined && typeof closable[asyncDispose] === "function") {
        await closable[asyncDispose]();
      }
    } catch (error) {
      this.onCloseFailed(entry.address, error);
    }
  }
}

/** Symbol.asyncDispose where the runtime has it (Node ≥ 20.4, Workers, Deno, Bun). */
const asyncDispose = (Symbol as { asyncDispose?: symbol }).asyncDispose;
