// A support script run as a process of its own, as a server runs in
// production: bundled by esbuild so that plain node (from vitest, tsx or the
// bench's bundle) can run it, spawned, and read for the first JSON line it
// prints once it is ready.
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

export const repositoryRoot = fileURLToPath(new URL("..", import.meta.url));

/** Bundles `entry` (a path from the repository root) into `outfile`, its packages left to node_modules. */
export async function bundleScript(entry: string, outfile: string): Promise<void> {
  await build({
    absWorkingDir: repositoryRoot,
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    logLevel: "warning",
    outfile,
  });
}

export interface SpawnedScript {
  readonly child: ChildProcess;
  /** Resolves when the child has exited. */
  readonly exited: Promise<void>;
  /** Kills the child if this process exits first; remove it with process.off("exit", …) once the child is stopped. */
  readonly killOnExit: () => void;
}

/** Runs a bundled script with node; stdin and stdout are piped (the scripts here exit when stdin closes). */
export function spawnScript(script: string, args: readonly string[]): SpawnedScript {
  const child = spawn(process.execPath, [script, ...args], { cwd: repositoryRoot, stdio: ["pipe", "pipe", "inherit"] });
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { child, exited, killOnExit };
}

/** The first line the child prints, parsed as JSON; rejects naming `what` if it exits first or says nothing within 20 s. */
export function firstJsonLine<T>({ child, exited }: SpawnedScript, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let buffered = "";
    const timer = setTimeout(() => reject(new Error(`${what}: nothing printed within 20 s`)), 20_000);
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buffered.slice(0, newline)) as T);
      } catch (error) {
        reject(error);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${what} exited early (code ${child.exitCode}, signal ${child.signalCode})`));
    });
  });
}
