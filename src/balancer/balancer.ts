import type { ConnectError, ContextValues } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Peer } from "../peer.js";

/** What a picker may look at to choose a peer for one call. */
export interface PickRequest {
  /** The method called. */
  readonly method: DescMethod;
  /** The call's request headers. */
  readonly header: Headers;
  /** The call's context values, e.g. `hashKey` for ring_hash. */
  readonly contextValues: ContextValues;
  /**
   * 0 for the first pick of a call; 1, 2, … when the transport asks again
   * because this call already tried the peer picked (ejected peers are not
   * in the picker's set at all). A deterministic policy (ring_hash) moves on
   * to its next candidate.
   */
  readonly attempt: number;
}

/** How a call ended, as told to the policy that picked its peer. */
export interface CallResult {
  /** Undefined when the call succeeded. */
  readonly error?: ConnectError;
}

/**
 * Called once when a picked call ends. `latencyMs` is how long the peer took
 * to answer: the whole call for unary methods, the time until the response
 * started for streams (which stay open as long as the caller reads them).
 */
export type DoneFunc = (result: CallResult, latencyMs: number) => void;

export interface Pick {
  /** The peer to send the call to. */
  readonly peer: Peer;
  /** Called once when the call ends, with its outcome and latency; learning policies record it. */
  readonly done?: DoneFunc;
}

/** Chooses a peer for one call. Pure and fast: it runs on every call. */
export type Picker = (request: PickRequest) => Pick;

/**
 * A load-balancing policy. `build` runs once each time the set of peers
 * changes (never per call) and returns the picker for that set; a policy that
 * learns keeps its statistics across builds, keyed by peer address.
 * `peers` is never empty.
 */
export interface Balancer {
  /** Names the policy in messages, e.g. "p2c". */
  readonly name: string;
  build(peers: readonly Peer[]): Picker;
}
