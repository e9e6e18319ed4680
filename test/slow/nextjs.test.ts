// The Next.js example built with `next build` and served by `next start`,
// against a real etcd and real servers on loopback: the Edge route calls the
// instances' http:// endpoints (Connect over HTTP/1.1, fetch), the Node route
// their grpc:// endpoints (gRPC over HTTP/2).
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startEtcd, type EtcdServer } from "../../support/etcd.js";
import { registerKratos, type Registration } from "../../support/registry.js";
import { startUserServer, type UserServer } from "../../support/user-server.js";
import { countBy } from "../helpers.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const appDir = fileURLToPath(new URL("../../examples/nextjs", import.meta.url));
const nextBin = fileURLToPath(new URL("../../node_modules/next/dist/bin/next", import.meta.url));

let etcd: EtcdServer | undefined;
const h2: UserServer[] = [];
const h1: UserServer[] = [];
const registrations: Registration[] = [];
let next: ChildProcess | undefined;
let nextOutput = () => "";
let baseUrl = "";

/** The environment of `next build` and `next start`: no vitest leftovers (NODE_ENV=test), no telemetry. */
function nextEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NEXT_TELEMETRY_DISABLED: "1", ...extra };
  delete env["NODE_ENV"];
  for (const name of Object.keys(env).filter((name) => name.startsWith("VITEST") || name === "TEST")) {
    delete env[name];
  }
  return env;
}

/** Runs a next command in its own process group; resolves with its output once `until` appears in stdout, or once it exits 0. */
function runNext(args: string[], env: NodeJS.ProcessEnv, until?: string): { child: ChildProcess; done: Promise<string>; output(): string } {
  const child = spawn(process.execPath, [nextBin, ...args], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  const done = new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (until !== undefined && output.includes(until)) {
        resolve(output);
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      if (code === 0 && until === undefined) {
        resolve(output);
      } else {
        reject(new Error(`next ${args.join(" ")} exited with ${signal ?? code}:\n${output.slice(-4000)}`));
      }
    });
  });
  return { child, done, output: () => output };
}

/** SIGTERM to the whole process group, SIGKILL after 5 s; resolves once the leader has exited and the group is gone. */
async function killGroup(child: ChildProcess): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) {
    return;
  }
  const signalGroup = (signal: NodeJS.Signals | 0) => {
    try {
      process.kill(-pid, signal);
      return true;
    } catch {
      return false; // ESRCH: nobody left in the group
    }
  };
  const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once("exit", () => resolve()));
  signalGroup("SIGTERM");
  const timer = setTimeout(() => signalGroup("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
  // The leader is gone; make sure nothing it started outlives it.
  for (let i = 0; i < 50 && signalGroup(0); i++) {
    signalGroup(i < 20 ? "SIGTERM" : "SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

beforeAll(async () => {
  etcd = await startEtcd();
  h2.push(...(await Promise.all([0, 1, 2].map(() => startUserServer({ httpVersion: "2" })))));
  h1.push(...(await Promise.all([0, 1, 2].map(() => startUserServer({ httpVersion: "1.1" })))));
  for (let i = 0; i < 3; i++) {
    registrations.push(
      await registerKratos(etcd.endpoint, {
        id: `user-service-${i}`,
        name: "user-service",
        version: "v1",
        metadata: null,
        endpoints: [`grpc://${h2[i]!.address}`, `http://${h1[i]!.address}`],
      }),
    );
  }

  const build = runNext(["build", appDir], nextEnv());
  next = build.child; // killed by afterAll should the build hang
  await build.done;

  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  const start = runNext(["start", appDir, "-p", String(port), "-H", "127.0.0.1"], nextEnv({ ETCD_ENDPOINTS: etcd.endpoint }), "Ready");
  next = start.child;
  nextOutput = start.output;
  await start.done;
});

afterAll(async () => {
  if (next) {
    await killGroup(next);
  }
  await Promise.allSettled(registrations.map((r) => r.deregister()));
  await Promise.allSettled([...h2, ...h1].map((s) => s.stop()));
  await etcd?.stop();
});

interface RouteBody {
  readonly message: { user: { id: string; name: string }; servedBy: string };
  readonly peer: { address: string; id: string; scheme: string; url: string };
}

async function callRoute(path: string): Promise<RouteBody> {
  const response = await fetch(`${baseUrl}${path}`);
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as RouteBody;
}

describe("the Next.js example under next start", () => {
  it.each([
    { route: "edge", scheme: "http", servers: h1 },
    { route: "node", scheme: "grpc", servers: h2 },
  ])("the $route route answers with the peer that served each call and spreads calls over every instance", async ({ route, scheme, servers }) => {
    const before = await etcd!.rangeCount();
    const served: string[] = [];
    for (let i = 0; i < 9; i++) {
      const body = await callRoute(`/api/${route}/users/${i}`);
      expect(body.message.user).toEqual({ id: String(i), name: `user ${i}` });
      expect(body.peer.address).toBe(body.message.servedBy);
      expect(body.peer.scheme).toBe(scheme);
      // the peer is the registered instance whose endpoint answered
      expect(body.peer.id).toBe(`user-service-${servers.findIndex((s) => s.address === body.peer.address)}`);
      served.push(body.message.servedBy);
    }
    expect(countBy(served)).toEqual(Object.fromEntries(servers.map((s) => [s.address, 3])));
    // the transport lives at module scope: one registry read, then warm requests reuse the snapshot
    expect(await etcd!.rangeCount()).toBe(before + 1);
    expect(nextOutput()).not.toMatch(/⨯|error|warn/i);
  });
});
