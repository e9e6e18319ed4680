import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Whatever etcd (or whatever answers in its place) says ends up in errors,
 * events and logs only through these functions: reduced to etcd's own
 * message fields, cut to a log-line length, and withheld when it quotes a
 * credential. The password and the token of a request are its "secrets".
 */

/** Longest text from etcd shown in a message. */
const maxShownLength = 200;

/**
 * etcd's own error texts (rpctypes) that the client acts on. They are
 * recognised in etcd's raw message, before any text is withheld: a password
 * that happens to contain "user name" must not change what a refusal means.
 */
const knownMessages = {
  authFailed: "etcdserver: authentication failed", // wrong user or password (3.4+), password for a no-password user (3.5+)
  invalidToken: "etcdserver: invalid auth token",
  userEmpty: "etcdserver: user name is empty",
  authOld: "etcdserver: revision of auth store is old",
  compacted: "etcdserver: mvcc: required revision has been compacted", // a read at a revision etcd no longer keeps
} as const;

export type KnownMessage = keyof typeof knownMessages;

/** An error answer from etcd, with etcd's gRPC status code and its sanitised message. */
export class EtcdAnswerError extends Error {
  constructor(
    readonly endpoint: string,
    readonly status: number,
    readonly grpcCode: number | undefined,
    /** Which of etcd's own errors this is, when it is one the client acts on. */
    readonly known: KnownMessage | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** Text from etcd as it may be shown: printable, short, and giving away no secret. */
export function shownText(text: string, secrets: readonly string[]): string {
  const printable = visible(text).trim();
  const shown = printable.length > maxShownLength ? `${printable.slice(0, maxShownLength)}…` : printable;
  // The whole text is checked for a whole secret; what is shown, for any piece of one.
  return secretQuoter(secrets)(text) || revealsSecret(shown, secrets) ? "(withheld: it quoted the credentials)" : shown;
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
  const known = message === undefined ? undefined : knownMessage(message);
  const shown = message === undefined ? `HTTP ${status}` : shownText(message, secrets);
  return new EtcdAnswerError(endpoint, status, code, known, shown);
}

function knownMessage(message: string): KnownMessage | undefined {
  return (Object.keys(knownMessages) as KnownMessage[]).find((name) => message.includes(knownMessages[name]));
}

/**
 * A request that got no answer (refused, reset, TLS, DNS): named with the
 * low-level code that fetch hides in `cause`. For debugging the cause is a
 * sanitised copy of the original error, never the original: a fetch wrapper
 * may hang the Request or its Headers (the token) on it.
 */
export function networkFailure(endpoint: string, error: unknown, secrets: readonly string[]): ConnectError {
  return new ConnectError(
    `etcd ${endpoint}: ${shownText(describeError(error), secrets)}`,
    Code.Unavailable,
    undefined,
    undefined,
    sanitizedError(error, secrets),
  );
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

/** How many causes deep a sanitised copy goes; fetch errors have one or two. */
const maxCauseDepth = 5;
/** Longer texts in an error are not checked but dropped: nothing fetch says is that long. */
const maxCheckedLength = 16 * 1024;

/**
 * A new Error with only the name, message, code and stack of `error`, and
 * its cause copied the same way; undefined for anything else than an Error,
 * and where one of those texts gives away a secret (the chain ends there).
 */
function sanitizedError(error: unknown, secrets: readonly string[], depth = 0): Error | undefined {
  if (!(error instanceof Error) || depth >= maxCauseDepth) {
    return undefined;
  }
  const name = readText(error, "name");
  const message = readText(error, "message");
  const stack = readText(error, "stack");
  const code = readProperty(error, "code");
  const texts = [name, message, stack, typeof code === "string" ? code : ""];
  if (texts.some((text) => text.length > maxCheckedLength || revealsSecret(text, secrets))) {
    return undefined;
  }
  const cause = sanitizedError(readProperty(error, "cause"), secrets, depth + 1);
  const copy = cause === undefined ? new Error(message) : new Error(message, { cause });
  copy.name = name;
  if (stack !== "") {
    copy.stack = stack;
  }
  return typeof code === "string" || typeof code === "number" ? Object.assign(copy, { code }) : copy;
}

/** A property read that survives a throwing getter. */
function readProperty(value: object, name: string): unknown {
  try {
    return (value as Record<string, unknown>)[name];
  } catch {
    return undefined;
  }
}

function readText(value: object, name: string): string {
  const text = readProperty(value, name);
  return typeof text === "string" ? text : "";
}

/**
 * Pieces of a secret this long give it away: text is cut to 200 characters,
 * and an echo cut there (or cut by the proxy) quotes only part of a secret.
 * Shorter secrets count only whole. 8 characters of a random password or
 * token are too many to show; real etcd messages hold none.
 */
const revealingLength = 8;

/**
 * Whether the whole of a secret appears in text, as is or in an encoding an
 * echo may use. Also run on every registry entry: base64 is looked for as
 * the secret's encodings, cheaper than decoding every run of letters.
 */
export function secretQuoter(secrets: readonly string[]): (text: string) => boolean {
  const forms = secrets.filter((secret) => secret !== "").flatMap((secret) => [visible(secret), ...base64Forms(secret)]);
  return (text) => forms.length > 0 && readings(text).some((reading) => forms.some((form) => reading.includes(form)));
}

/** Whether text, in any of its readings, holds a piece of a secret of revealingLength characters (or a whole shorter one). */
function revealsSecret(text: string, secrets: readonly string[]): boolean {
  const pieces = new Set(secrets.filter((secret) => secret !== "").flatMap((secret) => piecesOf(visible(secret))));
  if (pieces.size === 0) {
    return false;
  }
  const lengths = [...new Set([...pieces].map((piece) => piece.length))];
  return [...readings(text), ...unescapedLayers(decodeBase64Runs(text)).map(visible)].some((reading) =>
    lengths.some((length) => {
      for (let i = 0; i + length <= reading.length; i++) {
        if (pieces.has(reading.slice(i, i + length))) {
          return true;
        }
      }
      return false;
    }),
  );
}

function piecesOf(secret: string): string[] {
  if (secret.length <= revealingLength) {
    return [secret];
  }
  return Array.from({ length: secret.length - revealingLength + 1 }, (_, i) => secret.slice(i, i + revealingLength));
}

/** How many layers of JSON string escapes are undone: JSON in JSON in JSON. */
const maxEscapeLayers = 3;

/**
 * Text as it is, and as an echo may have encoded what it quotes: URL
 * encoding (%XX, "+" for a space), each with its layers of JSON string
 * escapes (\u00XX, \" and \\ included) undone one by one. All are compared
 * without control characters, as shownText shows them.
 */
function readings(text: string): string[] {
  const decoded = /[%+]/.test(text) ? [text, decodeUrl(text)] : [text];
  return decoded.flatMap(unescapedLayers).map(visible);
}

function unescapedLayers(text: string): string[] {
  const layers = [text];
  for (let layer = text; layers.length <= maxEscapeLayers && layer.includes("\\"); ) {
    layer = unescapeJson(layer);
    layers.push(layer);
  }
  return layers;
}

function unescapeJson(text: string): string {
  const simple: Record<string, string> = { b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
  return text.replace(/\\(?:u([0-9a-fA-F]{4})|(.))/gs, (_, hex: string | undefined, char: string) =>
    hex !== undefined ? String.fromCharCode(Number.parseInt(hex, 16)) : (simple[char] ?? char),
  );
}

function decodeUrl(text: string): string {
  return text.replace(/\+/g, " ").replace(/(?:%[0-9a-fA-F]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run; // not UTF-8: left as it is
    }
  });
}

/**
 * A secret as it reads inside base64 (either alphabet), at each of the 3
 * byte offsets it may start at, without the characters its neighbours share.
 * Forms shorter than revealingLength would match by chance, and are left out.
 */
function base64Forms(secret: string): string[] {
  const bytes = new TextEncoder().encode(secret);
  return [0, 1, 2].flatMap((offset) => {
    let binary = "\0".repeat(offset);
    for (const byte of bytes) {
      binary += String.fromCharCode(byte);
    }
    // character k holds bits 6k to 6k+5: the secret's own from k = ⌈8·offset/6⌉ until bit 8·length
    const form = btoa(binary).slice(Math.ceil((offset * 4) / 3), Math.floor((binary.length * 4) / 3));
    return form.length < revealingLength ? [] : [form, form.replace(/\+/g, "-").replace(/\//g, "_")];
  });
}

/** Runs of base64 (either alphabet), each decoded from each of the 4 offsets as UTF-8, joined by spaces. */
function decodeBase64Runs(text: string): string {
  const decoder = new TextDecoder();
  const decode = (run: string, offset: number) => {
    const aligned = run.slice(offset, offset + Math.floor((run.length - offset) / 4) * 4).replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(aligned);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i); // a loop: Uint8Array.from with a map function is 10× slower
    }
    return decoder.decode(bytes);
  };
  return (text.match(/[A-Za-z0-9+/_-]{12,}/g) ?? []).flatMap((run) => [0, 1, 2, 3].map((offset) => decode(run, offset))).join(" ");
}

/** Control characters (and line separators) as one space each run: what a log line may hold. */
function visible(text: string): string {
  return !/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(text) ? text : text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, " ");
}

function parsedObject(body: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(body);
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
