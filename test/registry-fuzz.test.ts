// Property tests of the registry decoding: whatever is written under the
// prefix, and whatever a custom decoder returns, decoding never throws, the
// valid entries survive, and every peer is canonical and allowed.
// Reproduce a failure with FUZZ_SEED=<seed printed below> npx vitest run test/registry-fuzz.test.ts
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeSnapshot, type RegistryEntry } from "../src/discovery/decode.js";
import type { Snapshot } from "../src/discovery/discovery.js";
import { resolveFormat, type RegistryFormat } from "../src/registry/format.js";
import { canonicalHost } from "../src/registry/host.js";
import { defaultRefusal } from "../src/registry/address-policy.js";
import { buildPeerSet } from "../src/transport/peer-set.js";

const seed = Number(process.env["FUZZ_SEED"] ?? Date.now() % 1_000_000);
const runs = (numRuns: number) => ({ seed, numRuns });
const prototypeBefore = Object.getOwnPropertyNames(Object.prototype).sort();

beforeAll(() => console.log(`registry fuzz seed: ${seed}`));
afterAll(() => {
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(prototypeBefore);
  expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
});

const hostileHosts = [
  "169.254.169.254", "[fe80::1]", "[::ffff:169.254.169.254]", "[fd00:ec2::254]", "0.0.0.0", "[::]", "metadata.google.internal",
  "METADATA.GOOGLE.INTERNAL.", "metadata.goog", "instance-data", "0x7f000001", "2130706433", "0177.0.0.1", "0x7f.1", "127.1",
  "[::ffff:7f00:1]", "[::127.0.0.1]", "[64:ff9b::a9fe:a9fe]", "224.0.0.1", "[ff02::1]", "255.255.255.255", "[fe80::1%25eth0]",
  "100.100.100.200", "168.63.129.16", "192.0.0.192", "[fd20:ce::254]", "[fd00:ec2::23]", "[fd00:42::42]", "[64:ff9b:1::a9fe:a9fe]",
  "metadata.tencentyun.com", "%31%32%37.0.0.1", "a..b", "-x", "ex ample", "caf\u00e9", "h".repeat(300), "7".repeat(1000),
];
const host = fc.oneof(
  fc.constantFrom(...hostileHosts),
  fc.ipV4(),
  fc.ipV4Extended(),
  fc.ipV6().map((ip) => `[${ip}]`),
  fc.ipV4().map((ip) => `[::ffff:${ip}]`),
  fc.domain(),
  fc.domain().map((name) => `${name.toUpperCase()}.`),
  fc.string({ maxLength: 20 }),
);
/** A password in registered endpoints: no reason may show it. */
const secret = "S3CRET";
const endpoint = fc.oneof(
  { weight: 30, arbitrary: fc.tuple(fc.constantFrom("grpc", "grpcs", "http", "https", "GRPC", "tcp"), host, fc.oneof(fc.integer({ min: 0, max: 70_000 }).map(String), fc.string({ maxLength: 4 })))
    .map(([scheme, h, port]) => `${scheme}://${h}:${port}`) },
  { weight: 5, arbitrary: fc.string({ maxLength: 40 }) },
  // a password written unescaped, its "/", "?" or "#" ending the authority early
  { weight: 3, arbitrary: fc.tuple(fc.constantFrom("", "/", "?", "#", ":1234#"), host, fc.integer({ min: 1, max: 65_535 }))
    .map(([cut, h, port]) => `grpc://user:${secret}${cut}@${h}:${port}`) },
  { weight: 1, arbitrary: fc.constant(`grpc://${"h".repeat(100_000)}:9000`) },
);
const goodEndpoint = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 65_535 })).map(([b, port]) => `grpc://10.0.0.${b}:${port}`);
const metadataKey = fc.oneof(fc.constantFrom("__proto__", "constructor", "prototype", "toString", "weight"), fc.string({ maxLength: 8 }));
const metadata = fc.oneof(fc.constant(null), fc.dictionary(metadataKey, fc.string({ maxLength: 8 }), { maxKeys: 4 }), fc.anything());

/** A kratos value for service "svc": valid (the test then expects it kept) or anything hostile. */
const kratosEntry = fc.oneof(
  fc.record({ valid: fc.constant(true), endpoints: fc.array(goodEndpoint, { minLength: 1, maxLength: 3 }), hostile: fc.array(endpoint, { maxLength: 3 }) }),
  fc.record({ valid: fc.constant(false), endpoints: fc.array(endpoint, { maxLength: 4 }), hostile: fc.constant([] as string[]) }),
);

/** Decodes entries 0…n-1 under /p/svc/ and returns the snapshot with the peers of every scheme. */
function decodeAll(format: RegistryFormat, values: readonly string[]): Snapshot {
  const entries: RegistryEntry[] = values.map((value, i) => ({ key: `/p/svc/${i}`, value }));
  const snapshot = decodeSnapshot(resolveFormat(format), "svc", 1, entries);
  expectSound(snapshot);
  return snapshot;
}

/** Every peer has the documented types, a canonical host WHATWG URL reads the same way, and the policy allows it. */
function expectSound(snapshot: Snapshot): void {
  const set = buildPeerSet(snapshot, ["grpc", "grpcs", "http", "https"], undefined, "fuzz");
  const problems = set.peers.flatMap((peer) => {
    const fields = [peer.host, peer.id, peer.name, peer.version, peer.key, ...Object.values(peer.metadata)];
    const canonical = canonicalHost(peer.host, peer.host.includes(":"));
    const bracketed = peer.host.includes(":") ? `[${peer.host}]` : peer.host;
    return [
      fields.every((field) => typeof field === "string") ? "" : "a field is not a string",
      Object.isFrozen(peer.metadata) ? "" : "metadata is not frozen",
      typeof canonical !== "string" && canonical.text === peer.host ? "" : `host ${peer.host} is not canonical`,
      defaultRefusal(peer.host) === undefined ? "" : `host ${peer.host} is refused by the policy`,
      new URL(peer.url).hostname === bracketed ? "" : `URL ${peer.url} reads another host`,
      Number.isInteger(peer.port) && peer.port > 0 && peer.port < 65_536 ? "" : `bad port ${peer.port}`,
    ].filter(Boolean);
  });
  // reasons end up in logs: short, one printable line, no secret
  const badSkips = snapshot.skipped.filter(
    ({ key, reason }) => typeof key !== "string" || typeof reason !== "string" || reason.length > 2_000 || !/^[\x20-\x7e…]*$/.test(reason) || reason.includes(secret),
  );
  expect(problems).toEqual([]);
  expect(badSkips).toEqual([]);
}

describe("registry decoding under random input", () => {
  it("keeps every valid kratos entry among hostile ones, and only canonical, allowed peers", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(kratosEntry, metadata), { maxLength: 6 }), (entries) => {
        const values = entries.map(([{ endpoints, hostile }, meta]) =>
          JSON.stringify({ id: "x", name: "svc", version: "v1", metadata: meta, endpoints: [...hostile, ...endpoints] }) ?? "",
        );
        const snapshot = decodeAll("kratos", values);
        const kept = new Set(snapshot.instances.map((i) => i.key));
        entries.forEach(([{ valid }, meta], i) => {
          const metaIsValid = meta === null || (typeof meta === "object" && !Array.isArray(meta) && Object.values(meta as object).every((v) => typeof v === "string"));
          if (valid && metaIsValid) {
            expect(kept.has(`/p/svc/${i}`)).toBe(true);
          }
        });
      }),
      runs(3_000),
    );
  });

  it("never throws on arbitrary text in either built-in format", () => {
    const value = fc.oneof(fc.string({ maxLength: 60 }), fc.json({ maxDepth: 3 }), fc.string({ unit: "binary", maxLength: 60 }));
    fc.assert(
      fc.property(fc.constantFrom<RegistryFormat>("kratos", "etcd-naming"), fc.array(value, { maxLength: 5 }), (format, values) => {
        decodeAll(format, values);
      }),
      runs(3_000),
    );
  });

  it("reads etcd-naming Addr values with hostile hosts into allowed peers only", () => {
    const addr = fc.tuple(host, fc.integer({ min: 1, max: 65_535 })).map(([h, port]) => `${h}:${port}`);
    fc.assert(
      fc.property(fc.array(addr, { maxLength: 5 }), (addrs) => {
        decodeAll("etcd-naming", addrs.map((Addr) => JSON.stringify({ Op: 0, Addr })));
      }),
      runs(2_000),
    );
  });

  it("skips only the entries whose custom decoder misbehaves", () => {
    const throwing = fc.constant(() => ({ get endpoints(): string[] { throw new Error("getter"); } }));
    const proxy = fc.constant(() => new Proxy({}, { get: () => { throw new Error("proxy"); }, ownKeys: () => { throw new Error("keys"); } }));
    const junk = fc.oneof(
      fc.anything({ withNullPrototype: true, withObjectString: true }),
      fc.record({ id: fc.anything(), name: fc.anything(), version: fc.anything(), metadata, endpoints: fc.oneof(fc.array(endpoint, { maxLength: 3 }), fc.anything()) }, { requiredKeys: [] }),
    ).map((value) => () => value);
    const result = fc.oneof(junk, throwing, proxy, fc.constant(() => { throw new Error("decoder"); }));
    fc.assert(
      fc.property(fc.array(fc.option(result, { nil: undefined }), { maxLength: 6 }), (results) => {
        // undefined in `results` marks a valid entry
        const decoder = (key: string) => {
          const make = results[Number(key.slice(key.lastIndexOf("/") + 1))];
          return make === undefined ? { endpoints: ["grpc://10.0.0.1:9000"], metadata: { zone: "a" } } : (make() as never);
        };
        const snapshot = decodeAll(decoder, results.map(() => ""));
        const kept = new Set(snapshot.instances.map((i) => i.key));
        results.forEach((make, i) => make === undefined && expect(kept.has(`/p/svc/${i}`)).toBe(true));
      }),
      runs(2_500),
    );
  });
});
