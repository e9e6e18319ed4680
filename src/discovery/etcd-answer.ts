/**
 * What etcd's JSON gateway answers, checked before it is used: the answer
 * may come from something that is not etcd. A malformed answer fails the
 * whole read (MalformedAnswer) rather than skipping parts of it: etcd never
 * sends one, so nothing in it can be trusted, and the cache keeps serving
 * the last good snapshot meanwhile — better than a partial registry.
 */

import { readKey, type RegistryEntry, type RegistryEvent } from "./decode.js";

export interface RangeAnswer {
  readonly revision: number;
  /** In etcd's order; a key that is not UTF-8 is marked `unreadable` (see readKey), and is to be skipped. */
  readonly kvs: readonly (Required<Omit<RegistryEntry, "unreadable">> & Pick<RegistryEntry, "unreadable">)[];
  /** A range asked with a limit stopped there: more keys follow the last one. */
  readonly more: boolean;
  /** The last key as etcd sent it (bytes, which its text may not keep): where the next page starts. */
  readonly lastKey: Uint8Array | undefined;
}

/** A watch response line, reduced to what the watch acts on. */
export interface WatchLine {
  readonly created: boolean;
  /** header.revision: etcd's revision when it sent the line; undefined when the line has no header. */
  readonly revision: number | undefined;
  /** The changes it reports, in etcd's order. */
  readonly events: readonly RegistryEvent[];
  /** etcd split one response into lines (fragment): this one is not its last. */
  readonly fragment: boolean;
  /** Why etcd ended the watch; undefined while it goes on. */
  readonly ended: string | undefined;
}

/** The answer is not what etcd sends; the message says what is wrong, never quoting the answer. */
export class MalformedAnswer extends Error {}

/**
 * Parses JSON of at most `limit` bytes without letting a SyntaxError (which
 * quotes the text) escape, once checkShape has found it cheap to build.
 */
export function parseJson(text: string, limit: number): unknown {
  checkShape(text, limit);
  try {
    return JSON.parse(text);
  } catch {
    throw new MalformedAnswer("is not JSON");
  }
}

/** etcd's answers nest 5 levels deep (a watch event's kv); 64 leaves room for any gateway version. */
const maxDepth = 64;

/**
 * Refuses JSON whose parsed form would take far more memory than its text:
 * 32 MiB of "[[[…" or "[{},{},…" parse into GBs. Budgets are per byte of
 * the limit, set where a real etcd answer of that size stays below them:
 * each kv of a range is one object of ≥ 70 bytes holding ≥ 4 members, a
 * watch event (DELETE, short key) two objects in ≥ 58 bytes, and etcd
 * splits watch batches into lines of about 1.5 MiB. One pass, outside
 * strings; values are counted by their separators (commas) and containers.
 */
function checkShape(text: string, limit: number): void {
  const maxContainers = 16 + Math.floor(limit / 32);
  const maxValues = 16 + Math.floor(limit / 8);
  let depth = 0;
  let containers = 0;
  let values = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const char = text.charCodeAt(i);
    if (inString) {
      if (char === 0x5c /* \ */) {
        i++;
      } else if (char === 0x22 /* " */) {
        inString = false;
      }
    } else if (char === 0x22) {
      inString = true;
    } else if (char === 0x7b /* { */ || char === 0x5b /* [ */) {
      if (++depth > maxDepth) {
        throw new MalformedAnswer(`nests deeper than ${maxDepth} levels, which etcd never does`);
      }
      if (++containers > maxContainers || ++values > maxValues) {
        throw new MalformedAnswer(`has more objects and lists than etcd sends in ${limit} bytes`);
      }
    } else if (char === 0x7d /* } */ || char === 0x5d /* ] */) {
      depth--;
    } else if (char === 0x2c /* , */ && ++values > maxValues) {
      throw new MalformedAnswer(`has more values than etcd sends in ${limit} bytes`);
    }
  }
}

export function rangeAnswer(answer: unknown): RangeAnswer {
  const { header, kvs, more } = object(answer, "is not a JSON object");
  const revision = checkedRevision(object(header, "has no header object").revision, "header.revision");
  if (kvs !== undefined && !Array.isArray(kvs)) {
    throw new MalformedAnswer("has kvs that is not a list");
  }
  if (more !== undefined && typeof more !== "boolean") {
    throw new MalformedAnswer("has more that is not a boolean");
  }
  const entries = (kvs ?? []).map(keyValue);
  const lastKey = entries.length === 0 ? undefined : base64Bytes((kvs as { key: string }[])[entries.length - 1]!.key, "the last key");
  return { revision, kvs: entries, more: more === true, lastKey };
}

/** One line of a watch stream; `ended` is etcd's own text, to be shown only once sanitised. */
export function watchLine(line: unknown): WatchLine {
  const { result, error } = object(line, "is not a JSON object");
  if (error !== undefined) {
    // grpc-gateway v2 (etcd 3.6) ends a stream with {"error":{"code","message"}}
    const message = typeof error === "string" ? error : (error as { message?: unknown } | null)?.message;
    return { ...noChange, ended: typeof message === "string" && message !== "" ? message : "error" };
  }
  const { header, created, events, fragment, canceled, cancel_reason, compact_revision } = object(result, "has no result object");
  if (events !== undefined && !Array.isArray(events)) {
    throw new MalformedAnswer("has events that is not a list");
  }
  if (canceled !== true) {
    const revision = header === undefined ? undefined : checkedRevision(object(header, "has a header that is not an object").revision, "header.revision");
    const changes = (events ?? []).map(watchEvent);
    if (changes.length > 0 && revision === undefined) {
      throw new MalformedAnswer("has events without a header revision");
    }
    // etcd's header revision is its revision when it sent the events: none is later.
    const later = changes.findIndex((event) => event.revision > revision!);
    if (later >= 0) {
      throw new MalformedAnswer(`has events[${later}] with a mod_revision above the header revision of its line`);
    }
    return { created: created === true, revision, events: changes, fragment: fragment === true, ended: undefined };
  }
  if (typeof cancel_reason === "string" && cancel_reason !== "") {
    return { ...noChange, ended: cancel_reason };
  }
  const compacted = compact_revision === undefined ? 0 : checkedRevision(compact_revision, "compact_revision");
  return { ...noChange, ended: compacted > 0 ? `compacted up to revision ${compacted}` : "canceled" };
}

const noChange = { created: false, revision: undefined, events: [], fragment: false } as const;

/** etcd's Event: type PUT (0, left out) or DELETE (1), and the kv after it; a deleted kv holds its key and mod_revision only. */
function watchEvent(entry: unknown, index: number): RegistryEvent {
  const { type, kv } = object(entry, `has events[${index}] that is not an object`);
  const { key, value, mod_revision } = object(kv, `has events[${index}] without a kv object`);
  if (typeof key !== "string" || (value !== undefined && typeof value !== "string")) {
    throw new MalformedAnswer(`has events[${index}] without a text key and value`);
  }
  const revision = checkedRevision(mod_revision, `events[${index}].kv.mod_revision`);
  const { key: text, unreadable } = readKey(base64Bytes(key, `events[${index}].kv.key`));
  const marked = unreadable === undefined ? {} : { unreadable };
  if (type === undefined || type === "PUT" || type === 0) {
    return { kind: "put", key: text, value: fromBase64(value ?? "", `events[${index}].kv.value`), revision, ...marked };
  }
  if (type === "DELETE" || type === 1) {
    return { kind: "delete", key: text, revision, ...marked };
  }
  throw new MalformedAnswer(`has events[${index}] of a type that is neither PUT nor DELETE`);
}

/** A revision as etcd sends int64s: a decimal string (or a number) of a non-negative safe integer. */
function checkedRevision(value: unknown, field: string): number {
  const revision = typeof value === "string" && /^\d{1,16}$/.test(value) ? Number(value) : value;
  if (typeof revision !== "number" || !Number.isSafeInteger(revision) || revision < 0) {
    throw new MalformedAnswer(`has a ${field} that is not a non-negative integer`);
  }
  return revision;
}

function keyValue(entry: unknown, index: number): RangeAnswer["kvs"][number] {
  const { key, value, mod_revision } = object(entry, `has kvs[${index}] that is not an object`);
  if (typeof key !== "string" || (value !== undefined && typeof value !== "string")) {
    throw new MalformedAnswer(`has kvs[${index}] without a text key and value`);
  }
  // etcd leaves out an empty value; without a mod_revision the entry is decoded on every read
  const modRevision = mod_revision === undefined ? 0 : checkedRevision(mod_revision, `kvs[${index}].mod_revision`);
  const { key: text, unreadable } = readKey(base64Bytes(key, `kvs[${index}].key`));
  return { key: text, value: fromBase64(value ?? "", `kvs[${index}].value`), modRevision, ...(unreadable !== undefined && { unreadable }) };
}

function object(value: unknown, problem: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new MalformedAnswer(problem);
  }
  return value as Record<string, unknown>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function toBase64(bytes: string | Uint8Array): string {
  const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
  let binary = "";
  for (const byte of data) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary);
}

function fromBase64(text: string, field: string): string {
  return decoder.decode(base64Bytes(text, field));
}

function base64Bytes(text: string, field: string): Uint8Array {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    throw new MalformedAnswer(`has a ${field} that is not base64`);
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

/** The range end that selects every key starting with prefix: its last byte below 0xff incremented. */
export function prefixEnd(prefix: string): Uint8Array {
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
