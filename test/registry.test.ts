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
    ["grpc://[fe80::1%eth0]:9000", { host: "fe80::1%eth0", address: "[fe80::1%eth0]:9000" }],
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
    ["grpc://10.0.0.7:90x", 'bad port "90x"'],
    ["grpc://::1:9000", "IPv6 hosts must be in brackets"],
    ["grpc://user:pw@10.0.0.7:9000", "credentials are not allowed"],
    ["grpc://:9000", 'bad host ""'],
  ])("refuses %s", (raw, reason) => {
    expect(parseEndpoint(raw)).toEqual(expect.stringContaining(reason));
  });
});

describe("servicePrefix", () => {
  it("always ends with a slash so hello never matches helloworld", () => {
    expect(servicePrefix("/microservices", "hello")).toBe("/microservices/hello/");
    expect(servicePrefix("/microservices/", "hello")).toBe("/microservices/hello/");
    expect(servicePrefix("", "naming/billing")).toBe("naming/billing/");
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
