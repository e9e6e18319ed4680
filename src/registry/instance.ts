import type { Endpoint } from "./endpoint.js";
import { quote } from "./host.js";

/** A registered service instance, decoded and validated. */
export interface Instance {
  /** The registry key it was read from. */
  readonly key: string;
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Every usable endpoint, in registration order. */
  readonly endpoints: readonly Endpoint[];
}

/**
 * What a registry value describes, before validation: the shape of kratos'
 * `registry.ServiceInstance`. Custom decoders return this.
 */
export interface InstanceInit {
  readonly id?: string;
  readonly name?: string;
  readonly version?: string;
  readonly metadata?: Readonly<Record<string, string>> | null;
  /** URLs such as "grpc://10.0.0.7:9000" or "http://[::1]:8000". */
  readonly endpoints: readonly string[];
}

/** A registry entry that was not used, and why. */
export interface SkippedEntry {
  readonly key: string;
  readonly reason: string;
}

/** An instance may list at most this many endpoints: a bound on the work a hostile value (or a Proxy) can cause. */
const maxEndpoints = 100;

/**
 * Reads what a decoder returned into a fresh, plain InstanceInit, checking
 * every field: decoders are user code and may return anything (null, a
 * number, getters that throw, a Proxy). Returns the reason as a string when
 * it is not an instance. Metadata is copied into a fresh object without a
 * prototype, so a "__proto__" key is only a key.
 */
export function readInstanceInit(value: unknown): InstanceInit | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `not an instance but ${value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`}`;
  }
  try {
    const { id, name, version, metadata, endpoints } = value as Record<string, unknown>;
    const problem = wrongType("id", id) ?? wrongType("name", name) ?? wrongType("version", version);
    if (problem !== undefined) {
      return problem;
    }
    const copied = copyEndpoints(endpoints);
    const map = metadata === undefined || metadata === null ? null : copyStringMap(metadata);
    if (typeof copied === "string" || typeof map === "string") {
      return typeof copied === "string" ? copied : (map as string);
    }
    return { id: id as string | undefined, name: name as string | undefined, version: version as string | undefined, metadata: map, endpoints: copied };
  } catch (error) {
    return `reading the instance failed: ${describeError(error)}`;
  }
}

function wrongType(field: string, value: unknown): string | undefined {
  return value === undefined || typeof value === "string" ? undefined : `${field} is not a string`;
}

function copyEndpoints(value: unknown): string[] | string {
  if (!Array.isArray(value)) {
    return "endpoints is not a list of strings";
  }
  // read once: a Proxy may answer a second read with a length past the bound
  const length: unknown = value.length;
  if (typeof length !== "number" || !Number.isInteger(length) || length < 0) {
    return "endpoints is not a list of strings";
  }
  if (length > maxEndpoints) {
    return `more than ${maxEndpoints} endpoints`;
  }
  const copy: unknown[] = Array.from({ length }, (_, i) => value[i]);
  return copy.every((e): e is string => typeof e === "string") ? copy : "endpoints is not a list of strings";
}

/** A frozen, prototype-free copy of a map of strings, or the reason it is not one. */
export function copyStringMap(value: unknown): Readonly<Record<string, string>> | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "metadata is not a map of strings";
  }
  const copy: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const key of Object.keys(value)) {
    const entry: unknown = (value as Record<string, unknown>)[key];
    if (typeof entry !== "string") {
      return "metadata is not a map of strings";
    }
    copy[key] = entry;
  }
  return Object.freeze(copy);
}

/**
 * A thrown value for a reason; never throws, whatever was thrown. Messages
 * often quote their input (V8's JSON.parse quotes the text it failed on), and
 * a decoder's input is a registry value that may hold a password, so the
 * message is shown only as far as it cannot be quoting one (see shownMessage);
 * otherwise only the error's name is.
 */
export function describeError(error: unknown): string {
  try {
    const message = shownMessage(String(error instanceof Error ? error.message : error));
    return message ?? `${errorName(error)} (its message is not shown: it may quote a secret)`;
  } catch {
    return "(an error that cannot be shown)";
  }
}

/** Longest message shown: a decoder may throw megabytes. */
const maxMessageLength = 200;

/**
 * The message with every quoted fragment replaced by "…", escaped and cut
 * short; undefined when it still holds a quote mark (a quotation never closed,
 * or cut short here), an "@" or a "://": what is left may be a credential.
 */
function shownMessage(message: string): string | undefined {
  const pieces = message.slice(0, maxMessageLength).split(/"[^"]*"|'[^']*'|`[^`]*`/);
  if (pieces.some((piece) => /["'`@]|:\/\//.test(piece))) {
    return undefined;
  }
  const more = message.length > maxMessageLength ? "…" : "";
  // escaped, but without quote marks: the message reads as prose
  return `${pieces.map((piece) => quote(piece, maxMessageLength).slice(1, -1)).join("…")}${more}`;
}

/** "TypeError" and the like; a name that is not an identifier (or not a string) is not shown. */
function errorName(error: unknown): string {
  if (!(error instanceof Error)) {
    return `a thrown ${typeof error}`;
  }
  const name: unknown = error.name;
  return typeof name === "string" && /^[A-Za-z_$][\w$]{0,39}$/.test(name) ? name : "an error";
}
