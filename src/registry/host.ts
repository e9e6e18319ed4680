// One spelling per address: hosts are canonicalised before any policy check,
// user filter or dedup, so "0x7f.1", "127.1" or "[::ffff:7f00:1]" cannot slip
// past a check written for "127.0.0.1" and then be normalised by the dialler.

/** A registered host in the one form it is checked, shown and dialled in. */
export interface CanonicalHost {
  readonly kind: "ipv4" | "ipv6" | "name";
  /** Without brackets: "10.0.0.7", "fd00::1" (RFC 5952), "api.internal" (lowercase, no trailing dot). */
  readonly text: string;
  /** The address bytes of an IP: 4 or 16 of them; none for a name. */
  readonly bytes: readonly number[];
}

const maxNameLength = 253;

/**
 * Canonicalises a host as written in an endpoint (`bracketed` when it was in
 * […]). Returns the reason as a string for a host that has more than one
 * reading: numeric spellings other than dotted-decimal IPv4 (hex, octal,
 * leading zeros, fewer parts, one integer — WHATWG URL would read them as
 * IPv4), IPv6 zone ids, deprecated IPv4-compatible IPv6 addresses.
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) become the IPv4 address they
 * stand for, which is what a dual-stack socket dials.
 */
export function canonicalHost(raw: string, bracketed: boolean): CanonicalHost | string {
  if (raw.length > maxNameLength + 1) {
    return `host is longer than ${maxNameLength} characters`;
  }
  return bracketed ? canonicalIPv6(raw) : canonicalName(raw);
}

/**
 * Shows registry text in a message, which ends up in logs: at most `max`
 * characters (a hostile value may be megabytes), in double quotes, with
 * control and non-ASCII characters escaped so it can neither forge a log line
 * (newlines, U+2028) nor reorder what is shown (bidi overrides).
 */
export function quote(text: string, max = 60): string {
  const cut = text.length > max;
  const escaped = JSON.stringify(cut ? text.slice(0, max) : text).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return cut ? `${escaped.slice(0, -1)}…"` : escaped;
}

function canonicalIPv6(raw: string): CanonicalHost | string {
  if (raw.includes("%")) {
    return `IPv6 zone ids are not allowed (${quote(raw)})`;
  }
  const bytes = parseIPv6(raw);
  if (bytes === undefined) {
    return `bad IPv6 address ${quote(raw)}`;
  }
  const prefixIsZero = bytes.slice(0, 10).every((b) => b === 0);
  if (prefixIsZero && bytes[10] === 0xff && bytes[11] === 0xff) {
    return ipv4(bytes.slice(12));
  }
  if (prefixIsZero && bytes[10] === 0 && bytes[11] === 0 && bytes.slice(12, 15).some((b) => b !== 0)) {
    return `IPv4-compatible IPv6 address ${quote(raw)} is deprecated (RFC 4291): register the IPv4 address`;
  }
  return { kind: "ipv6", text: formatIPv6(bytes), bytes };
}

function canonicalName(raw: string): CanonicalHost | string {
  const name = raw.toLowerCase().replace(/\.$/, "");
  const v4 = parseIPv4(name);
  if (v4 !== undefined) {
    return ipv4(v4);
  }
  const labels = name.split(".");
  if (/^(\d+|0x[0-9a-f]*)$/.test(labels[labels.length - 1]!)) {
    return `numeric host ${quote(raw)} is not a dotted-decimal IPv4 address`;
  }
  if (name.length > maxNameLength || !labels.every(isLabel)) {
    return `bad host ${quote(raw)}`;
  }
  return { kind: "name", text: name, bytes: [] };
}

// Letters, digits and hyphens as RFC 1123, plus underscore: Docker and
// Compose name containers "app_web_1" and resolve those names. It cannot make
// a name numeric, so it opens no second spelling of an address.
const label = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const isLabel = (text: string) => label.test(text);

function ipv4(bytes: readonly number[]): CanonicalHost {
  return { kind: "ipv4", text: bytes.join("."), bytes };
}

/** Strict dotted decimal: four parts, 0–255, no leading zeros. */
export function parseIPv4(text: string): number[] | undefined {
  const parts = dottedDecimal.exec(text);
  if (parts === null) {
    return undefined;
  }
  const bytes = [Number(parts[1]), Number(parts[2]), Number(parts[3]), Number(parts[4])];
  return bytes.every((b) => b <= 255) ? bytes : undefined;
}

const dottedDecimal = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

/** RFC 4291 text (with "::" and a trailing dotted IPv4 allowed) to 16 bytes. */
export function parseIPv6(text: string): number[] | undefined {
  const halves = text.split("::");
  if (halves.length > 2) {
    return undefined;
  }
  const compressed = halves.length === 2;
  const head = parseGroups(halves[0]!, !compressed);
  const tail = compressed ? parseGroups(halves[1]!, true) : [];
  if (head === undefined || tail === undefined) {
    return undefined;
  }
  const missing = 8 - head.length - tail.length;
  if (compressed ? missing < 1 : missing !== 0) {
    return undefined;
  }
  const groups = [...head, ...Array<number>(missing).fill(0), ...tail];
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

function parseGroups(text: string, ipv4Last: boolean): number[] | undefined {
  if (text === "") {
    return [];
  }
  const parts = text.split(":");
  const groups: number[] = [];
  for (const [index, part] of parts.entries()) {
    const v4 = ipv4Last && index === parts.length - 1 ? parseIPv4(part) : undefined;
    if (v4 !== undefined) {
      groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    } else if (/^[0-9a-f]{1,4}$/i.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return undefined;
    }
  }
  return groups;
}

/** RFC 5952: lowercase, no leading zeros, the first longest run of two or more zero groups as "::". */
export function formatIPv6(bytes: readonly number[]): string {
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  let [start, length] = [-1, 1];
  for (let i = 0; i < 8; i++) {
    let run = 0;
    while (i + run < 8 && groups[i + run] === 0) run++;
    if (run > length) [start, length] = [i, run];
  }
  const hex = groups.map((g) => g.toString(16));
  if (start < 0) {
    return hex.join(":");
  }
  return `${hex.slice(0, start).join(":")}::${hex.slice(start + length).join(":")}`;
}
