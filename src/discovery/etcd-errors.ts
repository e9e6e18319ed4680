import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Whatever etcd (or whatever answers in its place) says ends up in errors,
 * events and logs only through these functions: reduced to etcd's own
 * message fields, cut to a log-line length, and withheld when it quotes a
 * credential. The password and the token of a request are its "secrets".
 */

/** Longest text from etcd shown in a message. */
const maxShownLength = 200;

/** An error answer from etcd, with etcd's gRPC status code and its sanitised message. */
export class EtcdAnswerError extends Error {
  constructor(
    readonly endpoint: string,
    readonly status: number,
    readonly grpcCode: number | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** Text from etcd as it may be shown: printable, short, and quoting no secret. */
export function shownText(text: string, secrets: readonly string[]): string {
  if (mentions(text, secrets)) {
    return "(withheld: it quoted the credentials)";
  }
  const printable = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, " ").trim();
  return printable.length > maxShownLength ? `${printable.slice(0, maxShownLength)}…` : printable;
}

/**
 * An error answer reduced to etcd's own fields: `message` or `error` (a
 * string in etcd 3.4/3.5, an object in 3.6's stream errors) and `code`.
 * The raw body is never shown: an echoing proxy would put the request in it.
 */
export function answerError(endpoint: string, status: number, body: string, secrets: readonly string[]): EtcdAnswerError {
  const fields = parsedObject(body);
  const nested = typeof fields.error === "object" && fields.error !== null ? (fields.error as Record<string, unknown>) : {};
  const message = [fields.message, fields.error, nested.message].find((text): text is string => typeof text === "string" && text !== "");
  const code = [fields.code, nested.code].find((value): value is number => Number.isInteger(value));
  const shown = message === undefined ? `HTTP ${status}` : shownText(message, secrets);
  return new EtcdAnswerError(endpoint, status, code, shown);
}

/**
 * A request that got no answer (refused, reset, TLS, DNS): named with the
 * low-level code that fetch hides in `cause`. The original error stays the
 * cause for debugging, unless something in it quotes a secret.
 */
export function networkFailure(endpoint: string, error: unknown, secrets: readonly string[]): ConnectError {
  const cause = mentions(error, secrets) ? undefined : error;
  return new ConnectError(`etcd ${endpoint}: ${shownText(describeError(error), secrets)}`, Code.Unavailable, undefined, undefined, cause);
}

/** Names a failure with its low-level cause (fetch hides "ECONNREFUSED" in `cause`). */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) {
    return String(error);
  }
  const cause = error.cause as { code?: unknown; message?: unknown } | undefined;
  const detail = typeof cause?.code === "string" ? cause.code : typeof cause?.message === "string" ? cause.message : undefined;
  const message = error instanceof ConnectError ? error.rawMessage : error.message;
  return detail === undefined || message.includes(detail) ? message : `${message} (${detail})`;
}

/** Whether a secret appears in a value: a string, or an error with its causes and properties (enumerable or not). */
function mentions(value: unknown, secrets: readonly string[], seen = new Set<unknown>()): boolean {
  if (typeof value === "string") {
    return secrets.some((secret) => secret !== "" && value.includes(secret));
  }
  if (typeof value !== "object" || value === null || seen.has(value)) {
    return false;
  }
  if (seen.size >= 100) {
    return true; // too big to check: assume the worst
  }
  seen.add(value);
  return Object.getOwnPropertyNames(value)
    .concat("message", "cause")
    .some((name) => mentions(readProperty(value, name), secrets, seen));
}

function readProperty(value: object, name: string): unknown {
  try {
    return (value as Record<string, unknown>)[name];
  } catch {
    return undefined;
  }
}

function parsedObject(body: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(body);
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
