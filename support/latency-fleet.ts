// A fleet of @grpc/grpc-js EchoService servers, each in a child process of
// its own, each answering every call after its own fixed delay: the slow
// instance of issue 14's tail scenario (three in 2 ms, one in 60 ms) and
// anything like it. support/latency-server.ts is bundled with esbuild and run
// with plain node, so this works the same from vitest, tsx and the bundled
// bench.
import type { ChildProcess } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { bundleScript, firstJsonLine, spawnScript } from "./child-process.js";

// The repository root: support/ from source, .cache/ when bundled into the bench.
const root = fileURLToPath(new URL("..", import.meta.url));

export interface LatencyInstance {
  /** "127.0.0.1:port" */
  readonly address: string;
  /** How long the server waits before it answers each call. */
  readonly delayMs: number;
  readonly pid: number;
}

export interface LatencyFleet {
  readonly instances: readonly LatencyInstance[];
  /** "grpc://127.0.0.1:port" of each instance, for staticDiscovery(). */
  readonly endpoints: readonly string[];
  /** Ends every child process and waits for them to exit. */
  stop(): Promise<void>;
}

/**
 * Starts one server process per entry of `delaysMs` (in parallel) and
 * resolves once all of them listen. The children exit when their stdin
 * closes, so they do not outlive this process even if it is killed.
 */
export async function startLatencyFleet(delaysMs: readonly number[]): Promise<LatencyFleet> {
  mkdirSync(`${root}.cache`, { recursive: true });
  // One bundle per client process: a test and a bench may start fleets at the same time.
  const outfile = `${root}.cache/latency-server.${process.pid}.${Date.now()}.mjs`;
  await bundleScript("support/latency-server.ts", outfile);
  const children: Child[] = [];
  try {
    const started = await Promise.allSettled(delaysMs.map(async (delayMs) => {
      const child = startChild(outfile, delayMs);
      children.push(child);
      const port = await child.port;
      return { address: `127.0.0.1:${port}`, delayMs, pid: child.process.pid! };
    }));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed !== undefined) {
      throw failed.reason;
    }
    const instances = started.map((s) => (s as PromiseFulfilledResult<LatencyInstance>).value);
    return {
      instances,
      endpoints: instances.map((i) => `grpc://${i.address}`),
      stop: () => stopAll(children),
    };
  } catch (error) {
    await stopAll(children);
    throw error;
  } finally {
    rmSync(outfile, { force: true }); // loaded by every child by now (or never)
  }
}

interface Child {
  readonly process: ChildProcess;
  readonly port: Promise<number>;
  readonly exited: Promise<void>;
  readonly killOnExit: () => void;
}

function startChild(script: string, delayMs: number): Child {
  const spawned = spawnScript(script, [String(delayMs)]);
  const port = firstJsonLine<{ port: number }>(spawned, "latency server").then((line) => line.port);
  port.catch(() => {}); // reported by startLatencyFleet
  return { process: spawned.child, port, exited: spawned.exited, killOnExit: spawned.killOnExit };
}

async function stopAll(children: readonly Child[]): Promise<void> {
  await Promise.all(
    children.map(async ({ process: child, exited, killOnExit }) => {
      process.off("exit", killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin?.end();
        const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
        await exited;
        clearTimeout(timer);
      }
    }),
  );
}
