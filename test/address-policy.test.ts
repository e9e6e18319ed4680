// The address policy: one canonical spelling per host, the addresses never
// dialled, and the allow option.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, etcdDiscovery, type BalancedTransport, type Peer } from "../src/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { putKey } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { eventRecorder, rejection } from "./helpers.js";
import { canonicalHost, formatIPv6, parseIPv6 } from "../src/registry/host.js";
import { compileAllow, defaultRefusal } from "../src/registry/address-policy.js";
import { parseEndpoint } from "../src/registry/endpoint.js";
import { resolveFormat } from "../src/registry/format.js";
import { decodeSnapshot } from "../src/discovery/decode.js";
import { buildPeerSet, createAllowGate } from "../src/transport/peer-set.js";
import type { SkippedEntry } from "../src/registry/instance.js";

const hostOf = (endpoint: string) => {
  const parsed = parseEndpoint(endpoint);
  return typeof parsed === "string" ? parsed : parsed.host;
};

describe("canonical hosts", () => {
  it.each([
    ["grpc://10.0.0.7:9000", "10.0.0.7"],
    ["grpc://10.0.0.7.:9000", "10.0.0.7"],
    ["grpc://API.Internal.:9000", "api.internal"],
    ["grpc://app_web_1:9000", "app_web_1"],
    ["grpc://[::1]:9000", "::1"],
    ["grpc://[0:0:0:0:0:0:0:1]:9000", "::1"],
    ["grpc://[2001:DB8:0:0:1:0:0:1]:9000", "2001:db8::1:0:0:1"],
    ["grpc://[2001:db8:0000:0001:0:0:0:1]:9000", "2001:db8:0:1::1"],
    ["grpc://[2001:db8:1:1:1:1:0:1]:9000", "2001:db8:1:1:1:1:0:1"],
    ["grpc://[fd00::10.0.0.1]:9000", "fd00::a00:1"],
    ["grpc://[::ffff:127.0.0.1]:9000", "127.0.0.1"],
    ["grpc://[::FFFF:7F00:0001]:9000", "127.0.0.1"],
    ["grpc://[0:0:0:0:0:ffff:10.1.2.3]:9000", "10.1.2.3"],
  ])("%s has host %s", (endpoint, host) => {
    expect(hostOf(endpoint)).toBe(host);
  });

  it.each([
    ["grpc://0x7f000001:9000", "not a dotted-decimal IPv4"],
    ["grpc://0x7f.1:9000", "not a dotted-decimal IPv4"],
    ["grpc://2130706433:9000", "not a dotted-decimal IPv4"],
    ["grpc://0177.0.0.1:9000", "not a dotted-decimal IPv4"],
    ["grpc://127.1:9000", "not a dotted-decimal IPv4"],
    ["grpc://127.0.0.01:9000", "not a dotted-decimal IPv4"],
    ["grpc://256.0.0.1:9000", "not a dotted-decimal IPv4"],
    ["grpc://example.0x10:9000", "not a dotted-decimal IPv4"],
    ["grpc://foo.123:9000", "not a dotted-decimal IPv4"],
    ["grpc://[fe80::1%eth0]:9000", "zone ids are not allowed"],
    ["grpc://[::127.0.0.1]:9000", "IPv4-compatible IPv6 address"],
    ["grpc://[1:2:3:4:5:6:7:8:9]:9000", "bad IPv6 address"],
    ["grpc://[1::2::3]:9000", "bad IPv6 address"],
    ["grpc://[1.2.3.4]:9000", "bad IPv6 address"],
    ["grpc://[12345::1]:9000", "bad IPv6 address"],
    ["grpc://-leading.example:9000", "bad host"],
    ["grpc://a..b:9000", "bad host"],
    ["grpc://caf\u00e9.example:9000", "bad host"],
    ["grpc://%31%32%37.0.0.1:9000", "not a dotted-decimal IPv4"],
    ["grpc://%61pi.internal:9000", "bad host"],
    [`grpc://${"a".repeat(64)}.example:9000`, "bad host"],
    [`grpc://${"a.".repeat(126)}ab:9000`, "bad host"],
    [`grpc://${"h".repeat(100_000)}:9000`, "longer than 253 characters"],
  ])("refuses %s as malformed", (endpoint, reason) => {
    expect(hostOf(endpoint)).toContain(reason);
  });

  it("shows a huge host cut short", () => {
    const reason = parseEndpoint(`grpc://${"7".repeat(200)}:9000`) as string;
    expect(reason.length).toBeLessThan(400);
  });

  it("formats IPv6 as RFC 5952 and parses it back to the same bytes", () => {
    for (const text of ["::", "::1", "1::", "1:0:0:2::3", "1::2:0:0:3", "ff02::1:ff00:1", "fd00:ec2::254"]) {
      const bytes = parseIPv6(text)!;
      expect(formatIPv6(bytes)).toBe(text);
      expect(canonicalHost(text, true)).toMatchObject({ kind: "ipv6", text });
    }
  });
});

describe("the default policy", () => {
  const refused: [string, string][] = [
    ["169.254.169.254", "link-local"],
    ["169.254.170.2", "link-local"],
    ["fe80::1", "link-local"],
    ["febf::1", "link-local"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["::", "unspecified"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["ff02::1", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["fd00:ec2::254", "AWS metadata"],
    ["100.100.100.200", "Alibaba"],
    ["168.63.129.16", "Azure"],
    ["metadata.google.internal", "metadata service name"],
    ["metadata.goog", "metadata service name"],
    ["metadata", "metadata service name"],
    ["instance-data", "metadata service name"],
    ["instance-data.ec2.internal", "metadata service name"],
    ["64:ff9b::a9fe:a9fe", "NAT64 for 169.254.169.254 is a link-local"],
    ["fd20:ce::254", "GCP metadata"],
    ["fd00:ec2::23", "EKS Pod Identity Agent"],
    ["fd00:42::42", "Scaleway metadata"],
    ["192.0.0.192", "Oracle Cloud legacy metadata"],
    ["64:ff9b:1::a9fe:a9fe", "NAT64 for 169.254.169.254 is a link-local"],
    ["64:ff9b:1:abcd::c000:c0", "NAT64 for 192.0.0.192 is the Oracle"],
    ["metadata.tencentyun.com", "metadata service name"],
  ];

  it.each(refused)("refuses %s", (host, reason) => {
    expect(defaultRefusal(host)).toContain(reason);
  });

  it("puts the right article before every reason", () => {
    const wrong = refused.map(([host]) => defaultRefusal(host)!).filter((reason) => / a [aeiouAEIOU]/.test(reason));
    expect(wrong).toEqual([]);
    expect(defaultRefusal("0.0.0.0")).toBe("0.0.0.0 is an unspecified address");
  });

  it.each(["127.0.0.1", "127.8.9.10", "::1", "10.0.0.7", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd00::1", "2001:db8::1", "64:ff9b::a00:1", "64:ff9b:1::a00:1", "fd00:ec2::1", "fd00:42::1", "fd20:ce::1", "192.0.0.193", "localhost", "metadata-api", "user.svc.cluster.local", "169.253.255.255", "223.255.255.255", "fec0::1"])(
    "allows %s",
    (host) => {
      expect(defaultRefusal(host)).toBeUndefined();
    },
  );

  it("refuses every spelling of the metadata address: the check runs on the canonical host", () => {
    for (const endpoint of ["grpc://169.254.169.254:80", "grpc://[::ffff:169.254.169.254]:80", "grpc://[::ffff:a9fe:a9fe]:80", "grpc://169.254.169.254.:80", "grpc://METADATA.google.internal.:80"]) {
      expect(defaultRefusal(hostOf(endpoint))).toBeDefined();
    }
  });
});

describe("the allow option", () => {
  const allow = compileAllow(["10.0.0.0/8", "*.svc.cluster.local", "127.0.0.1", "[::1]", "fd00::/8", "api.internal"]);

  it.each(["10.0.0.1", "10.255.255.255", "user.svc.cluster.local", "a.b.svc.cluster.local", "127.0.0.1", "::1", "fd12::1", "api.internal"])("permits %s", (host) => {
    expect(allow.permits(host)).toBe(true);
  });

  it.each(["11.0.0.1", "127.0.0.2", "svc.cluster.local", "evilsvc.cluster.local", "user.svc.cluster.local.evil", "fe00::1", "::2", "api.internal.evil", "10.0.0.1.nip.io"])("refuses %s", (host) => {
    expect(allow.permits(host)).toBe(false);
  });

  it("matches entries by their canonical form", () => {
    const spelled = compileAllow(["API.Internal.", "::ffff:10.0.0.1", "0:0:0:0:0:0:0:1"]);
    expect(["api.internal", "10.0.0.1", "::1"].map((host) => spelled.permits(host))).toEqual([true, true, true]);
  });

  it.each([
    ["10.0.0.1/8", "bits are set past /8"],
    ["10.0.0.0/33", "prefix length must be 0–32"],
    ["::ffff:10.0.0.0/104", "an IPv4-mapped CIDR must be written as IPv4"],
    ["fd00::/129", "prefix length must be 0–128"],
    ["10.0.0.0/", "prefix length"],
    ["example.com/8", "not a CIDR"],
    ["*", "bad host"],
    ["*.10.0.0.1", "a pattern must be"],
    ["foo.*.local", "bad host"],
    ["0x7f.1", "not a dotted-decimal IPv4"],
    ["", "bad host"],
  ])("refuses the entry %j at construction, naming it", (entry, reason) => {
    const error = expectInvalid(() => compileAllow([entry]));
    expect(error.message).toContain(JSON.stringify(entry));
    expect(error.message).toContain(reason);
  });

  it("refuses an empty list and entries that are not strings", () => {
    expect(expectInvalid(() => compileAllow([])).message).toContain("at least one");
    expect(expectInvalid(() => compileAllow([42 as unknown as string])).message).toContain("not a string");
  });
});

describe("peers over canonical hosts", () => {
  const kratos = resolveFormat("kratos");
  const entry = (id: string, endpoints: string[]) => ({
    key: `/microservices/svc/${id}`,
    value: JSON.stringify({ id, name: "svc", version: "v1", metadata: null, endpoints }),
  });

  it("makes one peer of four spellings of one server", () => {
    const spellings = ["grpc://127.0.0.1:9000", "grpc://127.0.0.1.:9000", "grpc://[::ffff:127.0.0.1]:9000", "GRPC://[::FFFF:7F00:1]:09000"];
    const snapshot = decodeSnapshot(kratos, "svc", 1, spellings.map((e, i) => entry(String(i), [e])));
    expect(snapshot.skipped).toEqual([]);
    const set = buildPeerSet(snapshot, ["grpc"], undefined, "etcd");
    expect(set.peers.map((p) => p.url)).toEqual(["http://127.0.0.1:9000"]);
  });

  it("gives a filter on peer.host no spelling to miss", () => {
    const spellings = ["grpc://127.0.0.1:9000", "grpc://0x7f.1:9001", "grpc://2130706433:9002", "grpc://[::ffff:127.0.0.1]:9003", "grpc://127.1:9004", "grpc://[::ffff:7f00:1]:9005"];
    const snapshot = decodeSnapshot(kratos, "svc", 1, [...spellings.map((e, i) => entry(String(i), [e])), entry("good", ["grpc://10.0.0.2:9000"])]);
    const set = buildPeerSet(snapshot, ["grpc"], (p) => p.host !== "127.0.0.1", "etcd");
    expect(set.peers.map((p) => p.address)).toEqual(["10.0.0.2:9000"]);
  });

  it("keeps an instance's allowed endpoints and reports its refused ones", () => {
    const snapshot = decodeSnapshot(kratos, "svc", 1, [entry("mixed", ["grpc://169.254.169.254:80", "grpc://10.0.0.3:9000"])]);
    expect(snapshot.instances.map((i) => i.endpoints.map((e) => e.address))).toEqual([["10.0.0.3:9000"]]);
    expect(snapshot.skipped).toEqual([{ key: "/microservices/svc/mixed", reason: expect.stringContaining("169.254.169.254 is a link-local address") }]);
  });

  it("reports an allow refusal once while it lasts, and says in the error that allow refused the peers", () => {
    const reported: SkippedEntry[] = [];
    const gate = createAllowGate(["10.0.0.0/8"], (e) => reported.push(e));
    const outside = decodeSnapshot(kratos, "svc", 1, [entry("a", ["grpc://192.168.0.1:9000"])]);
    const set = buildPeerSet(outside, ["grpc"], undefined, "etcd", gate);
    expect(set.peers).toEqual([]);
    expect("unavailable" in set && set.unavailable).toContain("the allow option refuses their addresses, e.g. /microservices/svc/a");
    buildPeerSet({ ...outside, revision: 2 }, ["grpc"], undefined, "etcd", gate);
    expect(reported).toEqual([{ key: "/microservices/svc/a", reason: "the allow option refuses 192.168.0.1:9000" }]);
    const inside = decodeSnapshot(kratos, "svc", 3, [entry("a", ["grpc://192.168.0.1:9000", "grpc://10.0.0.1:9000"])]);
    expect(buildPeerSet(inside, ["grpc"], undefined, "etcd", gate).peers.map((p) => p.address)).toEqual(["10.0.0.1:9000"]);
    buildPeerSet(outside, ["grpc"], undefined, "etcd", gate);
    expect(reported).toHaveLength(2);
  });
});

describe("hostile entries in a real etcd", () => {
  let etcd: EtcdServer;
  let good: UserServer;
  const open: BalancedTransport[] = [];

  beforeAll(async () => {
    [etcd, good] = await Promise.all([startEtcd(), startUserServer()]);
  });

  afterAll(async () => {
    await Promise.all(open.map((t) => t.close()));
    await good?.stop();
    await etcd?.stop();
  });

  const put = (id: string, endpoints: string[]) =>
    putKey(etcd.endpoint, `/microservices/guarded/${id}`, JSON.stringify({ id, name: "guarded", version: "v1", metadata: null, endpoints }));

  function balanced(dialled: Peer[], options: Partial<Parameters<typeof createBalancedTransport>[0]> = {}) {
    const transport = createBalancedTransport({
      service: "guarded",
      discovery: etcdDiscovery({ endpoints: [etcd.endpoint], ttlMs: 1 }),
      transport: (peer) => {
        dialled.push(peer);
        return createGrpcTransport({ baseUrl: peer.url });
      },
      ...options,
    });
    open.push(transport);
    return transport;
  }

  it("calls only the good server, never dials a forbidden address, reports each refused key, and makes one peer of four spellings", async () => {
    const port = good.port;
    const hostile: Record<string, [string, string]> = {
      "metadata-v4": ["grpc://169.254.169.254:80", "link-local"],
      "link-local-v6": ["grpc://[fe80::1]:80", "link-local"],
      "mapped-metadata": ["grpc://[::ffff:169.254.169.254]:80", "169.254.169.254 is a link-local"],
      "aws-v6": ["grpc://[fd00:ec2::254]:80", "AWS metadata"],
      unspecified: [`grpc://0.0.0.0:${port}`, "unspecified"],
      "unspecified-v6": [`grpc://[::]:${port}`, "unspecified"],
      "gcp-name": ["grpc://metadata.google.internal:80", "metadata service name"],
      multicast: [`grpc://224.0.0.1:${port}`, "multicast"],
      hex: [`grpc://0x7f000001:${port}`, "not a dotted-decimal IPv4"],
      decimal: [`grpc://2130706433:${port}`, "not a dotted-decimal IPv4"],
      octal: [`grpc://0177.0.0.1:${port}`, "not a dotted-decimal IPv4"],
      huge: [`grpc://${"h".repeat(100_000)}:${port}`, "longer than 253 characters"],
      junk: [`grpc://ex%20ample:${port}`, "bad host"],
    };
    await put("good", [`grpc://127.0.0.1:${port}`]);
    for (const [id, spelling] of [["dot", "127.0.0.1."], ["mapped", "[::ffff:127.0.0.1]"], ["mapped-hex", "[::FFFF:7F00:1]"]]) {
      await put(id!, [`GRPC://${spelling}:${port}`]);
    }
    for (const [id, [endpoint]] of Object.entries(hostile)) {
      await put(id, [endpoint]);
    }
    const dialled: Peer[] = [];
    const recorder = eventRecorder();
    const transport = balanced(dialled, { onEvent: recorder.onEvent });
    const users = createClient(UserService, transport);
    for (let i = 0; i < 6; i++) {
      expect((await users.getUser({ id: String(i) })).servedBy).toBe(good.address);
    }
    expect(dialled.map((peer) => peer.url)).toEqual([`http://127.0.0.1:${port}`]);
    expect((await transport.peers()).map((peer) => peer.key)).toEqual(["/microservices/guarded/dot"]);
    const skipped = new Map(recorder.events.flatMap((e) => (e.type === "entry_skipped" ? [[e.key, e.reason] as const] : [])));
    for (const [id, [, reason]] of Object.entries(hostile)) {
      expect(skipped.get(`/microservices/guarded/${id}`), id).toContain(reason);
    }
    expect(skipped.size).toBe(Object.keys(hostile).length);
    expect([...skipped.values()].every((reason) => reason.length < 1_000)).toBe(true);
  });

  it("refuses peers outside allow, reports each once, and says so when none is left", async () => {
    const dialled: Peer[] = [];
    const recorder = eventRecorder();
    const transport = balanced(dialled, { allow: ["10.0.0.0/8"], onEvent: recorder.onEvent });
    const error = await rejection(transport.peers());
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain("the allow option refuses their addresses");
    const changed = recorder.next("snapshot");
    await put("another", ["grpc://192.168.7.7:9000"]);
    // each call past the 1 ms TTL starts a refresh (the old snapshot answers); one already in flight may predate the put
    let seen = false;
    void changed.then(() => (seen = true));
    while (!seen) {
      await rejection(transport.peers());
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect((await rejection(transport.peers())).message).toContain("the allow option refuses their addresses");
    const refusals = recorder.events.filter((e) => e.type === "entry_skipped" && e.reason.startsWith("the allow option"));
    expect(refusals.filter((e) => e.type === "entry_skipped" && e.key === "/microservices/guarded/good")).toHaveLength(1);
    expect(refusals).toContainEqual(expect.objectContaining({ key: "/microservices/guarded/another", reason: "the allow option refuses 192.168.7.7:9000" }));
    expect(dialled).toEqual([]);
  });

  it("refuses an invalid allow entry at construction, naming it", () => {
    const error = expectInvalid(() => balanced([], { allow: ["127.0.0.1", "10.0.0.0/40"] }));
    expect(error.message).toContain('allow entry "10.0.0.0/40" is invalid');
  });
});

function expectInvalid(construct: () => unknown): ConnectError {
  try {
    construct();
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    return error as ConnectError;
  }
  throw new Error("expected InvalidArgument");
}
