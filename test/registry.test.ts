// Decoding registry entries: endpoints, kratos values, etcd-naming values.
import { describe, expect, it } from "vitest";
import { parseEndpoint } from "../src/registry/endpoint.js";
import { resolveFormat, servicePrefix } from "../src/registry/format.js";
import { decodeSnapshot } from "../src/discovery/decode.js";

describe("parseEndpoint", () => {
  it.each([
    ["grpc://10.0.0.7:9000", { scheme: "grpc", host: "10.0.0.7", port: 9000, address: "10.0.0.7:9000", url: "http://10.0.0.7:9000" }],
    ["grpcs://api.internal:443", { scheme: "grpcs", host: "api.internal", port: 443, address: "api.internal:443", url: "https://api.internal:443" }],
    ["grpc://10.0.0.7:9000?isSecure=true", { scheme: "grpcs", url: "https://10.0.0.7:9000" }],
    ["http://10.0.0.7:8000?isSecure=false", { scheme: "http", url: "http://10.0.0.7:8000" }],
    ["https://10.0.0.7", { scheme: "https", port: 443, address: "10.0.0.7:443" }],
    ["grpc://[::1]:9000", { host: "::1", port: 9000, address: "[::1]:9000", url: "http://[::1]:9000" }],
    ["grpc://[FD00:0:0:0:0:0:0:7]:9000", { host: "fd00::7", address: "[fd00::7]:9000", url: "http://[fd00::7]:9000" }],
    ["grpc://User-Service.NS.svc.cluster.local.:9000", { host: "user-service.ns.svc.cluster.local", address: "user-service.ns.svc.cluster.local:9000" }],
    ["GRPC://10.0.0.7:9000", { scheme: "grpc" }],
  ])("reads %s", (raw, expected) => {
    expect(parseEndpoint(raw)).toMatchObject(expected);
  });

  it.each([
    ["10.0.0.7:9000", "not a URL"],
    ["tcp://10.0.0.7:9000", 'unsupported scheme "tcp"'],
    ["grpc://10.0.0.7", "has no port"],
    ["grpc://10.0.0.7:0", 'bad port "0"'],
    ["grpc://10.0.0.7:65536", 'bad port "65536"'],
    ["grpc://10.0.0.7:90x", "has a port that is not a number"],
    ["grpc://::1:9000", "IPv6 hosts must be in brackets"],
    ["grpc://user:pw@10.0.0.7:9000", "credentials are not allowed"],
    ["grpc://:9000", 'bad host ""'],
    ["grpc://[fe80::1%eth0]:9000", "zone ids are not allowed"],
    ["grpc://0x7f000001:9000", 'numeric host "0x7f000001"'],
  ])("refuses %s", (raw, reason) => {
    expect(parseEndpoint(raw)).toEqual(expect.stringContaining(reason));
  });
});

describe("servicePrefix", () => {
  it("always ends with a slash so hello never matches helloworld", () => {
    expect(servicePrefix("/microservices", "hello")).toBe("/microservices/hello/");
    expect(servicePrefix("/microservices/", "hello")).toBe("/microservices/hello/");
    expect(servicePrefix("", "naming/billing")).toBe("naming/billing/");
    expect(servicePrefix("/", "hello")).toBe("/hello/"); // kratos with an empty namespace writes /hello/<id>
  });
});

describe("decodeSnapshot", () => {
  const kratos = resolveFormat("kratos");

  it("keeps the valid kratos entries and explains every skipped one", () => {
    const value = (fields: object) => JSON.stringify({ id: "1", name: "svc", version: "v2", metadata: null, endpoints: ["grpc://10.0.0.1:9000"], ...fields });
    const snapshot = decodeSnapshot(kratos, "svc", 42, [
      { key: "/microservices/svc/1", value: value({}) },
      { key: "/microservices/svc/2", value: value({ id: "2", metadata: { weight: "5" }, endpoints: ["tcp://x:1", "http://10.0.0.2:8000"] }) },
      { key: "/microservices/svc/3", value: "[1,2]" },
      { key: "/microservices/svc/4", value: value({ endpoints: "grpc://10.0.0.1:9000" }) },
      { key: "/microservices/svc/5", value: value({ metadata: { weight: 5 } }) },
      { key: "/microservices/svc/6", value: value({ endpoints: ["grpc://10.0.0.6"] }) },
    ]);
    expect(snapshot.revision).toBe(42);
    expect(snapshot.instances.map((i) => [i.id, i.version, i.metadata, i.endpoints.map((e) => e.address)])).toEqual([
      ["1", "v2", {}, ["10.0.0.1:9000"]],
      ["2", "v2", { weight: "5" }, ["10.0.0.2:8000"]],
    ]);
    expect(snapshot.skipped).toEqual([
      { key: "/microservices/svc/3", reason: "value is not a JSON object" },
      { key: "/microservices/svc/4", reason: "endpoints is not a list of strings" },
      { key: "/microservices/svc/5", reason: "metadata is not a map of strings" },
      { key: "/microservices/svc/6", reason: 'no usable endpoint: endpoint "grpc://10.0.0.6" has no port' },
    ]);
  });

  it("reads etcd-naming values and skips deletions", () => {
    const snapshot = decodeSnapshot(resolveFormat("etcd-naming"), "billing", 1, [
      { key: "billing/10.0.0.7:9000", value: '{"Op":0,"Addr":"10.0.0.7:9000","Metadata":{"zone":"b"}}' },
      { key: "billing/[::1]:9001", value: '{"Op":0,"Addr":"[::1]:9001","Metadata":null}' },
      { key: "billing/10.0.0.8:9000", value: '{"Op":1,"Addr":"10.0.0.8:9000"}' },
    ]);
    expect(snapshot.instances.map((i) => [i.id, i.name, i.metadata, i.endpoints[0]?.url])).toEqual([
      ["10.0.0.7:9000", "billing", { zone: "b" }, "http://10.0.0.7:9000"],
      ["[::1]:9001", "billing", {}, "http://[::1]:9001"],
    ]);
    expect(snapshot.skipped).toEqual([{ key: "billing/10.0.0.8:9000", reason: "Op is 1, not 0 (Add)" }]);
  });
});

describe("custom decoder results", () => {
  const good = { id: "good", endpoints: ["grpc://10.0.0.1:9000"] };
  it.each([
    ["null", null, "not an instance but null"],
    ["{}", {}, "endpoints is not a list of strings"],
    ["a number", 42, "not an instance but a number"],
    ["a string", "grpc://10.0.0.1:9000", "not an instance but a string"],
    ["an array", [good], "not an instance but an array"],
    ["endpoints as a string", { endpoints: "grpc://10.0.0.1:9000" }, "endpoints is not a list of strings"],
    ["endpoints with a number", { endpoints: [42] }, "endpoints is not a list of strings"],
    ["101 endpoints", { endpoints: Array(101).fill("grpc://10.0.0.1:9000") }, "more than 100 endpoints"],
    ["a numeric id", { id: 7, endpoints: ["grpc://10.0.0.1:9000"] }, "id is not a string"],
    ["an object name", { name: {}, endpoints: ["grpc://10.0.0.1:9000"] }, "name is not a string"],
    ["a numeric version", { version: 2, endpoints: ["grpc://10.0.0.1:9000"] }, "version is not a string"],
    ["a numeric metadata value", { metadata: { weight: 5 }, endpoints: ["grpc://10.0.0.1:9000"] }, "metadata is not a map of strings"],
    ["metadata as a string", { metadata: "zone=a", endpoints: ["grpc://10.0.0.1:9000"] }, "metadata is not a map of strings"],
    ["a throwing getter", { get endpoints(): string[] { throw new Error("getter broke"); } }, "reading the instance failed: getter broke"],
    ["a throwing Proxy", new Proxy({}, { get: () => { throw new Error("proxy broke"); } }), "reading the instance failed: proxy broke"],
    ["a Proxy of endpoints that throws", { endpoints: new Proxy(["grpc://10.0.0.1:9000"], { get: () => { throw new Error("array broke"); } }) }, "reading the instance failed: array broke"],
  ])("skips only the entry whose decoder returned %s", (_, result, reason) => {
    const decoder = (key: string) => (key.endsWith("/bad") ? result : good) as never;
    const snapshot = decodeSnapshot(resolveFormat(decoder), "svc", 1, [
      { key: "/custom/svc/good", value: "" },
      { key: "/custom/svc/bad", value: "" },
    ]);
    expect(snapshot.instances.map((i) => i.id)).toEqual(["good"]);
    expect(snapshot.skipped).toEqual([{ key: "/custom/svc/bad", reason: expect.stringContaining(reason) }]);
  });

  it("reports a decoder that throws something unprintable", () => {
    const unprintable = { toString: () => { throw new Error("no"); } };
    const decoder = (key: string) => {
      if (key.endsWith("/bad")) throw unprintable;
      return good;
    };
    const snapshot = decodeSnapshot(resolveFormat(decoder), "svc", 1, [{ key: "/custom/svc/good", value: "" }, { key: "/custom/svc/bad", value: "" }]);
    expect(snapshot.instances).toHaveLength(1);
    expect(snapshot.skipped).toEqual([{ key: "/custom/svc/bad", reason: "decoder threw: (an error that cannot be shown)" }]);
  });

  it("copies metadata into a fresh frozen object, where __proto__ is only a key", () => {
    const value = '{"id":"1","name":"svc","metadata":{"__proto__":{"polluted":"yes"},"zone":"a"},"endpoints":["grpc://10.0.0.1:9000"]}';
    const skipped = decodeSnapshot(resolveFormat("kratos"), "svc", 1, [{ key: "/microservices/svc/1", value }]).skipped;
    expect(skipped).toEqual([{ key: "/microservices/svc/1", reason: "metadata is not a map of strings" }]);

    const metadata = JSON.parse('{"__proto__":"x","constructor":"y","weight":"7"}') as Record<string, string>;
    const source = { id: "1", metadata, endpoints: ["grpc://10.0.0.1:9000"] };
    const [instance] = decodeSnapshot(resolveFormat(() => source), "svc", 1, [{ key: "/custom/svc/1", value: "" }]).instances;
    expect(instance!.metadata).not.toBe(metadata);
    expect(Object.isFrozen(instance!.metadata)).toBe(true);
    expect(Object.getPrototypeOf(instance!.metadata)).toBeNull();
    expect({ ...instance!.metadata }).toEqual({ ["__proto__"]: "x", constructor: "y", weight: "7" });
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
    metadata["zone"] = "changed later";
    expect(instance!.metadata["zone"]).toBeUndefined();
  });

  it("gives instances without metadata an empty map with no inherited keys", () => {
    const [instance] = decodeSnapshot(resolveFormat(() => good), "svc", 1, [{ key: "/custom/svc/1", value: "" }]).instances;
    expect(instance!.metadata["toString"]).toBeUndefined();
    expect(instance).toMatchObject({ id: "good", name: "svc", version: "" });
  });
});

describe("reasons, which end up in logs", () => {
  const reasonOf = (format: Parameters<typeof resolveFormat>[0], value: string) =>
    decodeSnapshot(resolveFormat(format), "svc", 1, [{ key: "/p/svc/1", value }]).skipped[0]?.reason ?? "(not skipped)";

  // A password written unescaped may hold "/", "?" or "#": the authority then
  // ends inside it and the rest read as a port, or (with digits) as a peer.
  it.each([
    "grpc://user:S3CRET/@10.0.0.1:9",
    "grpc://user:S3CRET?@10.0.0.1:9",
    "grpc://user:S3CRET#@10.0.0.1:9",
    "grpc://user:1234#@10.0.0.1:9",
    "grpc://169.254.169.254:80#@10.0.0.1:9",
    "grpc://10.0.0.1:9/path@S3CRET",
  ])("refuses %s for its \"@\" and shows nothing of it", (endpoint) => {
    const reason = parseEndpoint(endpoint);
    expect(reason).toBe('credentials are not allowed in an endpoint (it has an "@", so it is not shown)');
  });

  it("refuses an etcd-naming Addr with credentials and shows nothing of it", () => {
    const snapshot = decodeSnapshot(resolveFormat("etcd-naming"), "svc", 1, [
      { key: "svc/a", value: JSON.stringify({ Addr: "user:S3CRET#@10.0.0.1:9" }) },
      { key: "svc/b", value: JSON.stringify({ Addr: "user:1234#@10.0.0.1:9" }) },
    ]);
    expect(snapshot.instances).toEqual([]);
    expect(JSON.stringify(snapshot.skipped)).not.toMatch(/S3CRET|1234|10\.0\.0\.1/);
  });

  it("never shows a port that is not digits, and cuts a long one short", () => {
    const forged = parseEndpoint('grpc://10.0.0.1:9\nlevel=error msg="forged"') as string;
    expect(forged).toContain("has a port that is not a number");
    expect(forged).not.toMatch(/\n|forged/);
    expect(parseEndpoint("grpc://10.0.0.1:S3CRET")).not.toContain("S3CRET");
    expect((parseEndpoint(`grpc://10.0.0.1:${"9".repeat(100_000)}`) as string).length).toBeLessThan(200);
    expect((parseEndpoint(`${"g".repeat(100_000)}://10.0.0.1:9`) as string).length).toBeLessThan(200);
  });

  it("never echoes a value that is not JSON", () => {
    expect(reasonOf("kratos", "grpc://user:S3CRET@127.0.0.1:9")).toBe("value is not JSON (30 characters)");
  });

  it("drops what a decoder's error message quotes, and withholds one that may still hold a credential", () => {
    const parse = (_key: string, value: string) => JSON.parse(value) as never;
    const quoted = reasonOf(parse, "u:S3CRET@10.0.0.1:9");
    expect(quoted).toMatch(/^decoder threw: Unexpected token/);
    expect(quoted).not.toContain("S3CRET");
    expect(reasonOf(parse, "S3CRET-TOKEN")).not.toContain("S3CRET");
    const unquoted = () => { throw new SyntaxError("bad entry u:S3CRET@10.0.0.1:9"); };
    expect(reasonOf(unquoted, "")).toBe("decoder threw: SyntaxError (its message is not shown: it may quote a secret)");
    const url = () => { throw new Error("cannot reach https://vault.internal/token"); };
    expect(reasonOf(url, "")).not.toContain("vault");
    const cut = () => { throw new Error(`no color in "${"S3CRET".repeat(100)}"`); };
    expect(reasonOf(cut, "")).not.toContain("S3CRET");
  });

  it("caps every value it quotes", () => {
    const huge = "n".repeat(1_000_000);
    expect(reasonOf("kratos", JSON.stringify({ name: huge, endpoints: [] })).length).toBeLessThan(200);
    expect(reasonOf("etcd-naming", JSON.stringify({ Op: huge, Addr: "10.0.0.1:9" })).length).toBeLessThan(200);
    expect(reasonOf(() => { throw new Error("y".repeat(5_000_000)); }, "").length).toBeLessThan(300);
    const hundred = Array.from({ length: 100 }, (_, i) => `grpc://${"h".repeat(250)}.${i}:9`);
    const many = reasonOf("kratos", JSON.stringify({ name: "svc", endpoints: hundred }));
    expect(many).toContain("; and 97 more");
    expect(many.length).toBeLessThan(1_000);
  });

  it("skips a decoder that returns a Promise, and its rejection is not left unhandled", async () => {
    const unhandled: unknown[] = [];
    const record = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", record);
    try {
      expect(reasonOf(() => Promise.reject(new Error("x")) as never, "")).toBe("decoder returned a Promise (decoders must be synchronous)");
      expect(reasonOf((async () => ({ endpoints: ["grpc://10.0.0.1:9"] })) as never, "")).toBe("decoder returned a Promise (decoders must be synchronous)");
      await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      process.off("unhandledRejection", record);
    }
    expect(unhandled).toEqual([]);
  });

  it("reads the length of endpoints once: a Proxy cannot grow it past the bound", () => {
    let reads = 0;
    const endpoints = new Proxy(["grpc://10.0.0.1:9"], {
      get: (target, property) => (property === "length" ? (reads++ === 0 ? 1 : 1_000_000) : Reflect.get(target, property)),
    });
    const snapshot = decodeSnapshot(resolveFormat(() => ({ endpoints })), "svc", 1, [{ key: "/p/svc/1", value: "" }]);
    expect(snapshot.instances.map((i) => i.endpoints.length)).toEqual([1]);
    expect(reads).toBe(1);
  });

  it("escapes control and non-ASCII characters in what it quotes", () => {
    const reason = reasonOf("kratos", JSON.stringify({ name: "svc\nlevel=error\u2028\u202e", endpoints: [] }));
    expect(reason).toBe('registered name "svc\\nlevel=error\\u2028\\u202e" is not "svc"');
  });
});
