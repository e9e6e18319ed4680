import { Code, ConnectError } from "@connectrpc/connect";
import { redactUrl } from "../redact.js";
import type { WatchListener } from "./discovery.js";
import { hedged, HedgeFailure } from "./hedge.js";

/** etcd credentials; the password is sent to etcd only, never logged or put in an error. */
export interface EtcdAuth {
  readonly username: string;
  readonly password: string;
}

export interface EtcdGatewayOptions {
  readonly endpoints: readonly string[];
  readonly auth?: EtcdAuth;
  readonly fetch?: typeof globalThis.fetch;
  readonly requestTimeoutMs: number;
  /** How long a read waits for one endpoint before asking the next one too. */
  readonly hedgeAfterMs: number;
}

export interface RangeResult {
  readonly revision: number;
  readonly kvs: readonly { readonly key: string; readonly value: string }[];
}

/** A client of etcd's v3 JSON gateway: plain fetch, so it runs on every runtime. */
export interface EtcdGateway {
  /** Endpoint base URLs, without credentials. */
  readonly endpoints: readonly string[];
  /**
   * Reads every key under a prefix, starting with the endpoint that answered
   * last; the next is asked when one fails or is silent for hedgeAfterMs.
   */
  rangePrefix(prefix: string, signal: AbortSignal): Promise<RangeResult>;
  /**
   * Watches a prefix from the revision after `afterRevision` on the endpoint
   * that answered last, telling the listener for every batch of events, until
   * the signal aborts (resolves) or the watch fails (rejects; a compacted
   * start revision is a failure too).
   */
  watchPrefix(prefix: string, afterRevision: number, signal: AbortSignal, listener: WatchListener): Promise<void>;
}

interface GatewayErrorBody {
  readonly error?: string;
  readonly message?: string;
  readonly code?: number;
}

/** An error answer from etcd, with etcd's gRPC status code. */
class EtcdAnswerError extends Error {
  constructor(
    readonly endpoint: string,
    readonly status: number,
    readonly grpcCode: number | undefined,
    message: string,
  ) {
    super(message);
  }
}

const grpcUnauthenticated = 16;
const grpcFailedPrecondition = 9;
const grpcPermissionDenied = 7;

export function createEtcdGateway(options: EtcdGatewayOptions): EtcdGateway {
  if (options.endpoints.length === 0) {
    throw new ConnectError("etcdDiscovery needs at least one endpoint", Code.InvalidArgument);
  }
  const endpoints = options.endpoints.map(normalizeEndpoint);
  const fetchFn = options.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => globalThis.fetch(input, init));
  const { auth, requestTimeoutMs, hedgeAfterMs } = options;
  // Simple tokens are local to the etcd member that issued them.
  const tokens = new Map<string, Promise<string | undefined>>();
  let preferred = 0;

  async function post<T>(endpoint: string, path: string, body: unknown, signal: AbortSignal, token?: string): Promise<T> {
    const deadline = linkedTimeout(signal, requestTimeoutMs, endpoint);
    try {
      const response = await fetchFn(`${endpoint}${path}`, {
        method: "POST",
        headers: token === undefined ? { "content-type": "application/json" } : { "content-type": "application/json", authorization: token },
        body: JSON.stringify(body),
        signal: deadline.signal,
      });
      const text = await response.text();
      if (!response.ok) {
        const answer = parseErrorBody(text);
        throw new EtcdAnswerError(endpoint, response.status, answer.code, answer.message ?? answer.error ?? `HTTP ${response.status}`);
      }
      return JSON.parse(text) as T;
    } catch (error) {
      throw deadline.signal.aborted ? deadline.signal.reason : error;
    } finally {
      deadline.cleanup();
    }
  }

  function token(endpoint: string, signal: AbortSignal): Promise<string | undefined> {
    if (auth === undefined) {
      return Promise.resolve(undefined);
    }
    let pending = tokens.get(endpoint);
    if (pending === undefined) {
      pending = authenticate(endpoint, auth, signal);
      tokens.set(endpoint, pending);
      pending.catch(() => tokens.delete(endpoint));
    }
    return pending;
  }

  async function authenticate(endpoint: string, { username, password }: EtcdAuth, signal: AbortSignal) {
    try {
      const answer = await post<{ token?: string }>(endpoint, "/v3/auth/authenticate", { name: username, password }, signal);
      return answer.token;
    } catch (error) {
      if (error instanceof EtcdAnswerError && error.grpcCode === grpcFailedPrecondition) {
        return undefined; // authentication is not enabled on this cluster: no token needed
      }
      if (error instanceof EtcdAnswerError) {
        throw new ConnectError(`etcd ${endpoint} rejected user "${username}": ${error.message}`, Code.Unauthenticated);
      }
      throw error;
    }
  }

  async function rangeAt(endpoint: string, prefix: string, signal: AbortSignal): Promise<RangeResult> {
    const body = { key: toBase64(prefix), range_end: toBase64(prefixEnd(prefix)) };
    type Answer = { header?: { revision?: string }; kvs?: { key: string; value?: string }[] };
    let answer: Answer;
    try {
      answer = await post<Answer>(endpoint, "/v3/kv/range", body, signal, await token(endpoint, signal));
    } catch (error) {
      if (error instanceof EtcdAnswerError && auth === undefined && error.message.includes("user name is empty")) {
        throw new ConnectError(`etcd ${endpoint} requires authentication: pass the auth option`, Code.Unauthenticated);
      }
      if (error instanceof EtcdAnswerError && error.grpcCode === grpcPermissionDenied) {
        const user = auth === undefined ? "an anonymous client" : `user "${auth.username}"`;
        throw new ConnectError(`etcd ${endpoint} does not let ${user} read "${prefix}"`, Code.PermissionDenied);
      }
      const tokenRejected = error instanceof EtcdAnswerError && (error.grpcCode === grpcUnauthenticated || error.message.includes("user name is empty"));
      if (!(tokenRejected && auth !== undefined)) {
        throw error;
      }
      // The token expired (etcd drops idle simple tokens after 300 s), or auth was
      // enabled after it was found off: authenticate again, once.
      tokens.delete(endpoint);
      answer = await post<Answer>(endpoint, "/v3/kv/range", body, signal, await token(endpoint, signal));
    }
    return {
      revision: Number(answer.header?.revision ?? 0),
      kvs: (answer.kvs ?? []).map((kv) => ({ key: fromBase64(kv.key), value: fromBase64(kv.value ?? "") })),
    };
  }

  async function watchPrefix(prefix: string, afterRevision: number, signal: AbortSignal, listener: WatchListener): Promise<void> {
    const endpoint = endpoints[preferred]!;
    const deadline = linkedTimeout(signal, requestTimeoutMs, endpoint);
    try {
      const authorization = await token(endpoint, deadline.signal);
      const response = await fetchFn(`${endpoint}/v3/watch`, {
        method: "POST",
        headers: authorization === undefined ? { "content-type": "application/json" } : { "content-type": "application/json", authorization },
        body: JSON.stringify({
          create_request: { key: toBase64(prefix), range_end: toBase64(prefixEnd(prefix)), start_revision: String(afterRevision + 1) },
        }),
        signal: deadline.signal,
      });
      if (!response.ok || response.body === null) {
        const answer = parseErrorBody(await response.text());
        if (answer.code === grpcUnauthenticated) {
          tokens.delete(endpoint); // expired: the next watch authenticates again
        }
        throw new EtcdAnswerError(endpoint, response.status, answer.code, answer.message ?? answer.error ?? `HTTP ${response.status}`);
      }
      deadline.stopTimer();
      for await (const line of lines(response.body)) {
        const { result, error } = JSON.parse(line) as {
          result?: { created?: boolean; events?: unknown[]; canceled?: boolean; cancel_reason?: string; compact_revision?: string };
          error?: GatewayErrorBody;
        };
        if (error !== undefined || result?.canceled) {
          const reason = error?.message ?? result?.cancel_reason ?? (result?.compact_revision ? `revision ${afterRevision + 1} was compacted` : "canceled");
          throw new ConnectError(`etcd ${endpoint} ended the watch of "${prefix}": ${reason}`, Code.Unavailable);
        }
        if (result?.created) {
          listener.opened();
        }
        if (result?.events !== undefined && result.events.length > 0) {
          listener.changed();
        }
      }
      if (!signal.aborted) {
        throw new ConnectError(`etcd ${endpoint} closed the watch of "${prefix}"`, Code.Unavailable);
      }
    } catch (error) {
      if (signal.aborted) {
        return;
      }
      throw deadline.signal.aborted ? deadline.signal.reason : error;
    } finally {
      deadline.cleanup();
    }
  }

  return {
    endpoints,
    watchPrefix,
    async rangePrefix(prefix, signal) {
      // Start with the endpoint that answered last; a hung one is hedged, not waited out.
      const first = preferred;
      const at = (i: number) => (first + i) % endpoints.length;
      try {
        const { value, index } = await hedged(endpoints.length, (i, attempt) => rangeAt(endpoints[at(i)]!, prefix, attempt), {
          signal,
          hedgeAfterMs,
          isFinal: (error) => error instanceof ConnectError && (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied),
        });
        preferred = at(index);
        return value;
      } catch (error) {
        if (!(error instanceof HedgeFailure)) {
          throw error;
        }
        const failures = error.failures.map(({ index, error }) => `${endpoints[at(index)]}: ${describeError(error)}`);
        throw new ConnectError(`every etcd endpoint failed (${failures.join("; ")})`, Code.Unavailable, undefined, undefined, error.failures.at(-1)?.error);
      }
    },
  };
}

/** Validates an endpoint URL and returns it without a trailing slash. */
function normalizeEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ConnectError(`etcd endpoint "${redactUrl(endpoint)}" is not a URL like http://127.0.0.1:2379`, Code.InvalidArgument);
  }
  if (url.username !== "" || url.password !== "") {
    throw new ConnectError(
      `etcd endpoint ${url.protocol}//${url.host} carries credentials: pass them as the auth option instead`,
      Code.InvalidArgument,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConnectError(`etcd endpoint "${redactUrl(endpoint)}" must use http or https`, Code.InvalidArgument);
  }
  return `${url.origin}${url.pathname}`.replace(/\/+$/, "");
}

function linkedTimeout(parent: AbortSignal, timeoutMs: number, endpoint: string) {
  const controller = new AbortController();
  const onAbort = () => controller.abort(parent.reason);
  parent.addEventListener("abort", onAbort);
  const timer = setTimeout(
    () => controller.abort(new ConnectError(`etcd ${endpoint} did not answer within ${timeoutMs} ms`, Code.DeadlineExceeded)),
    timeoutMs,
  );
  if (parent.aborted) {
    onAbort();
  }
  return {
    signal: controller.signal,
    /** The answer has started: a stream may now take as long as it likes. */
    stopTimer() {
      clearTimeout(timer);
    },
    cleanup() {
      clearTimeout(timer);
      parent.removeEventListener("abort", onAbort);
    },
  };
}

function parseErrorBody(text: string): GatewayErrorBody {
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null ? (parsed as GatewayErrorBody) : {};
  } catch {
    return { message: text.slice(0, 200) || undefined };
  }
}

/** Names a failure with its low-level cause (fetch hides "ECONNREFUSED" in `cause`). */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) {
    return String(error);
  }
  const cause = error.cause as { code?: unknown; message?: unknown } | undefined;
  const detail = typeof cause?.code === "string" ? cause.code : typeof cause?.message === "string" ? cause.message : undefined;
  const message = error instanceof ConnectError ? error.rawMessage : error.message;
  return detail === undefined || message.includes(detail) ? message : `${message} (${detail})`;
}

/** The lines of a newline-delimited body, as etcd's gateway streams watch responses. */
async function* lines(body: ReadableStream<Uint8Array>): AsyncIterable<string> {
  const reader = body.getReader();
  const text = new TextDecoder();
  let buffered = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        break;
      }
      buffered += text.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line !== "") {
          yield line;
        }
      }
    }
    if (buffered.trim() !== "") {
      yield buffered.trim();
    }
  } finally {
    await reader.cancel().catch(() => {}); // ends the HTTP response, whatever stopped the reading
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function toBase64(bytes: string | Uint8Array): string {
  const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
  let binary = "";
  for (const byte of data) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary);
}

function fromBase64(text: string): string {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return decoder.decode(bytes);
}

/** The range end that selects every key starting with prefix: its last byte below 0xff incremented. */
function prefixEnd(prefix: string): Uint8Array {
  const bytes = encoder.encode(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const end = bytes.slice(0, i + 1);
      end[i]! += 1;
      return end;
    }
  }
  return new Uint8Array([0]); // all bytes 0xff: read to the end of the keyspace
}
