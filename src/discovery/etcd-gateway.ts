import { Code, ConnectError } from "@connectrpc/connect";
import { redactUrl } from "../redact.js";
import { boundedLines } from "./bounded-body.js";
import { compareKeys, type RegistryEvent } from "./decode.js";
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
   * Reads every key under a prefix, in pages handed to `sink` in key order;
   * resolves with the revision read. Each page starts with the endpoint that
   * answered last; the next is asked when one fails or is silent for hedgeAfterMs.
   */
  rangePrefix(prefix: string, signal: AbortSignal, sink: PageSink): Promise<number>;
  /**
   * Watches a prefix from the revision after `afterRevision` on the endpoint
   * that answered last, telling the listener for every batch of events, until
   * the signal aborts (resolves) or the watch fails (rejects; a compacted
   * start revision is a failure too).
   */
  watchPrefix(prefix: string, afterRevision: number, signal: AbortSignal, listener: GatewayWatchListener): Promise<void>;
}

/** What a watch of the gateway tells. */
export interface GatewayWatchListener {
  /** The watch is established. */
  opened(): void;
  /** Keys under the prefix changed: these events, or, without them, too many to tell (read afresh). */
  changed(events?: readonly RegistryEvent[]): void;
}

/** Where the pages of a read go. */
export interface PageSink {
  /** A read starts (again, when etcd compacted the revision of the pages before): forget any page handed before. */
  start(): void;
  /** The next page's entries, in key order; the next page is fetched meanwhile. */
  page(kvs: RangeAnswer["kvs"]): Promise<void>;
}

/** Keys per page of a registry read: etcd's answer to one page is parsed in one go, which this keeps to about a ms. */
export const pageKeys = 500;

/** How many times a read in pages starts over when etcd compacted its revision between two pages. */
const compactedReadAttempts = 3;

/**
 * Most pages of one read: 500,000 keys, 25 times a 20,000-instance fleet.
 * Something in etcd's place answering a key a page with `more` forever
 * would otherwise keep one read going for as long as it likes.
 */
export const maxPagesPerRead = 1_000;

/** A whole read in pages ends within this many request timeouts (requestTimeoutMs bounds each page). */
export const readTimeouts = 4;

interface RangePage {
  readonly prefix: string;
  readonly from: Uint8Array | string;
  readonly revision: number | undefined;
  readonly limit: AnswerLimit;
}

/**
 * The refusals of a page because etcd no longer keeps the revision the read
 * is at. A set, not a subclass: ConnectError's instanceof accepts any ConnectError.
 */
const compactedReads = new WeakSet<object>();
const isCompacted = (error: unknown) => typeof error === "object" && error !== null && compactedReads.has(error);

/** The smallest key after `key`: the key with a zero byte appended. */
function nextKey(key: Uint8Array): Uint8Array {
  const next = new Uint8Array(key.length + 1);
  next.set(key);
  return next;
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

  /** One page of a range: at most `pageKeys` keys from `from`, at `revision` when given (later pages of one read). */
  async function readRange(endpoint: string, page: RangePage, signal: AbortSignal): Promise<RangeAnswer & { bytes: number }> {
    const body = {
      key: toBase64(page.from),
      range_end: toBase64(prefixEnd(page.prefix)),
      limit: String(pageKeys),
      ...(page.revision !== undefined && { revision: String(page.revision) }),
    };
    const request = await authorized(endpoint, "/v3/kv/range", body, signal);
    const answer = await postJson(settings, request, page.limit, signal, (parsed, bytes) => ({ ...rangeAnswer(parsed), bytes }));
    // Keys and values reach events and logs (skipped entries); only an echo of
    // the request holds the token. Nothing in such an answer can be trusted.
    const quotesSecret = secretQuoter(request.secrets);
    if (answer.kvs.some(({ key, value }) => quotesSecret(key) || quotesSecret(value))) {
      throw new ConnectError(`etcd ${endpoint} answered ${request.path} with entries that quote the credentials it was sent: refused, as entries reach events and logs`, Code.Internal);
    }
    const outside = answer.kvs.findIndex(({ key }) => !key.startsWith(page.prefix));
    if (outside >= 0) {
      throw new ConnectError(`etcd ${endpoint} answered ${request.path} with kvs[${outside}] outside the prefix "${page.prefix}" it was asked for: refused`, Code.Internal);
    }
    if (answer.more && answer.kvs.length === 0) {
      throw new ConnectError(`etcd ${endpoint} answered ${request.path} that more keys follow, but sent none: refused`, Code.Internal);
    }
    return answer;
  }

  async function rangeAt(endpoint: string, page: RangePage, signal: AbortSignal): Promise<RangeAnswer & { bytes: number }> {
    try {
      return await readRange(endpoint, page, signal);
    } catch (error) {
      if (auth === undefined || !tokenRejected(error)) {
        throw explainRefusal(error, endpoint, page.prefix, auth);
      }
    }
    // The token expired (etcd drops idle simple tokens after 300 s), or auth was
    // enabled after it was found off: authenticate again, once.
    tokens.drop(endpoint);
    try {
      return await readRange(endpoint, page, signal);
    } catch (error) {
      throw explainRefusal(error, endpoint, page.prefix, auth);
    }
  }

  /** One page, starting with the endpoint that answered last; a hung one is hedged, not waited out. */
  async function hedgedPage(page: RangePage, signal: AbortSignal): Promise<RangeAnswer & { bytes: number }> {
    const first = preferred;
    const at = (i: number) => (first + i) % endpoints.length;
    try {
      const { value, index } = await hedged(endpoints.length, (i, attempt) => rangeAt(endpoints[at(i)]!, page, attempt), {
        signal,
        hedgeAfterMs,
        isFinal: (error) =>
          isCompacted(error) || (error instanceof ConnectError && (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied)),
      });
      preferred = at(index);
      return value;
    } catch (error) {
      if (error instanceof HedgeFailure) {
        const compacted = error.failures.find((failure) => isCompacted(failure.error));
        throw compacted?.error ?? everyEndpointFailed(error, (i) => endpoints[at(i)]!);
      }
      throw error;
    }
  }

  /**
   * Every key under a prefix, in pages of `pageKeys`: the first page sets the
   * revision, the others are read at it, so the pages make one consistent
   * read. Each page is parsed on its own (a short block of the event loop,
   * not one of a whole 20,000-instance registry) and handed to the sink
   * while the next is fetched; together they count against maxResponseBytes.
   */
  async function readPages(prefix: string, signal: AbortSignal, sink: PageSink): Promise<number> {
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal.reason);
    signal.addEventListener("abort", onAbort);
    if (signal.aborted) {
      onAbort();
    }
    const readMs = readTimeouts * options.requestTimeoutMs;
    const overdue = new ConnectError(
      `the read of "${prefix}" in pages did not end within ${readMs} ms (${readTimeouts} × requestTimeoutMs): refused`,
      Code.DeadlineExceeded,
    );
    const deadline = setTimeout(() => controller.abort(overdue), readMs);
    let ahead: Promise<RangeAnswer & { bytes: number }> | undefined;
    try {
      sink.start();
      let revision: number | undefined;
      let last: string | undefined;
      let keys = 0;
      let bytes = 0;
      const fetchPage = (from: Uint8Array | string, pages: number) => {
        const limit: AnswerLimit =
          pages === 0 ? rangeLimit : { ...rangeLimit, bytes: options.maxResponseBytes - bytes, whole: { bytes: options.maxResponseBytes, keys, pages } };
        return hedgedPage({ prefix, from, revision, limit }, controller.signal);
      };
      ahead = fetchPage(prefix, 0);
      for (let pages = 1; ; pages++) {
        const answer = await ahead!;
        ahead = undefined;
        bytes += answer.bytes;
        revision ??= answer.revision;
        // Keys that are not UTF-8 have no text to order by: skipped, they are left out here
        // (the next page starts after the bytes of the last key, whatever it is).
        const readable = answer.kvs.filter((kv) => kv.unreadable === undefined);
        if (last !== undefined && readable.length > 0 && compareKeys(readable[0]!.key, last) <= 0) {
          throw new ConnectError(`etcd answered a page of "${prefix}" that does not follow the one before it: refused`, Code.Internal);
        }
        keys += answer.kvs.length;
        last = readable.at(-1)?.key ?? last;
        const more = answer.more && answer.lastKey !== undefined;
        if (more && pages >= maxPagesPerRead) {
          throw new ConnectError(
            `etcd answered more than ${maxPagesPerRead} pages of "${prefix}" (${keys} keys so far, ${pageKeys} asked a page): refused`,
            Code.ResourceExhausted,
          );
        }
        if (more) {
          ahead = fetchPage(nextKey(answer.lastKey!), pages);
          ahead.catch(() => {}); // awaited below, unless the sink fails first
        }
        await sink.page(answer.kvs);
        if (!more) {
          return revision;
        }
      }
    } catch (error) {
      throw controller.signal.reason === overdue && !signal.aborted ? overdue : error;
    } finally {
      clearTimeout(deadline);
      signal.removeEventListener("abort", onAbort);
      if (ahead !== undefined) {
        controller.abort(new ConnectError("the read was given up", Code.Canceled));
      }
    }
  }

  async function watchPrefix(prefix: string, afterRevision: number, signal: AbortSignal, listener: GatewayWatchListener): Promise<void> {
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
      const quotesSecret = secretQuoter(request.secrets);
      /** A response etcd split into lines (fragment): too big a change to apply, so it is read afresh at its last line. */
      let fragmented = false;
      /** Bytes of the lines of the response being split, so far: one response of etcd is at most a read's worth. */
      let fragmentBytes = 0;
      /** The highest header revision of the lines so far: etcd's revision never goes back within a watch. */
      let seen = 0;
      for await (const line of boundedLines(response.body ?? new ReadableStream(), watchLimit.bytes)) {
        const { created, revision, events, fragment, ended } = watchLine(parseJson(line, watchLimit.bytes));
        if (ended !== undefined) {
          throw new ConnectError(`etcd ${endpoint} ended the watch of "${prefix}": ${shownText(ended, request.secrets)}`, Code.Unavailable);
        }
        if (revision !== undefined) {
          if (revision < seen) {
            throw new ConnectError(`etcd ${endpoint} sent a line of the watch of "${prefix}" at revision ${revision}, below the ${seen} of a line before: refused`, Code.Internal);
          }
          seen = revision;
          // Opened after the revision read: an etcd whose revision is below it was rebuilt (or a
          // change it sent was not its own), so the registry is read again until it is believed.
          if (created && revision < afterRevision) {
            throw new ConnectError(`etcd ${endpoint} is at revision ${revision}, below the ${afterRevision} read: the registry is read again`, Code.Unavailable);
          }
        }
        fragmentBytes = fragment ? fragmentBytes + line.length : 0;
        if (fragmentBytes > options.maxResponseBytes) {
          throw new ConnectError(
            `etcd ${endpoint} split one change of "${prefix}" into lines of more than ${options.maxResponseBytes} bytes: raise the etcdDiscovery option maxResponseBytes if etcd really sends that much`,
            Code.ResourceExhausted,
          );
        }
        // As in a range answer: keys and values reach events and logs, and only keys under the prefix are the service's.
        if (events.some((event) => quotesSecret(event.key) || (event.kind === "put" && quotesSecret(event.value)))) {
          throw new ConnectError(`etcd ${endpoint} sent changes of "${prefix}" that quote the credentials it was sent: refused, as entries reach events and logs`, Code.Internal);
        }
        if (events.some((event) => !event.key.startsWith(prefix))) {
          throw new ConnectError(`etcd ${endpoint} sent a change of a key outside the prefix "${prefix}" it watches: refused`, Code.Internal);
        }
        if (created) {
          listener.opened();
        }
        if (fragment) {
          fragmented ||= events.length > 0;
        } else if (fragmented) {
          fragmented = false;
          listener.changed();
        } else if (events.length > 0) {
          listener.changed(events);
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
    async rangePrefix(prefix, signal, sink) {
      for (let attempt = 1; ; attempt++) {
        try {
          return await readPages(prefix, signal, sink);
        } catch (error) {
          // compacted between two pages: the read starts over at the revision etcd has now
          if (!isCompacted(error) || attempt >= compactedReadAttempts) {
            throw error;
          }
        }
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
  if (error.known === "compacted") {
    const compacted = new ConnectError(`etcd ${endpoint} compacted the revision of "${prefix}" while it was read in pages`, Code.Unavailable);
    compactedReads.add(compacted);
    return compacted;
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
