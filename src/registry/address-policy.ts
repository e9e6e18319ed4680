// Which registered addresses may be dialled. Anyone who can write a key under
// the registry prefix chooses where calls (with their headers and tokens) go,
// so some addresses are never dialled, and the allow option narrows further.
//
// Names are checked as names: a name that resolves to a forbidden address
// (DNS rebinding, or simply a record pointing at 169.254.169.254) is not
// caught here. Where that matters, register IPs and use allow with CIDRs, or
// resolve names in the dialler and check the addresses there.
import { Code, ConnectError } from "@connectrpc/connect";
import { canonicalHost, quote, type CanonicalHost } from "./host.js";

interface Cidr {
  readonly bytes: readonly number[];
  readonly prefix: number;
}

/**
 * Never dialled. Loopback and private ranges stay allowed: tests, demos and
 * real fleets use them. Metadata addresses outside link-local are single
 * addresses in ranges real fleets use (100.64.0.0/10 carrier-grade NAT and
 * Tailscale, fd00::/8 unique-local), so only those addresses are refused.
 * Each reason carries its article: "<address> is <reason>".
 */
const deniedRanges: readonly (readonly [string, string])[] = [
  ["0.0.0.0/8", "an unspecified address"],
  ["169.254.0.0/16", "a link-local address (cloud metadata lives here)"],
  ["224.0.0.0/4", "a multicast address"],
  ["255.255.255.255/32", "the broadcast address"],
  ["100.100.100.200/32", "the Alibaba Cloud metadata address"],
  ["168.63.129.16/32", "the Azure WireServer address"],
  ["192.0.0.192/32", "the Oracle Cloud legacy metadata address"],
  ["::/128", "the unspecified address"],
  ["fe80::/10", "a link-local address"],
  ["ff00::/8", "a multicast address"],
  ["fd00:ec2::254/128", "the AWS metadata address"],
  ["fd00:ec2::23/128", "the AWS EKS Pod Identity Agent address"],
  ["fd20:ce::254/128", "the GCP metadata address"],
  ["fd00:42::42/128", "the Scaleway metadata address"],
];
const denied = deniedRanges.map(([cidr, why]) => ({ cidr: parseCidr(cidr) as Cidr, why }));

/**
 * Metadata service names of AWS (instance-data…), GCP (metadata.google.internal,
 * metadata.goog, and "metadata" via the search domain) and Tencent Cloud
 * (metadata.tencentyun.com). Exact names only: a service may well be called
 * "metadata-api".
 */
const deniedNames = new Set(["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal", "metadata.tencentyun.com"]);

/**
 * NAT64 prefixes, the well-known one (RFC 6052) and the local-use one
 * (RFC 8215): the IPv4 address in the last 32 bits is what is reached. That
 * is where a /96 prefix puts it; an operator who carves a shorter prefix out
 * of 64:ff9b:1::/48 puts it elsewhere, which is not checked (use allow).
 */
const nat64 = [parseCidr("64:ff9b::/96") as Cidr, parseCidr("64:ff9b:1::/48") as Cidr];

/** Why the default policy refuses a canonical host, or undefined when it may be dialled. */
export function defaultRefusal(host: string): string | undefined {
  const parsed = canonicalHost(host, host.includes(":"));
  if (typeof parsed === "string") {
    return parsed;
  }
  if (parsed.kind === "name") {
    return deniedNames.has(parsed.text) ? `${quote(parsed.text)} is a cloud metadata service name` : undefined;
  }
  const hit = denied.find(({ cidr }) => inCidr(parsed.bytes, cidr));
  if (hit !== undefined) {
    return `${parsed.text} is ${hit.why}`;
  }
  if (nat64.some((prefix) => inCidr(parsed.bytes, prefix))) {
    const embedded = defaultRefusal(parsed.bytes.slice(12).join("."));
    return embedded === undefined ? undefined : `${parsed.text} is NAT64 for ${embedded}`;
  }
  return undefined;
}

/** The allow option of a transport, compiled. */
export interface AllowList {
  /** Whether a canonical host matches one of the entries. */
  permits(host: string): boolean;
}

/**
 * Compiles allow entries: CIDRs ("10.0.0.0/8", "fd00::/8"), addresses
 * ("127.0.0.1", "::1", "[::1]"), names ("api.internal") and name patterns
 * ("*.svc.cluster.local": any name below it, not the name itself). Throws
 * InvalidArgument naming the first invalid entry.
 */
export function compileAllow(entries: readonly string[]): AllowList {
  if (!Array.isArray(entries) || entries.length === 0) {
    throw new ConnectError("createBalancedTransport: allow must list at least one CIDR or host (omit it to allow every address)", Code.InvalidArgument);
  }
  const matchers = entries.map((entry: unknown) => {
    const matcher = typeof entry === "string" ? compileEntry(entry) : "not a string";
    if (typeof matcher === "string") {
      throw new ConnectError(`createBalancedTransport: allow entry ${quote(String(entry))} is invalid: ${matcher}`, Code.InvalidArgument);
    }
    return matcher;
  });
  return {
    permits(host) {
      const parsed = canonicalHost(host, host.includes(":"));
      return typeof parsed !== "string" && matchers.some((matches) => matches(parsed));
    },
  };
}

type Matcher = (host: CanonicalHost) => boolean;

function compileEntry(entry: string): Matcher | string {
  if (entry.includes("/")) {
    const cidr = parseCidr(entry);
    return typeof cidr === "string" ? cidr : (host) => host.kind !== "name" && inCidr(host.bytes, cidr);
  }
  if (entry.startsWith("*.")) {
    const suffix = canonicalHost(entry.slice(2), false);
    if (typeof suffix === "string" || suffix.kind !== "name") {
      return typeof suffix === "string" ? suffix : "a pattern must be *. followed by a host name";
    }
    return (host) => host.kind === "name" && host.text.endsWith(`.${suffix.text}`);
  }
  const bracketed = /^\[(.*)\]$/.exec(entry);
  const exact = canonicalHost(bracketed?.[1] ?? entry, bracketed !== null || entry.includes(":"));
  return typeof exact === "string" ? exact : (host) => host.text === exact.text;
}

function parseCidr(text: string): Cidr | string {
  const [address = "", prefixText = "", ...rest] = text.split("/");
  const parsed = canonicalHost(address, address.includes(":"));
  if (typeof parsed === "string" || parsed.kind === "name" || rest.length > 0) {
    return "not a CIDR like 10.0.0.0/8 or fd00::/8";
  }
  if (parsed.kind === "ipv4" && address.includes(":")) {
    // canonicalHost reads it as the IPv4 it maps to: its prefix counts 128 bits, the address 32
    return "an IPv4-mapped CIDR must be written as IPv4: ::ffff:a.b.c.d/(96+n) is a.b.c.d/n";
  }
  const bits = parsed.bytes.length * 8;
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix <= bits)) {
    return `prefix length must be 0–${bits}`;
  }
  if (parsed.bytes.some((byte, i) => (byte & ~maskByte(prefix, i)) !== 0)) {
    return `address bits are set past /${prefix}`;
  }
  return { bytes: parsed.bytes, prefix };
}

function inCidr(bytes: readonly number[], { bytes: network, prefix }: Cidr): boolean {
  return bytes.length === network.length && network.every((byte, i) => (bytes[i]! & maskByte(prefix, i)) === byte);
}

/** The mask of byte `index` under a prefix length: 0xff, 0 or the partial byte. */
function maskByte(prefix: number, index: number): number {
  const bits = Math.min(8, Math.max(0, prefix - index * 8));
  return (0xff << (8 - bits)) & 0xff;
}
