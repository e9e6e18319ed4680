// The Bun/Deno example run by the real runtimes against a real etcd and three
// real HTTP/1.1 Connect servers on loopback: bundled by esbuild into one ES
// module (the universal entry with its Connect and protobuf dependencies, as
// an app ships it), and as TypeScript source.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos, type Registration } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy } from "./helpers.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const script = join(root, "examples/bun-deno/call-service.ts");
const bun = join(root, "node_modules/.bin/bun");
const deno = join(root, "node_modules/.bin/deno");
const service = "user-service";
const calls = 9;

let etcd: EtcdServer | undefined;
let servers: UserServer[] = [];
let registrations: Registration[] = [];
let dir: string | undefined;
let bundle = "";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bun-deno-"));
  etcd = await startEtcd();
  servers = await Promise.all([1, 2, 3].map(() => startUserServer({ httpVersion: "1.1" })));
  registrations = await Promise.all(
    servers.map((server, i) =>
      registerKratos(etcd!.endpoint, {
        id: `user-service-${i}`,
        name: service,
        version: "v1",
        metadata: null,
        endpoints: [`http://${server.address}`],
      }),
    ),
  );
  bundle = join(dir, "call-service.js");
  await build({
    entryPoints: [script],
    outfile: bundle,
    bundle: true,
    format: "esm",
    platform: "neutral",
    mainFields: ["module", "main"],
    target: "es2022",
    logLevel: "silent",
  });
});

afterAll(async () => {
  await Promise.allSettled(registrations.map((r) => r.deregister()));
  await Promise.all(servers.map((s) => s.stop()));
  await etcd?.stop();
  if (dir) {
    await rm(dir, { recursive: true, force: true });
  }
});

interface Run {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a runtime with a minimal environment (no proxy settings, caches and
 * home in the temp dir, no update check or telemetry) and collects its output.
 */
async function run(command: string, args: readonly string[], { cwd = dir!, env = {} }: { cwd?: string; env?: Record<string, string> } = {}): Promise<Run> {
  const child = spawn(command, args, {
    cwd,
    env: {
      PATH: process.env["PATH"] ?? "/usr/bin:/bin",
      HOME: dir!,
      DENO_DIR: join(dir!, "deno"),
      DENO_NO_UPDATE_CHECK: "1",
      DO_NOT_TRACK: "1",
      NO_COLOR: "1",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000); // a hang fails as a signal, not a test timeout
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code, signal) => resolve([code, signal]));
    });
    return { code, signal, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

interface Case {
  readonly name: string;
  readonly command: string;
  readonly args: () => string[];
  readonly cwd?: () => string;
  readonly env?: () => Record<string, string>;
}

const viaArgv = () => [etcd!.endpoint, service, String(calls)];
const viaEnv = () => ({ ETCD_ENDPOINT: etcd!.endpoint, SERVICE: service, CALLS: String(calls) });

const cases: Case[] = [
  { name: "bun runs the esbuild bundle", command: bun, args: () => ["run", bundle, ...viaArgv()] },
  {
    name: "deno runs the esbuild bundle with --allow-net=127.0.0.1 only",
    command: deno,
    args: () => ["run", "--no-prompt", "--allow-net=127.0.0.1", bundle, ...viaArgv()],
  },
  // Source runs resolve @connectrpc/* and @bufbuild/* from the repository's node_modules.
  { name: "bun runs the TypeScript source", command: bun, args: () => ["run", script], cwd: () => root, env: viaEnv },
  {
    name: "deno runs the TypeScript source (--sloppy-imports maps .js specifiers to .ts)",
    command: deno,
    args: () => ["run", "--no-prompt", "--sloppy-imports", "--allow-net=127.0.0.1", "--allow-env=ETCD_ENDPOINT,SERVICE,CALLS", script],
    cwd: () => root,
    env: viaEnv,
  },
];

describe("the Bun/Deno example", () => {
  for (const c of cases) {
    it(`${c.name}: every call names the peer that served it, and calls spread over every instance`, async () => {
      const before = await etcd!.rangeCount();
      const result = await run(c.command, c.args(), { cwd: c.cwd?.(), env: c.env?.() });
      expect(result.code, `exit code ${result.code} (signal ${result.signal})\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`).toBe(0);
      expect(result.stderr).toBe("");
      const lines = result.stdout
        .split("\n")
        .filter((line) => line.trim() !== "")
        .map((line) => JSON.parse(line) as { call: number; peer: string; servedBy: string });
      expect(lines.map((line) => line.call)).toEqual([...Array(calls).keys()]);
      for (const line of lines) {
        expect(line.peer).toBe(line.servedBy);
      }
      expect(countBy(lines.map((line) => line.servedBy))).toEqual(Object.fromEntries(servers.map((s) => [s.address, calls / servers.length])));
      expect(await etcd!.rangeCount()).toBe(before + 1); // one registry read, then the snapshot
    });
  }

  it("type-checks under deno check", async () => {
    const result = await run(deno, ["check", "--sloppy-imports", script], { cwd: root });
    expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
  });
});
