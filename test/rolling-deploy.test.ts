// A fast rolling deploy with the default polling discovery (ttlMs 10 s, no
// watch): ten instances in a process of their own, one replaced every 0.5 s,
// each deregistered before it stops. Within one TTL the whole fleet is
// replaced; callers must barely notice.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { runRollingDeploy } from "../support/rolling-deploy.js";

let etcd: EtcdServer;

beforeAll(async () => {
  etcd = await startEtcd();
});

afterAll(async () => {
  await etcd?.stop();
});

describe("a rolling deploy with the default polling", () => {
  it("fails at most 0.5 % of the calls while every instance is replaced", { timeout: 60_000 }, async () => {
    const result = await runRollingDeploy({ etcdEndpoint: etcd.endpoint, service: "rolling-service", durationMs: 10_000 });
    console.log(`rolling deploy, polling: ${result.failed} of ${result.calls} calls failed, ${result.replaced} instances replaced`, result.errors);
    expect(result.replaced).toBeGreaterThanOrEqual(12); // more than the fleet: no instance of the first snapshot is left
    expect(result.calls).toBeGreaterThan(1_000);
    expect(result.failed / result.calls).toBeLessThanOrEqual(0.005);
  });
});
