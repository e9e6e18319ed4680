import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { resolveBalancer, type BalancerName } from "../balancer/index.js";
import type { Balancer, CallResult, Pick } from "../balancer/balancer.js";
import { acquireSnapshotCache, type SnapshotCache } from "../cache/snapshot-cache.js";
import type { Discovery } from "../discovery/discovery.js";
import { logProblems, notify, type EventListener } from "../events.js";
import { peerKey, type Peer } from "../peer.js";
import { requestHeader } from "../request-header.js";
import type { EndpointScheme } from "../registry/endpoint.js";
import { HealthyPicker } from "./healthy-picker.js";
import { OutlierDetection, outcomeOf, type OutlierDetectionOptions } from "./outlier-detection.js";
import { deliveryOf, markDelivery } from "./delivery.js";
import { asPeerFailure, classifyFailure, type FailureKind } from "./failures.js";
import { RetryBudget } from "./retry-budget.js";
import { buildPeerSet, type PeerFilter, type PeerSet } from "./peer-set.js";
import { PeerTransports, type PeerTransport, type PeerTransportFactory } from "./peer-transports.js";

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
  /** "round_robin" (default), "random", "weighted_round_robin", "least_request", "p2c", "ring_hash", or a Balancer object. */
  readonly balancer?: BalancerName | Balancer;
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
   * When peers get no calls for a while (see OutlierDetectionOptions for the
   * defaults and why): at once when unreachable, after 5 consecutive
   * server-side failures. `false` turns it off.
   */
  readonly outlierDetection?: OutlierDetectionOptions | false;
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
  /** Releases the per-peer transports and the registry cache handle; the process can exit after it. */
  close(): Promise<void>;
}

const succeeded: CallResult = Object.freeze({});
/** Ends a pick that was passed over before any call went out. */
const skipped: CallResult = Object.freeze({ error: new ConnectError("peer passed over: this call already tried it", Code.Canceled) });
const noneTried: ReadonlySet<string> = new Set<string>();

/** One attempt of a call on one peer. */
interface Attempt {
  readonly method: DescMethod;
  /** The caller's signal: a failure after it aborted is the caller's doing. */
  readonly signal: AbortSignal | undefined;
  readonly pick: Pick;
  readonly entry: PeerTransport;
  readonly started: number;
  /** When the response started, for a stream still open. */
  responded?: number;
}

export function createBalancedTransport(options: BalancedTransportOptions): BalancedTransport {
  const service = parseServiceName(options.service);
  const schemes = options.schemes ?? ["grpc", "grpcs"];
  if (schemes.length === 0) {
    throw new ConnectError("createBalancedTransport: schemes must name at least one endpoint scheme", Code.InvalidArgument);
  }
  const balancer = resolveBalancer(options.balancer);
  const interceptors = options.interceptors ?? [];
  const listener = options.onEvent ?? logProblems;
  const onEvent: EventListener = (event) => notify(listener, event);
  const { discovery } = options;
  const where = discovery.describe(service);
  const cache: SnapshotCache = acquireSnapshotCache(discovery, service, onEvent);
  const pool = new PeerTransports(options.transport, (address, error) =>
    onEvent({ type: "peer_close_failed", service, address, error }),
  );
  const maxAttempts = options.maxAttempts ?? 2;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
    throw new ConnectError(`createBalancedTransport: maxAttempts must be an integer ≥ 1, got ${maxAttempts}`, Code.InvalidArgument);
  }
  const detection = options.outlierDetection === false ? undefined : new OutlierDetection(options.outlierDetection);
  const healthy = new HealthyPicker(balancer, detection);
  const retryBudget = new RetryBudget();
  let peerSet: PeerSet | undefined;
  let closed = false;
  /** Ends the pick of each stream response not yet ended. */
  const openStreams = new Set<(error?: unknown) => ConnectError | undefined>();

  /** The peers to call now and their picker; Unavailable, saying why, when there are none. */
  async function usablePeers(signal: AbortSignal | undefined, timeoutMs: number | undefined) {
    assertOpen();
    const snapshot = cache.peek(options.waitUntil) ?? (await cache.load(signal, timeoutMs));
    assertOpen();
    if (peerSet?.snapshot !== snapshot) {
      peerSet = buildPeerSet(snapshot, schemes, options.filter, balancer, where);
      pool.retain(peerSet.peers);
      detection?.retain(peerSet.peers);
    }
    if (!("pick" in peerSet)) {
      throw new ConnectError(peerSet.unavailable, Code.Unavailable);
    }
    return peerSet;
  }

  function assertOpen() {
    if (closed) {
      throw new ConnectError(`the balanced transport of "${service}" is closed`, Code.FailedPrecondition);
    }
  }

  /**
   * Picks a peer for one attempt among the healthy peers, passing over those
   * this call already tried while others remain; records it in the context
   * values and takes its transport.
   */
  async function pickPeer(
    method: DescMethod,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: Headers,
    contextValues: ContextValues,
    tried: ReadonlySet<string> = noneTried,
  ): Promise<Attempt> {
    const set = await usablePeers(signal, timeoutMs);
    const now = performance.now();
    const { peers, pick: picker } = healthy.over(set, now);
    let pick = picker({ method, header, contextValues, attempt: 0 });
    if (tried.size > 0 && tried.has(pick.peer.url)) {
      // Ask the policy again; if its choices keep missing (random ones can), take an untried peer at random.
      for (let attempt = 1; attempt < peers.length && tried.has(pick.peer.url); attempt++) {
        pick.done?.(skipped, 0);
        pick = picker({ method, header, contextValues, attempt });
      }
      const untried = tried.has(pick.peer.url) ? untriedOf(peers, tried) ?? untriedOf(set.peers, tried) : undefined;
      if (untried !== undefined) {
        pick.done?.(skipped, 0);
        pick = { peer: untried[Math.floor(Math.random() * untried.length)]! };
      }
    }
    contextValues.set(peerKey, pick.peer);
    let entry: PeerTransport;
    try {
      entry = pool.acquire(pick.peer);
    } catch (error) {
      const failure = ConnectError.from(error, Code.Internal);
      pick.done?.({ error: failure }, 0);
      throw attributeToPeer(failure, pick.peer, service);
    }
    return { method, signal, pick, entry, started: now };
  }

  /**
   * Ends an attempt once: frees the peer's transport, tells the policy, ejects
   * a peer that could not be reached, and returns the error naming the peer.
   */
  function finish(attempt: Attempt, error?: unknown): { error: ConnectError; kind: FailureKind } | undefined {
    const { pick, entry, started, method } = attempt;
    const now = performance.now();
    const latencyMs = (attempt.responded ?? now) - started;
    pool.release(entry);
    if (error === undefined) {
      pick.done?.(succeeded, latencyMs);
      detection?.record(pick.peer, "alive", now, peerSet?.peers.length ?? 1);
      return undefined;
    }
    const canceledByCaller = attempt.signal?.aborted === true;
    const failure = asPeerFailure(ConnectError.from(error), canceledByCaller);
    pick.done?.({ error: failure }, latencyMs);
    const kind = classifyFailure(failure, method);
    const outcome = outcomeOf(failure, kind.unreachable, canceledByCaller || deliveryOf(failure) === "canceled");
    const forMs = detection?.record(pick.peer, outcome, now, peerSet?.peers.length ?? 1);
    if (forMs !== undefined) {
      const reason = outcome === "unreachable" ? "unreachable" : "consecutive_failures";
      onEvent({ type: "peer_ejected", service, address: pick.peer.address, forMs, reason, error: failure });
    }
    return { error: attributeToPeer(failure, pick.peer, service), kind };
  }

  /** Whether the current peers include one this call has not tried yet (by URL: peers are rebuilt per snapshot). */
  function hasUntried(tried: ReadonlySet<string>): boolean {
    return peerSet !== undefined && peerSet.peers.some((peer) => !tried.has(peer.url));
  }

  /**
   * Sends a call, and sends it again to another peer while that is safe and
   * allowed (maxAttempts, the call's deadline, the retry budget), until a peer
   * answers. The attempt that answered is returned still open: finish() it.
   */
  async function untilResponse<R>(
    method: DescMethod,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    values: ContextValues,
    resendable: boolean,
    send: (transport: Transport, peer: Peer, headers: Headers, remainingMs: number | undefined) => Promise<R>,
  ): Promise<{ response: R; attempt: Attempt }> {
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    let tried = noneTried; // allocated on the first failure: most calls have none
    let earlier: string[] | undefined;
    let attempts = 0;
    let retries = 0;
    retryBudget.callStarted();
    try {
      for (;;) {
        // each attempt starts from the caller's headers, whatever interceptors added last time
        const headers = requestHeader(header);
        const remainingMs = deadline === undefined ? undefined : Math.max(1, Math.round(deadline - performance.now()));
        const attempt = await pickPeer(method, signal, remainingMs, headers, values, tried);
        attempts++;
        try {
          return { response: await send(attempt.entry.transport, attempt.pick.peer, headers, remainingMs), attempt };
        } catch (error) {
          const failure = finish(attempt, error)!;
          tried = new Set([...tried, attempt.pick.peer.url]);
          const timeLeft = deadline === undefined || deadline - performance.now() > 0;
          const worthRetrying =
            resendable && failure.kind.retryable && attempts < maxAttempts && !signal?.aborted && timeLeft && hasUntried(tried);
          if (!worthRetrying || !(failure.kind.unreachable || retryBudget.tryRetry())) {
            throw earlier === undefined ? failure.error : withEarlierAttempts(failure.error, earlier);
          }
          (earlier ??= []).push(`${attempt.pick.peer.address}: ${failure.error.cause instanceof ConnectError ? failure.error.cause.message : failure.error.rawMessage}`);
          retries += failure.kind.unreachable ? 0 : 1;
        }
      }
    } finally {
      retryBudget.callEnded(retries);
    }
  }

  function intercept<T>(next: T): T {
    return interceptors.reduceRight<unknown>((inner, interceptor) => interceptor(inner as never), next) as T;
  }

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
      const { response, attempt } = await untilResponse(method, signal, timeoutMs, header, values, true, (transport, peer, headers, remainingMs) =>
        interceptors.length === 0
          ? transport.unary(method, signal, remainingMs, headers, input, values)
          : intercept((req: UnaryRequest<I, O>) =>
              transport.unary(req.method, req.signal, remainingMs, req.header, req.message, req.contextValues),
            )({
              ...requestCommon(method, peer, signal, headers, values),
              stream: false,
              method,
              message: create(method.input, input) as MessageShape<I>,
            }),
      );
      finish(attempt);
      return { ...response, peer: attempt.pick.peer };
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
      const { response, attempt } = await untilResponse(method, signal, timeoutMs, header, values, resendable, (transport, peer, headers, remainingMs) => {
        const body = messages === undefined ? input : createAsyncIterable(messages);
        return interceptors.length === 0
          ? transport.stream(method, signal, remainingMs, headers, body, values)
          : intercept((req: StreamRequest<I, O>) =>
              transport.stream(req.method, req.signal, remainingMs, req.header, req.message, req.contextValues),
            )({
              ...requestCommon(method, peer, signal, headers, values),
              stream: true,
              method,
              message: body as AsyncIterable<MessageShape<I>>,
            });
      });
      attempt.responded = performance.now();
      let ended = false;
      const end = (error?: unknown) => {
        if (ended) {
          return undefined;
        }
        ended = true;
        signal?.removeEventListener("abort", onAbort);
        openStreams.delete(end);
        return finish(attempt, error)?.error;
      };
      // The pick ends when the caller aborts or the transport closes, also if nobody reads the stream.
      const onAbort = () => end(markDelivery(new ConnectError("the caller aborted the stream", Code.Canceled), "canceled"));
      signal?.addEventListener("abort", onAbort);
      openStreams.add(end);
      if (signal?.aborted === true) {
        onAbort(); // aborted before the listener was there
      }
      return { ...response, peer: attempt.pick.peer, message: trackStream(response.message, end) };
    },

    async peers(options) {
      return (await usablePeers(options?.signal, options?.timeoutMs)).peers;
    },

    async close() {
      if (!closed) {
        closed = true;
        cache.release();
        const closing = markDelivery(new ConnectError(`the balanced transport of "${service}" was closed`, Code.Canceled), "canceled");
        for (const end of [...openStreams]) {
          end(closing);
        }
        await pool.closeAll();
      }
    },
  };
}

/**
 * The fields interceptors see besides the message. Built only when there are
 * interceptors: a fresh AbortSignal per call costs more than the rest of the
 * balancer together.
 */
function requestCommon(method: DescMethod, peer: Peer, signal: AbortSignal | undefined, header: Headers, contextValues: ContextValues) {
  return {
    service: method.parent,
    requestMethod: "POST",
    url: `${peer.url}/${method.parent.typeName}/${method.name}`,
    signal: signal ?? new AbortController().signal,
    header,
    contextValues,
  };
}

async function collect<T>(messages: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const message of messages) {
    all.push(message);
  }
  return all;
}

/**
 * Ends the call when the response stream ends, fails, or the caller stops
 * reading it — also when it stops before the first message, which an async
 * generator would not notice.
 */
function trackStream<T>(messages: AsyncIterable<T>, end: (error?: unknown) => ConnectError | undefined): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const inner = messages[Symbol.asyncIterator]();
      return {
        async next() {
          try {
            const result = await inner.next();
            if (result.done === true) {
              end();
            }
            return result;
          } catch (error) {
            throw end(error) ?? error;
          }
        },
        async return(value?: unknown) {
          end();
          await inner.return?.();
          return { done: true, value: value as T };
        },
        async throw(error?: unknown) {
          end();
          if (inner.throw !== undefined) {
            return inner.throw(error);
          }
          throw error;
        },
      };
    },
  };
}

/** The peers a call has not tried yet; undefined when it tried them all. */
function untriedOf(peers: readonly Peer[], tried: ReadonlySet<string>): Peer[] | undefined {
  const untried = peers.filter((peer) => !tried.has(peer.url));
  return untried.length > 0 ? untried : undefined;
}

/** The error of the last attempt, its message also saying how each earlier attempt failed. */
function withEarlierAttempts(last: ConnectError, earlier: readonly string[]): ConnectError {
  const error = new ConnectError(`${last.rawMessage}; ${earlier.length + 1} peers tried, earlier: ${earlier.join("; ")}`, last.code, last.metadata, undefined, last.cause);
  error.details = last.details;
  return error;
}

/** The same error, its message naming the peer that was tried. */
function attributeToPeer(error: ConnectError, peer: Peer, service: string): ConnectError {
  const attributed = new ConnectError(
    `${error.rawMessage} (peer ${peer.address} of "${service}")`,
    error.code,
    error.metadata,
    undefined,
    error,
  );
  attributed.details = error.details;
  return attributed;
}

function parseServiceName(target: string): string {
  const name = target.startsWith("discovery:") ? /^discovery:\/\/[^/]*\/(.*)$/.exec(target)?.[1] : target;
  if (name === undefined || name === "" || /\s/.test(name) || name.endsWith("/")) {
    throw new ConnectError(
      `createBalancedTransport: bad service ${JSON.stringify(target)}: use a name like "user-service" or "discovery:///user-service"`,
      Code.InvalidArgument,
    );
  }
  return name;
}
