import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import type { Peer } from "../peer.js";
import { markDelivery } from "./delivery.js";
import type { EndStream, OpenStreams } from "./stream-pick.js";
import type { AttemptCounters } from "./transport-stats.js";

/** Builds the transport for one peer; called once per peer, and the result is reused. */
export type PeerTransportFactory = (peer: Peer) => Transport;

/** A peer's transport and what was counted of its attempts. */
export interface PeerTransport extends AttemptCounters {
  readonly transport: Transport;
  readonly address: string;
  /** Calls in flight, stream responses included. */
  inflight: number;
  /** The streams among them, each ended by its EndStream, from before their response on: a stream may stay open as long as its caller likes. */
  readonly streams: Set<EndStream>;
  retired: boolean;
  /** Ends the streams still open when the drain of a retired peer runs out. */
  drain?: ReturnType<typeof setTimeout>;
  /** performance.now() of the last attempt the peer answered successfully; -Infinity before. */
  answeredAt: number;
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
  /** The URLs of the peers in the registry, as last given to retain() (and kept up to date by its owner); undefined before. */
  private live: ReadonlySet<string> | undefined;

  constructor(
    private readonly factory: PeerTransportFactory,
    private readonly onCloseFailed: (address: string, error: unknown) => void,
    /** How long the open streams of a peer that left may run on before they are ended. */
    private readonly drainMs: number,
  ) {}

  /** The peer's transport with one more call in flight; pair with release(). */
  acquire(peer: Peer): PeerTransport {
    let entry = this.entries.get(peer.url);
    if (entry === undefined) {
      entry = { transport: this.factory(peer), address: peer.address, inflight: 0, streams: new Set(), retired: false, answeredAt: -Infinity, calls: 0, failures: 0, latencyMs: null };
      if (this.live?.has(peer.url) === false) {
        // picked before its peer left: the call goes on, and the transport closes after it
        entry.retired = true;
        this.retiring.add(entry);
      } else {
        this.entries.set(peer.url, entry);
      }
    }
    entry.inflight++;
    entry.calls++;
    return entry;
  }

  /** The peer's transport if a call took it since the peer (last) joined; never creates one. */
  find(peer: Peer): PeerTransport | undefined {
    return this.entries.get(peer.url);
  }

  release(entry: PeerTransport): void {
    entry.inflight--;
    if (entry.retired) {
      this.closeWhenUnaryDone(entry);
    }
  }

  /**
   * Drops the transports of peers no longer in the set: each closes once its
   * calls in flight end. Its open streams get `drainMs` to end by themselves
   * (a server shutting down gracefully ends them) before they are ended as
   * Unavailable, so that their callers resubscribe to a live peer: a stream
   * could otherwise stay open for ever, and its pick with it.
   */
  retain(live: ReadonlySet<string>): void {
    this.live = live;
    for (const [url, entry] of this.entries) {
      if (!live.has(url)) {
        this.retire(url, entry);
      }
    }
  }

  /** As retain(), for the URLs of peers that left: costs in proportion to them. */
  forget(urls: Iterable<string>): void {
    for (const url of urls) {
      const entry = this.entries.get(url);
      if (entry !== undefined) {
        this.retire(url, entry);
      }
    }
  }

  private retire(url: string, entry: PeerTransport): void {
    this.entries.delete(url);
    entry.retired = true;
    this.retiring.add(entry);
    this.closeWhenUnaryDone(entry);
  }

  /** Closes every transport now, busy or not, ending its open streams. */
  async closeAll(reason: ConnectError): Promise<void> {
    const all = [...this.entries.values(), ...this.retiring];
    this.entries.clear();
    this.retiring.clear();
    for (const entry of all) {
      clearTimeout(entry.drain);
      endStreams(entry, reason);
    }
    await Promise.all(all.map((entry) => this.close(entry)));
  }

  /** The open streams of a peer's transport: a stream that opens after its peer left is ended with the others. */
  streamsOf(entry: PeerTransport): OpenStreams {
    return {
      add: (end) => {
        entry.streams.add(end);
        if (entry.retired) {
          this.closeWhenUnaryDone(entry);
        }
      },
      delete: (end) => {
        entry.streams.delete(end);
        if (entry.retired) {
          this.closeWhenUnaryDone(entry);
        }
      },
    };
  }

  /** Closes a retired peer's transport once only streams are left (and they ended, or their drain ran out). */
  private closeWhenUnaryDone(entry: PeerTransport): void {
    if (entry.inflight > entry.streams.size || !this.retiring.has(entry)) {
      return;
    }
    if (entry.streams.size === 0) {
      this.finish(entry);
    } else if (entry.drain === undefined) {
      entry.drain = setTimeout(() => {
        endStreams(entry, leftRegistry(entry.address, this.drainMs));
        this.finish(entry);
      }, this.drainMs);
      // a drain must not keep a process alive; Workers' timers are numbers
      (entry.drain as { unref?: () => void }).unref?.();
    }
  }

  private finish(entry: PeerTransport): void {
    if (this.retiring.delete(entry)) {
      clearTimeout(entry.drain);
      void this.close(entry);
    }
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

/** Ends a stream whose peer left the registry: Unavailable, as for a server gone, so that the caller opens a new one elsewhere. */
function leftRegistry(address: string, drainMs: number): ConnectError {
  return markDelivery(
    new ConnectError(`peer ${address} left the registry: its stream was still open ${drainMs} ms later and was ended, so that a new one goes to a live peer`, Code.Unavailable),
    "lost",
  );
}

function endStreams(entry: PeerTransport, reason: ConnectError): void {
  for (const end of [...entry.streams]) {
    end(reason);
  }
}

/** Symbol.asyncDispose where the runtime has it (Node ≥ 20.4, Workers, Deno, Bun). */
const asyncDispose = (Symbol as { asyncDispose?: symbol }).asyncDispose;
