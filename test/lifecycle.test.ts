// close() must leave nothing behind: a Node process (like a Lambda handler
// process) exits by itself once the balancer is closed.
import { spawn } from "node:child_process";
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

/** Runs the fixture in a fresh Node process; resolves with its exit code and output, or fails if it does not exit in time. */
function runFixture(factory: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = fileURLToPath(new URL("./fixtures/call-then-close.ts", import.meta.url));
  const child = spawn(process.execPath, ["--import", "tsx", script, cluster.etcd.endpoint, factory], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the process did not exit within 20 s after close(); output:\n${stdout}\n${stderr}`));
    }, 20_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("close()", () => {
  for (const factory of ["createGrpcTransport", "nodeHttp2Transport"]) {
    it(`lets the process exit by itself (per-peer transports from ${factory})`, async () => {
      const { code, stdout, stderr } = await runFixture(factory);
      expect(stderr).toBe("");
      expect(code).toBe(0);
      const lines = stdout.trim().split("\n").map((line) => line.split(" "));
      expect(lines).toHaveLength(9);
      expect(lines[8]).toEqual(["pending", "true"]);
      for (const [, peer, servedBy] of lines.slice(0, 8)) {
        expect(peer).toBe(servedBy);
      }
      expect(new Set(lines.slice(0, 6).map(([, peer]) => peer))).toEqual(new Set(cluster.servers.map((s) => s.address)));
    });
  }
});
