// A throwaway etcd server on free loopback ports, for the demo and the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface EtcdServer {
  /** Client URL, e.g. "http://127.0.0.1:41234". */
  readonly endpoint: string;
  /** How many Range requests etcd has served, read from its own /metrics. */
  rangeCount(): Promise<number>;
  /** How many watchers are open on etcd now, from its own /metrics. */
  watcherCount(): Promise<number>;
  /** Stops the process and removes its data directory. */
  stop(): Promise<void>;
  /** Stops the process and starts it again on the same ports and data. */
  restart(): Promise<void>;
}

/** A port the kernel just handed out and released; etcd binds it right after. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, host, resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function startEtcd(): Promise<EtcdServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "etcd-"));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    "--name", "default",
    "--data-dir", join(dataDir, "data"),
    "--listen-client-urls", endpoint,
    "--advertise-client-urls", endpoint,
    "--listen-peer-urls", peerUrl,
    "--initial-advertise-peer-urls", peerUrl,
    "--initial-cluster", `default=${peerUrl}`,
  ];
  let child: ChildProcess | undefined;
  const run = async () => {
    child = spawn(process.env["ETCD_BIN"] ?? "etcd", args, { stdio: ["ignore", "ignore", "pipe"] });
    await waitForOutput(child, "ready to serve client requests", 30_000);
  };
  const stop = async () => {
    if (child !== undefined) {
      await stopProcess(child);
    }
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await run();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    endpoint,
    stop,
    async restart() {
      await stopProcess(child!);
      await run();
    },
    rangeCount: () => metric(endpoint, /^grpc_server_started_total\{grpc_method="Range",[^}]*\} (\d+)$/m),
    watcherCount: () => metric(endpoint, /^etcd_debugging_mvcc_watcher_total (\d+)$/m),
  };
}

async function metric(endpoint: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const match = pattern.exec(text);
  if (!match) {
    throw new Error(`etcd /metrics has no line matching ${pattern}`);
  }
  return Number(match[1]);
}

function waitForOutput(child: ChildProcess, needle: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => done(new Error(`etcd did not start within ${timeoutMs} ms:\n${seen.slice(-2000)}`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes(needle)) {
        done();
      }
    };
    const onExit = (code: number | null) => done(new Error(`etcd exited with ${code} before it was ready:\n${seen.slice(-2000)}`));
    const onError = (error: Error) =>
      done(new Error(`cannot run etcd (${error.message}); install it with: apt-get install -y etcd-server etcd-client`));
    function done(error?: Error) {
      clearTimeout(timer);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      child.off("error", onError);
      // keep draining stderr so etcd never blocks on a full pipe
      child.stderr?.resume();
      error ? reject(error) : resolve();
    }
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
    child.once("error", onError);
  });
}

export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}
