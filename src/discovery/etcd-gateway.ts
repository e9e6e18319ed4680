import { Code, ConnectError } from "@connectrpc/connect";
import { redactUrl } from "../redact.js";
import { boundedLines } from "./bounded-body.js";
import type { WatchListener } from "./discovery.js";
import { parseJson, prefixEnd, rangeAnswer, toBase64, watchLine, type RangeAnswer } from "./etcd-answer.js";
import { createTokens, type EtcdAuth } from "./etcd-auth.js";
import { EtcdAnswerError, describeError, secretQuoter, shownText } from "./etcd-errors.js";
import { answerFailure, linkedTimeout, postJson, send, type AnswerLimit, type EtcdRequest } from "./etcd-request.js";
import { hedged, HedgeFailure } from "./hedge.js";

export type { EtcdAuth } from "./etcd-auth.js";

export interface EtcdGatewayOptions {
  readonly endpoints: readonly string[];
  readonly auth?: EtcdAuth | undefined;
  readonly fetch?: typeof globalThis.fetch | undefined;
  readonly requestTimeoutMs: number;
  /** How long a read waits for one endpoint before asking the next one too. */
  readonly hedgeAfterMs: number;
  /** Largest range answer read, in bytes. */
  readonly maxResponseBytes: number;
  /** Longest watch response line read, in bytes. */
  readonly maxWatchLineBytes: number;
}

/** A client of etcd's v3 JSON gateway: plain fetch, so it runs on every runtime. */
export interface EtcdGateway {
  /** Endpoint base URLs, without credentials. */
  readonly endpoints: readonly string[];
  /**
   * Reads every key under a prefix, starting with the endpoint that answered
   * last; the next is asked when one fails or is silent for hedgeAfterMs.
   */
  rangePrefix(prefix: string, signal: AbortSignal): Promise<RangeAnswer>;
  /**
   * Watches a prefix from the revision after `afterRevision` on the endpoint
   * that answered last, telling the listener for every batch of events, until
   * the signal aborts (resolves) or the watch fails (rejects; a compacted
   * start revision is a failure too).
   */
  watchPrefix(prefix: string, afterRevision: number, signal: AbortSignal, listener: WatchListener): Promise<void>;
}

const grpcInvalidArgument = 3;
const grpcPermissionDenied = 7;
const grpcUnauthenticated = 16;

export function createEtcdGateway(options: EtcdGatewayOptions): EtcdGateway {
  if (options.endpoints.length === 0) {
    throw new ConnectError("etcdDiscovery needs at least one endpoint", Code.InvalidArgument);
  }
  const endpoints = options.endpoints.map(normalizeEndpoint);
  const fetchFn = options.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => globalThis.fetch(input, init));
  const settings = { fetch: fetchFn, requestTimeoutMs: options.requestTimeoutMs };
  const { auth, hedgeAfterMs } = options;
  const rangeLimit: AnswerLimit = { bytes: options.maxResponseBytes, option: "maxResponseBytes" };
  const watchLimit: AnswerLimit = { bytes: options.maxWatchLineBytes, option: "maxWatchLineBytes" };
  const tokens = createTokens(auth, settings);
  let preferred = 0;

  async function authorized(endpoint: string, path: string, body: unknown, signal: AbortSignal): Promise<EtcdRequest> {
    const token = await tokens.get(endpoint, signal);
    return { endpoint, path, body, token, secrets: token === undefined ? tokens.secrets : [...tokens.secrets, token] };
  }

  async function readRange(endpoint: string, prefix: string, signal: AbortSignal): Promise<RangeAnswer> {
    const body = { key: toBase64(prefix), range_end: toBase64(prefixEnd(prefix)) };
    const request = await authorized(endpoint, "/v3/kv/range", body, signal);
    const answer = await postJson(settings, request, rangeLimit, signal, rangeAnswer);
    // Keys and values reach events and logs (skipped entries); only an echo of
    // the request holds the token. Nothing in such an answer can be trusted.
    const quotesSecret = secretQuoter(request.secrets);
    if (answer.kvs.some(({ key, value }) => quotesSecret(key) || quotesSecret(value))) {
      throw new ConnectError(`etcd ${endpoint} answered ${request.path} with entries that quote the credentials it was sent: refused, as entries reach events and logs`, Code.Internal);
    }
    return answer;
  }

  async function rangeAt(endpoint: string, prefix: string, signal: AbortSignal): Promise<RangeAnswer> {
    try {
      return await readRange(endpoint, prefix, signal);
    } catch (error) {
      if (auth === undefined || !tokenRejected(error)) {
        throw explainRefusal(error, endpoint, prefix, auth);
      }
    }
    // The token expired (etcd drops idle simple tokens after 300 s), or auth was
    // enabled after it was found off: authenticate again, once.
    tokens.drop(endpoint);
    try {
      return await readRange(endpoint, prefix, signal);
    } catch (error) {
      throw explainRefusal(error, endpoint, prefix, auth);
    }
  }

  async function watchPrefix(prefix: string, afterRevision: number, signal: AbortSignal, listener: WatchListener): Promise<void> {
    const endpoint = endpoints[preferred]!;
    const deadline = linkedTimeout(signal, options.requestTimeoutMs, endpoint);
    // fragment: etcd splits a huge batch of events into lines of about its
    // --max-request-bytes (1.5 MiB by default), well within maxWatchLineBytes.
    const body = {
      create_request: { key: toBase64(prefix), range_end: toBase64(prefixEnd(prefix)), start_revision: String(afterRevision + 1), fragment: true },
    };
    let request: EtcdRequest = { endpoint, path: "/v3/watch", body, secrets: tokens.secrets };
    try {
      request = await authorized(endpoint, "/v3/watch", body, deadline.signal);
      const response = await send(fetchFn, request, deadline.signal);
      deadline.stopTimer();
      for await (const line of boundedLines(response.body ?? new ReadableStream(), watchLimit.bytes)) {
        const { created, changed, ended } = watchLine(parseJson(line, watchLimit.bytes));
        if (ended !== undefined) {
          throw new ConnectError(`etcd ${endpoint} ended the watch of "${prefix}": ${shownText(ended, request.secrets)}`, Code.Unavailable);
        }
        if (created) {
          listener.opened();
        }
        if (changed) {
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
      throw deadline.signal.aborted ? deadline.signal.reason : watchFailure(request, error);
    } finally {
      deadline.cleanup();
    }
  }

  function watchFailure(request: EtcdRequest, error: unknown): unknown {
    if (!(error instanceof EtcdAnswerError)) {
      return answerFailure(request, watchLimit, error);
    }
    if (error.grpcCode === grpcUnauthenticated) {
      tokens.drop(request.endpoint); // expired: the next watch authenticates again
    }
    return new ConnectError(`etcd ${request.endpoint} refused to watch: ${error.message}`, Code.Unavailable);
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
        throw error instanceof HedgeFailure ? everyEndpointFailed(error, (i) => endpoints[at(i)]!) : error;
      }
    },
  };
}

/** Whether etcd refused the token: expired, or issued before auth was enabled or changed. */
function tokenRejected(error: unknown): boolean {
  return (
    error instanceof EtcdAnswerError &&
    (error.grpcCode === grpcUnauthenticated || error.known === "userEmpty" || (error.grpcCode === grpcInvalidArgument && error.known === "authOld"))
  );
}

/** etcd's refusals of a read, said in terms of the options that fix them. */
function explainRefusal(error: unknown, endpoint: string, prefix: string, auth: EtcdAuth | undefined): unknown {
  if (!(error instanceof EtcdAnswerError)) {
    return error;
  }
  if (auth === undefined && error.known === "userEmpty") {
    return new ConnectError(`etcd ${endpoint} requires authentication: pass the auth option`, Code.Unauthenticated);
  }
  if (error.grpcCode === grpcPermissionDenied) {
    const user = auth === undefined ? "an anonymous client" : `user "${auth.username}"`;
    return new ConnectError(`etcd ${endpoint} does not let ${user} read "${prefix}"`, Code.PermissionDenied);
  }
  return new ConnectError(`etcd ${endpoint} refused the read: ${error.message}`, Code.Unavailable);
}

/** One error for all endpoints: their common code (all too large, all malformed…), else Unavailable. */
function everyEndpointFailed(failure: HedgeFailure, endpointOf: (index: number) => string): ConnectError {
  const codes = new Set(failure.failures.map(({ error }) => (error instanceof ConnectError ? error.code : Code.Unavailable)));
  const code = codes.size === 1 ? [...codes][0]! : Code.Unavailable;
  const reasons = failure.failures.map(({ index, error }) => `${endpointOf(index)}: ${withoutEndpoint(describeError(error), endpointOf(index))}`);
  return new ConnectError(`every etcd endpoint failed (${reasons.join("; ")})`, code, undefined, undefined, failure.failures.at(-1)?.error);
}

/** "etcd http://a:2379 did not answer" listed under http://a:2379 reads "did not answer". */
function withoutEndpoint(message: string, endpoint: string): string {
  const prefix = [`etcd ${endpoint}: `, `etcd ${endpoint} `].find((start) => message.startsWith(start));
  return prefix === undefined ? message : message.slice(prefix.length);
}

/**
 * Validates an endpoint URL and returns it without a trailing slash. An "@"
 * anywhere is refused: `http://user:pa#ss@host` parses as host "user" with
 * the rest as a fragment, so only the raw text shows that it holds credentials.
 */
function normalizeEndpoint(endpoint: string, index: number): string {
  const which = `etcd endpoint ${index + 1} (${redactUrl(endpoint)})`;
  if (endpoint.includes("@")) {
    throw new ConnectError(`${which} carries credentials: pass them as the auth option instead`, Code.InvalidArgument);
  }
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ConnectError(`${which} is not a URL like http://127.0.0.1:2379`, Code.InvalidArgument);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConnectError(`${which} must use http or https`, Code.InvalidArgument);
  }
  return `${url.origin}${url.pathname}`.replace(/\/+$/, "");
}
