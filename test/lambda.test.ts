// The Lambda example in a fresh Node process, invoked like the Lambda runtime
// invokes it, against a real etcd whose own /metrics count the reads.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster, type Cluster } from "../support/cluster.js";

let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster({ service: "user-service", instances: 3 });
});

afterAll(async () => {
  await cluster?.stop();
});

describe("the Lambda example", () => {
  it("reads etcd on the cold invocation only, spreads calls, and lets the process exit", async () => {
    const runtime = fileURLToPath(new URL("./fixtures/lambda-runtime.ts", import.meta.url));
    const handler = new URL("../examples/lambda/handler.ts", import.meta.url).href;
    const child = spawn(process.execPath, ["--import", "tsx", runtime, handler], {
      env: { ...process.env, ETCD_ENDPOINTS: cluster.etcd.endpoint },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    const answers = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const invoke = async (id: string) => {
      child.stdin.write(`${JSON.stringify({ version: "2.0", routeKey: "GET /users/{id}", pathParameters: { id } })}\n`);
      const { value, done } = await answers.next();
      expect(done, stderr).toBe(false);
      const result = JSON.parse(value as string) as { statusCode: number; body: string };
      expect(result.statusCode, result.body).toBe(200);
      return JSON.parse(result.body) as { user: { id: string }; servedBy: string; peer: { address: string } };
    };

    const before = await cluster.etcd.rangeCount();
    const cold = await invoke("0");
    expect(await cluster.etcd.rangeCount()).toBe(before + 1);

    const served = [cold.servedBy];
    for (let i = 1; i < 9; i++) {
      const body = await invoke(String(i));
      expect(body.user.id).toBe(String(i));
      expect(body.peer.address).toBe(body.servedBy);
      served.push(body.servedBy);
    }
    expect(await cluster.etcd.rangeCount()).toBe(before + 1); // warm invocations within the TTL: no read
    expect(new Set(served)).toEqual(new Set(cluster.servers.map((s) => s.address)));

    child.stdin.end();
    const timeout = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const code = await exited;
    clearTimeout(timeout);
    expect(code, `the process did not exit by itself once the invocations ended\n${stderr}`).toBe(0);
    expect(stderr).toBe("");
  });
});
