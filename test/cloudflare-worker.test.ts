// The Cloudflare Worker example, bundled with esbuild and run in workerd (via
// miniflare) against a real etcd and real Connect servers on loopback.
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy } from "./helpers.js";

let etcd: EtcdServer;
let servers: UserServer[] = [];
let worker: Miniflare | undefined;

beforeAll(async () => {
  etcd = await startEtcd();
  servers = await Promise.all([1, 2, 3].map(() => startUserServer({ httpVersion: "1.1" })));
  for (const [i, server] of servers.entries()) {
    await registerKratos(etcd.endpoint, {
      id: `user-service-${i}`,
      name: "user-service",
      version: "v1",
      metadata: null,
      endpoints: [`grpc://127.0.0.1:1`, `http://${server.address}`],
    });
  }
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("../examples/cloudflare-worker/worker.ts", import.meta.url))],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    conditions: ["workerd", "worker", "browser"],
    external: ["cloudflare:workers"],
    target: "es2022",
    logLevel: "silent",
  });
  worker = new Miniflare({
    modules: true,
    script: bundle.outputFiles[0]!.text,
    compatibilityDate: "2026-04-01",
    bindings: { ETCD_ENDPOINTS: etcd.endpoint },
  });
  await worker.ready;
});

afterAll(async () => {
  await worker?.dispose();
  await Promise.all(servers.map((s) => s.stop()));
  await etcd?.stop();
});

describe("the Cloudflare Worker example in workerd", () => {
  it("answers with the peer that served each call and spreads calls over every instance", async () => {
    const before = await etcd.rangeCount();
    const served: string[] = [];
    for (let i = 0; i < 9; i++) {
      const response = await worker!.dispatchFetch(`http://worker.local/users/${i}`);
      const body = (await response.json()) as { message: { user: { id: string }; servedBy: string }; peer: { address: string; scheme: string } };
      expect(response.status, JSON.stringify(body)).toBe(200);
      expect(body.message.user.id).toBe(String(i));
      expect(body.peer.address).toBe(body.message.servedBy);
      expect(body.peer.scheme).toBe("http");
      served.push(body.message.servedBy);
    }
    expect(countBy(served)).toEqual(Object.fromEntries(servers.map((s) => [s.address, 3])));
    expect(await etcd.rangeCount()).toBe(before + 1); // one isolate, one snapshot within the TTL
  });
});
