import { Code, ConnectError } from "@connectrpc/connect";
import { BodyTooLarge, readBoundedText } from "./bounded-body.js";
import { MalformedAnswer, parseJson } from "./etcd-answer.js";
import { answerError, EtcdAnswerError, networkFailure } from "./etcd-errors.js";

/** One POST to etcd's JSON gateway. */
export interface EtcdRequest {
  readonly endpoint: string;
  readonly path: string;
  readonly body: unknown;
  /** Sent raw as Authorization, as etcd wants it (not "Bearer"). */
  readonly token?: string | undefined;
  /** Strings no error may quote: the password and the token. */
  readonly secrets: readonly string[];
}

/** How many bytes an answer may have, and the option that raises the limit (none for fixed limits). */
export interface AnswerLimit {
  readonly bytes: number;
  readonly option?: string;
  /** For one page of a read in pages: the limit of the whole read, and what came before this page. */
  readonly whole?: { readonly bytes: number; readonly keys: number; readonly pages: number };
}

export interface RequestSettings {
  readonly fetch: typeof globalThis.fetch;
  readonly requestTimeoutMs: number;
}

/** Error answers and authentication answers are small; anything bigger is not etcd. */
export const smallAnswer: AnswerLimit = { bytes: 64 * 1024 };

/** Sends a request and checks its JSON answer with `parse`, read within `limit` and the request timeout. */
export async function postJson<T>(
  settings: RequestSettings,
  request: EtcdRequest,
  limit: AnswerLimit,
  signal: AbortSignal,
  parse: (answer: unknown, bytes: number) => T,
): Promise<T> {
  const deadline = linkedTimeout(signal, settings.requestTimeoutMs, request.endpoint);
  try {
    const response = await send(settings.fetch, request, deadline.signal);
    const text = await readBoundedText(response, limit.bytes);
    // etcd's JSON is ASCII (keys and values are base64): its length is its size in bytes
    return parse(parseJson(text, limit.bytes), text.length);
  } catch (error) {
    throw deadline.signal.aborted ? deadline.signal.reason : answerFailure(request, limit, error);
  } finally {
    deadline.cleanup();
  }
}

/**
 * Sends a request; resolves with a 2xx response whose body is still unread.
 * Redirects are not followed (a redirect target would get the password and
 * could answer in etcd's place) but refused: `redirect: "manual"` rather than
 * "error", which Cloudflare Workers reject.
 */
export async function send(fetchFn: typeof globalThis.fetch, request: EtcdRequest, signal: AbortSignal): Promise<Response> {
  const { endpoint, path, token, secrets } = request;
  let response: Response;
  try {
    response = await fetchFn(`${endpoint}${path}`, {
      method: "POST",
      headers: token === undefined ? { "content-type": "application/json" } : { "content-type": "application/json", authorization: token },
      body: JSON.stringify(request.body),
      redirect: "manual",
      signal,
    });
  } catch (error) {
    throw signal.aborted ? signal.reason : networkFailure(endpoint, error, secrets);
  }
  if (response.type === "opaqueredirect" || (response.status >= 300 && response.status < 400)) {
    await response.body?.cancel().catch(() => {});
    // A browser's opaque redirect hides its status (0)
    const status = response.status === 0 ? "" : ` (HTTP ${response.status})`;
    throw new ConnectError(
      `etcd ${endpoint} answered ${path} with a redirect${status}; redirects are refused, so that no credentials go elsewhere: configure the URL etcd itself serves`,
      Code.Unavailable,
    );
  }
  if (!response.ok) {
    const body = await readBoundedText(response, smallAnswer.bytes).catch(() => "");
    throw answerError(endpoint, response.status, body, secrets);
  }
  return response;
}

/** An answer over its limit, malformed, or cut off, as a ConnectError naming the endpoint. */
export function answerFailure(request: EtcdRequest, limit: AnswerLimit, error: unknown): unknown {
  const { endpoint, path, secrets } = request;
  if (error instanceof ConnectError || error instanceof EtcdAnswerError) {
    return error;
  }
  if (error instanceof BodyTooLarge) {
    const raise = limit.option === undefined ? "more is not expected from etcd" : `raise the etcdDiscovery option ${limit.option} if etcd really sends that much`;
    const { whole } = limit;
    const size =
      whole === undefined || whole.pages === 0
        ? `more than ${limit.bytes} bytes`
        : `more than ${whole.bytes} bytes in all (${whole.keys} keys in the ${whole.pages} pages before this one)`;
    return new ConnectError(`etcd ${endpoint} answered ${path} with ${size}: ${raise}`, Code.ResourceExhausted);
  }
  if (error instanceof MalformedAnswer) {
    return new ConnectError(`etcd ${endpoint} answered ${path} with an answer that ${error.message}`, Code.Internal);
  }
  return networkFailure(endpoint, error, secrets); // the connection broke while the answer was read
}

/** A signal that aborts with the parent, or with DeadlineExceeded after timeoutMs. */
export function linkedTimeout(parent: AbortSignal, timeoutMs: number, endpoint: string) {
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
