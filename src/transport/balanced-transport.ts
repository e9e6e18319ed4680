import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type Interceptor,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import type { DescMessage, DescMethodStreaming, DescMethodUnary, MessageInitShape } from "@bufbuild/protobuf";
import { resolveBalancer, type BalancerName } from "../balancer/index.js";
import type { Balancer } from "../balancer/balancer.js";
import { acquireSnapshotCache, type SnapshotCache } from "../cache/snapshot-cache.js";
import type { Discovery, Snapshot } from "../discovery/discovery.js";
import { logProblems, notify, type EventListener } from "../events.js";
import type { Peer } from "../peer.js";
import type { EndpointScheme } from "../registry/endpoint.js";
import { beginAttempt, finishAttempt, type AttemptScope } from "./attempt.js";
import { markDelivery } from "./delivery.js";
import { invoke } from "./invoke.js";
import { MethodAnswers } from "./method-answers.js";
import { OutlierDetection, type OutlierDetectionOptions } from "./outlier-detection.js";
import { Reachability } from "./reachability.js";
import { untilResponse, type RetryPolicy } from "./retry.js";
import { RetryBudget } from "./retry-budget.js";
import { parseServiceName } from "./service-name.js";
import { beginStreamAttempt, collect, type StreamAttempt } from "./stream-pick.js";
import { buildPeerSet, createAllowGate, type PeerFilter, type PeerSet } from "./peer-set.js";
import { PickPath } from "../pick/pick-path.js";
import { pickUntried } from "../pick/untried.js";
import type { ZoneOptions } from "../pick/zones.js";
import { SlowStart, validSlowStart, type SlowStartOptions } from "../pick/slow-start.js";
import { PeerTransports, type PeerTransportFactory } from "./peer-transports.js";
import { statsOf, type PeerStats } from "./transport-stats.js";

export interface BalancedTransportOptions {
  /** The registered service name, e.g. "user-service" or kratos-style "discovery:///user-service". */
  readonly service: string;
  /** Where instances come from: etcdDiscovery(…) or staticDiscovery(…). */
  readonly discovery: Discovery;
  /**
   * Builds the transport for one peer, e.g. `(peer) => createGrpcTransport({ baseUrl: peer.url })`.
   * Called once per peer; closed (when it has close() or [Symbol.asyncDispose]())
   * after the peer leaves the registry and on close().
   */
  readonly transport: PeerTransportFactory;
  /**
   * Which instances this transport may call, e.g. `(peer) => peer.version === "v2"`
   * or `(peer) => peer.metadata.zone === "eu-1"`; applied once per registry change.
   */
  readonly filter?: PeerFilter;
  /**
   * Limits the addresses this transport dials, beyond the default policy
   * (link-local, unspecified, multicast and cloud metadata addresses are never
   * dialled): CIDRs ("10.0.0.0/8", "fd00::/8"), addresses ("127.0.0.1", "::1"),
   * host names ("api.internal") and "*.svc.cluster.local" for any name below
   * one. An instance none of whose endpoints matches is not called and is
   * reported as an `entry_skipped` event. Names match as names: to be sure of
   * the address dialled, register IPs and allow CIDRs. Default: no limit.
   */
  readonly allow?: readonly string[];
  /** "round_robin" (default), "random", "weighted_round_robin", "least_request", "p2c", "ring_hash", or a Balancer object. */
  readonly balancer?: BalancerName | Balancer;
  /**
   * Spreads this transport's calls over a stable subset of `size` peers
   * (default 25, as kratos' `WithSubset`), so that N clients of M instances
   * do not hold N × M connections; `false` for every peer. The subset is
   * drawn by rendezvous hashing with a random seed per transport (gRFC A68):
   * one instance joining or leaving changes at most one member, and the
   * others keep their connections and statistics. A member that is ejected
   * or cannot be reached is stood in for by the next-ranked peer while it is
   * out. `ring_hash` is never subset: its affinity needs every client to see
   * the same ring (a policy of your own with such affinity needs `false`).
   * With `zone`, the caller's zone has a subset of `size`, the other zones
   * one only as large as the calls spilling over to them need. A retry stays
   * within the subset.
   */
  readonly subset?: { readonly size: number } | false;
  /**
   * The caller's zone, e.g. the AZ ID "use1-az1" (on Lambda the
   * `AvailabilityZoneID` of the execution environment's metadata; see the
   * README for ECS, EC2 and Kubernetes). Calls stay on instances of this
   * zone (metadata `zoneKey`) while at least 5 of 7 (1 / 1.4) of them are
   * healthy; below that, that share × 1.4 stays and the rest spills over to
   * the other zones, in proportion to their healthy peers (Envoy's priority
   * levels with overprovisioning factor 1.4); with no healthy local peer
   * every call spills. Default: zones are not looked at.
   */
  readonly zone?: string;
  /** The instance metadata key that holds an instance's zone (default "zone"); an instance without it is in no zone. */
  readonly zoneKey?: string;
  /** Registered endpoint schemes this transport can dial, in order of preference within an instance (default grpc, grpcs). */
  readonly schemes?: readonly EndpointScheme[];
  /** Run once per call after the pick, around the peer's transport; `req.contextValues.get(peerKey)` is set. */
  readonly interceptors?: readonly Interceptor[];
  /**
   * Attempts per call, each on another peer (default 2; 1 turns retries off).
   * A call is sent again only when that cannot repeat a side effect: the
   * request never reached the server, or the method is marked idempotent and
   * its connection was lost or it failed as Unavailable. Unary and
   * server-streaming calls are retried (the latter until the response starts);
   * client and bidi streams are read once and never are. Retries of calls a
   * server answered are kept to 20 % of the calls in flight (at least 3), as
   * Envoy's retry budget; resending after a connection failure is not counted,
   * since the failed peer is ejected at once.
   */
  readonly maxAttempts?: number;
  /**
   * Deadline in ms of unary calls that set none (default: none). A call
   * without a deadline waits as long as its peer keeps the stream open: a
   * peer that accepts calls and never answers (a deadlocked server, a
   * flow-control window of 0) holds it for ever. Calls with a deadline are
   * safe from that, and such a peer is taken out of rotation once it lets a
   * few of them run out while others answer. kratos' clients default to
   * 2,000 ms. A call's own `timeoutMs` wins; 0 there means none, as in
   * connect. Streams are left alone: they may rightly stay open for hours.
   */
  readonly defaultTimeoutMs?: number;
  /**
   * When peers get no calls for a while (see OutlierDetectionOptions for the
   * defaults and why): at once when unreachable, after 5 consecutive
   * server-side failures. `false` turns it off.
   */
  readonly outlierDetection?: OutlierDetectionOptions | false;
  /**
   * Ramps a peer in over `windowMs` instead of giving it its full share at
   * once, while its caches are cold (Envoy's slow start): weight ×
   * max(minWeightPercent / 100, (t / windowMs)^(1 / aggression)), defaults
   * aggression 1, minWeightPercent 10. A peer ramps when it is new in the
   * registry after the transport's first snapshot, or back from an ejection
   * or from being out of reach; the peers of the first snapshot do not, so a
   * cold start does not slow-start the fleet. Off by default, as in Envoy.
   * Not with ring_hash, whose keys must stay on their peers.
   */
  readonly slowStart?: SlowStartOptions;
  /**
   * How long the open streams of a peer that left the registry may go on
   * (default 30,000 ms): long enough for its graceful shutdown to end them.
   * Then they are ended as `Unavailable` naming the peer, so that their
   * callers open new ones on live peers, and its connection is closed. Its
   * unary calls always finish; it gets no new calls from the moment the
   * transport sees it gone.
   */
  readonly drainMs?: number;
  /**
   * Keeps a background registry refresh alive on runtimes that freeze or end
   * work after the response: Cloudflare Workers' `waitUntil` from
   * "cloudflare:workers", Next.js' `after`. Called with each refresh a call starts.
   */
  readonly waitUntil?: (refresh: Promise<unknown>) => void;
  /** Receives snapshots, skipped registry entries and discovery failures; problems go to console.warn without it. */
  readonly onEvent?: EventListener;
}

export type PeerUnaryResponse<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> = UnaryResponse<I, O> & {
  readonly peer: Peer;
};
export type PeerStreamResponse<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> = StreamResponse<I, O> & {
  readonly peer: Peer;
};

/** A Connect Transport that spreads calls over a service's discovered instances and says which one served each. */
export interface BalancedTransport extends Transport {
  /** The service name calls are balanced over. */
  readonly service: string;
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<PeerUnaryResponse<I, O>>;
  stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<PeerStreamResponse<I, O>>;
  /** The peers calls are spread over now; reads the registry first if it was not read yet, and rejects like a call when there are none. */
  peers(options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<readonly Peer[]>;
  /**
   * What the transport counted per peer, for health endpoints and dashboards:
   * a fresh array of frozen plain objects, one per peer in the order of
   * `peers()`, as of the last call or `peers()` (empty before the registry
   * was first read, and after close(): the counters go with the per-peer
   * transports). Synchronous and cheap; see PeerStats for each field.
   */
  stats(): PeerStats[];
  /** Releases the per-peer transports and the registry cache handle; the process can exit after it. */
  close(): Promise<void>;
}

export function createBalancedTransport(options: BalancedTransportOptions): BalancedTransport {
  const service = parseServiceName(options.service);
  const schemes = options.schemes ?? ["grpc", "grpcs"];
  if (schemes.length === 0) {
    throw new ConnectError("createBalancedTransport: schemes must name at least one endpoint scheme", Code.InvalidArgument);
  }
  const maxAttempts = options.maxAttempts ?? 2;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
    throw new ConnectError(`createBalancedTransport: maxAttempts must be an integer ≥ 1, got ${maxAttempts}`, Code.InvalidArgument);
  }
  const { defaultTimeoutMs } = options;
  if (defaultTimeoutMs !== undefined && !(defaultTimeoutMs > 0 && Number.isFinite(defaultTimeoutMs))) {
    throw new ConnectError(`createBalancedTransport: defaultTimeoutMs must be a positive number of ms, got ${defaultTimeoutMs}`, Code.InvalidArgument);
  }
  const balancer = resolveBalancer(options.balancer);
  const interceptors = options.interceptors ?? [];
  const listener = options.onEvent ?? logProblems;
  const onEvent: EventListener = (event) => notify(listener, event);
  const allow = createAllowGate(options.allow, ({ key, reason }) => onEvent({ type: "entry_skipped", service, key, reason }));
  const { discovery } = options;
  const where = discovery.describe(service);
  const cache: SnapshotCache = acquireSnapshotCache(discovery, service, onEvent, (snapshot) => {
    if (closedBy === undefined) {
      adopt(snapshot);
    }
  });
  const pool = new PeerTransports(options.transport, (address, error) => onEvent({ type: "peer_close_failed", service, address, error }), drainMsOf(options.drainMs));
  const detection = options.outlierDetection === false ? undefined : new OutlierDetection(options.outlierDetection);
  const reachability = new Reachability();
  const slowStart = slowStartOf(options.slowStart, balancer);
  const path = new PickPath({ balancer, subsetSize: subsetSizeOf(options.subset, balancer), zones: zonesOf(options), slowStart }, detection, reachability);
  let peerSet: PeerSet | undefined;
  let closedBy: ConnectError | undefined;
  const scope: AttemptScope = {
    service,
    pool,
    detection,
    reachability,
    answers: new MethodAnswers(),
    onEvent,
    onUnreached: () => cache.refreshEarly(options.waitUntil),
    peerCount: () => peerSet?.peers.length ?? 1,
    closedBy: () => closedBy,
  };

  /** The peers to call now and their picker; Unavailable, saying why, when there are none. */
  async function usablePeers(signal: AbortSignal | undefined, timeoutMs: number | undefined) {
    assertOpen();
    const snapshot = cache.peek(options.waitUntil) ?? (await cache.load(signal, timeoutMs));
    assertOpen();
    const set = adopt(snapshot);
    if (set.unavailable !== undefined) {
      throw new ConnectError(set.unavailable, Code.Unavailable);
    }
    return set;
  }

  /** The URLs of the peers now, kept in step with each change: given to every per-peer stage, which refuses to keep state of a peer not in it. */
  const live = new Set<string>();

  /**
   * The peers of a snapshot, built once per snapshot; a peer that left is
   * forgotten by every per-peer stage, its streams drained. A change the
   * peer set can name (registry snapshots in key order) costs in proportion
   * to it, here and in the subsets' rankings.
   */
  function adopt(snapshot: Snapshot): PeerSet {
    if (peerSet?.snapshot !== snapshot) {
      const last = peerSet;
      peerSet = buildPeerSet(snapshot, schemes, options.filter, where, allow);
      if (last === undefined || last.peers !== peerSet.peers) {
        const change = peerSet.change !== undefined && peerSet.change.from === last?.peers ? peerSet.change : undefined;
        path.follow(peerSet.peers, change);
        // one rule for every per-peer stage: what it keeps of a peer goes when the peer leaves the registry
        if (change === undefined) {
          live.clear();
          for (const peer of peerSet.peers) {
            live.add(peer.url);
          }
          pool.retain(live);
          detection?.retain(live);
          reachability.retain(live);
          slowStart?.retain(live);
        } else {
          for (const peer of change.departed) {
            live.delete(peer.url);
          }
          for (const peer of change.added) {
            live.add(peer.url);
          }
          const gone = change.departed.map((peer) => peer.url).filter((url) => !live.has(url)); // a changed instance may keep its URL
          if (gone.length > 0) {
            pool.forget(gone);
            detection?.forget(gone);
            reachability.forget(gone);
            slowStart?.forget(gone);
          }
        }
      }
    }
    return peerSet;
  }

  /** Ends with the close of the transport: a call waiting inside it must not outlive it. Made at the first wait: workerd refuses it in global scope. */
  let closing: AbortController | undefined;

  /** Waits (within the call) for a fresh registry read; rejects with the close, if the transport closed meanwhile. */
  async function awaitFreshRead(signal: AbortSignal | undefined, remainingMs: number | undefined) {
    assertOpen();
    closing ??= new AbortController();
    await cache.awaitFreshRead(signal === undefined ? closing.signal : AbortSignal.any([signal, closing.signal]), remainingMs, options.waitUntil);
    if (closedBy !== undefined) {
      throw closedBy;
    }
  }

  function assertOpen() {
    if (closedBy !== undefined) {
      throw new ConnectError(`the balanced transport of "${service}" is closed`, Code.FailedPrecondition);
    }
  }

  const retryPolicy: RetryPolicy = {
    maxAttempts,
    budget: new RetryBudget(),
    async begin(call, header, remainingMs, tried) {
      let set = await usablePeers(call.signal, remainingMs);
      let pickable = path.over(set.peers, performance.now());
      if (pickable.noneReachable === true) {
        // Every peer refused: the registry likely moved on. Read it before trying them again.
        await awaitFreshRead(call.signal, remainingMs);
        set = await usablePeers(call.signal, remainingMs);
        pickable = path.over(set.peers, performance.now());
      }
      const pick = pickUntried(pickable, { method: call.method, header, contextValues: call.contextValues }, tried);
      return beginAttempt(scope, pick, call.method, call.signal, call.contextValues);
    },
    finish: (attempt, error) => finishAttempt(scope, attempt, error)!,
    async awaitFreshRead(call, remainingMs) {
      await awaitFreshRead(call.signal, remainingMs);
      await usablePeers(call.signal, remainingMs).catch(() => {}); // the new peers, if any; the last failure stands otherwise
    },
    hasUntried: (tried) => peerSet?.unavailable === undefined && path.over(peerSet!.peers, performance.now()).members.some((peer) => !tried.has(peer.url)),
  };

  return {
    service,

    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<PeerUnaryResponse<I, O>> {
      const values = contextValues ?? createContextValues();
      const { response, attempt } = await untilResponse(retryPolicy, {
        method,
        signal,
        timeoutMs: timeoutMs === undefined ? defaultTimeoutMs : timeoutMs > 0 ? timeoutMs : undefined, // 0: none, as connect
        header,
        contextValues: values,
        resendable: true,
        send: (transport, peer, headers, remainingMs) =>
          invoke(interceptors, transport, peer, { stream: false, method, signal, timeoutMs: remainingMs, header: headers, contextValues: values, message: input }),
      });
      finishAttempt(scope, attempt);
      return { ...(response as UnaryResponse<I, O>), peer: attempt.pick.peer };
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<PeerStreamResponse<I, O>> {
      const values = contextValues ?? createContextValues();
      // A server-streaming call has one request message: read it first, and the
      // call can be sent again until the response starts. Other streams are read once.
      const resendable = method.methodKind === "server_streaming";
      const messages = resendable ? await collect(input) : undefined;
      let streamAttempt: StreamAttempt | undefined; // the one that responded, once untilResponse returns
      const { response, attempt } = await untilResponse(retryPolicy, {
        method,
        signal,
        timeoutMs,
        header,
        contextValues: values,
        resendable,
        send: async (transport, peer, headers, remainingMs, begun) => {
          const body = messages === undefined ? input : createAsyncIterable(messages);
          streamAttempt = beginStreamAttempt(signal, pool.streamsOf(begun.entry));
          const call = { stream: true, method, signal: streamAttempt.signal, timeoutMs: remainingMs, header: headers, contextValues: values, message: body } as const;
          try {
            return await invoke(interceptors, transport, peer, call);
          } catch (error) {
            streamAttempt.drop();
            throw error;
          }
        },
      });
      attempt.responded = performance.now();
      const stream = response as StreamResponse<I, O>;
      const message = streamAttempt!.track(stream.message, (error) => finishAttempt(scope, attempt, error)?.error);
      return { ...stream, peer: attempt.pick.peer, message };
    },

    async peers(options) {
      return path.over((await usablePeers(options?.signal, options?.timeoutMs)).peers, performance.now()).members;
    },

    stats() {
      if (closedBy !== undefined) {
        return []; // the counters went with the per-peer transports
      }
      const now = performance.now();
      const members = peerSet === undefined || peerSet.unavailable !== undefined ? [] : path.over(peerSet.peers, now).members;
      return statsOf(members, (peer) => pool.find(peer), detection, reachability, now);
    },

    async close() {
      if (closedBy === undefined) {
        closedBy = markDelivery(new ConnectError(`the balanced transport of "${service}" was closed`, Code.Canceled), "canceled");
        closing?.abort(closedBy);
        cache.release();
        await pool.closeAll(closedBy);
      }
    },
  };
}

/** Peers per subset: 25 unless turned off; ring_hash never, as its affinity needs every client to see the same ring. */
function subsetSizeOf(subset: BalancedTransportOptions["subset"], balancer: Balancer): number | undefined {
  if (subset === false) {
    return undefined;
  }
  const size = subset?.size ?? defaultSubsetSize;
  if (!Number.isInteger(size) || size < 1) {
    throw new ConnectError(`createBalancedTransport: subset.size must be an integer ≥ 1, got ${size}`, Code.InvalidArgument);
  }
  return balancer.name === "ring_hash" ? undefined : size;
}

function slowStartOf(options: SlowStartOptions | undefined, balancer: Balancer): SlowStart | undefined {
  if (options === undefined) {
    return undefined;
  }
  if (balancer.name === "ring_hash") {
    throw new ConnectError("createBalancedTransport: slowStart does not apply to ring_hash, whose keys must stay on their peers", Code.InvalidArgument);
  }
  return new SlowStart(validSlowStart(options));
}

function drainMsOf(drainMs = defaultDrainMs): number {
  if (!Number.isFinite(drainMs) || drainMs < 0) {
    throw new ConnectError(`createBalancedTransport: drainMs must be a number of ms ≥ 0, got ${drainMs}`, Code.InvalidArgument);
  }
  return drainMs;
}

/** Long enough for a server's graceful shutdown to end its streams itself; grpc-go gives no bound at all (#6486). */
const defaultDrainMs = 30_000;

/** As kratos' `WithSubset` default. */
const defaultSubsetSize = 25;

function zonesOf({ zone, zoneKey = "zone" }: BalancedTransportOptions): ZoneOptions | undefined {
  if (zone === undefined) {
    return undefined;
  }
  if (typeof zone !== "string" || zone === "" || typeof zoneKey !== "string" || zoneKey === "") {
    throw new ConnectError(`createBalancedTransport: zone and zoneKey must be non-empty strings, got ${JSON.stringify({ zone, zoneKey })}`, Code.InvalidArgument);
  }
  return { zone, zoneKey };
}
