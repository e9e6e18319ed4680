// A throwaway etcd server on free loopback ports, for the demo and the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface EtcdServer {
  /** Client URL, e.g. "http://127.0.0.1:41234". */
  readonly endpoint: string;
  /** How many Range requests etcd has served, read from its own /metrics (plain-HTTP etcd only: it uses the global fetch). */
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

export interface StartEtcdOptions {
  /**
   * Serve the client URL over TLS with this certificate and key (PEM), e.g.
   * from makeTestCertificates(): the endpoint is then https://127.0.0.1:PORT.
   */
  readonly tls?: { readonly cert: string; readonly key: string };
}

/**
 * A throwaway etcd. A port freePort() handed out can be taken by another
 * process before etcd binds it (tests run in parallel): then it starts again
 * on other ports.
 */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startEtcdOnce(options);
    } catch (error) {
      if (attempt === 3 || !String(error).includes("address already in use")) {
        throw error;
      }
    }
  }
}

async function startEtcdOnce({ tls }: StartEtcdOptions): Promise<EtcdServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "etcd-"));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `${tls ? "https" : "http"}://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const tlsArgs: string[] = [];
  if (tls) {
    await writeFile(join(dataDir, "server.pem"), tls.cert);
    await writeFile(join(dataDir, "server.key"), tls.key, { mode: 0o600 });
    tlsArgs.push("--cert-file", join(dataDir, "server.pem"), "--key-file", join(dataDir, "server.key"));
  }
  const args = [
    "--name", "default",
    "--data-dir", join(dataDir, "data"),
    "--listen-client-urls", endpoint,
    "--advertise-client-urls", endpoint,
    "--listen-peer-urls", peerUrl,
    "--initial-advertise-peer-urls", peerUrl,
    "--initial-cluster", `default=${peerUrl}`,
    ...tlsArgs,
  ];
  let child: ChildProcess | undefined;
  const run = async () => {
    child = spawnEtcd(args, dataDir);
    await waitForOutput(child, "ready to serve client requests", 30_000);
  };
  const stop = async () => {
    if (child !== undefined) {
      await stopProcess(child);
    }
    await removeDir(dataDir);
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
    rangeCount: () => rangeCountAt(endpoint),
    watcherCount: () => watcherCountAt(endpoint),
  };
}

/** How many Range requests the etcd member at `endpoint` has served (plain-HTTP endpoints only). */
export const rangeCountAt = (endpoint: string) => metric(endpoint, /^grpc_server_started_total\{grpc_method="Range",[^}]*\} (\d+)$/m);

/** How many watchers are open on the etcd member at `endpoint` now (plain-HTTP endpoints only). */
export const watcherCountAt = (endpoint: string) => metric(endpoint, /^etcd_debugging_mvcc_watcher_total (\d+)$/m);

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

// Every etcd this process started and every data directory it made, so that a
// test run that ends without reaching its afterAll (a crash, a timeout, a
// Ctrl-C of vitest's worker) still leaves no etcd process or directory behind.
const running = new Set<ChildProcess>();
const dataDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) {
    return;
  }
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of running) {
      child.kill("SIGKILL");
    }
    for (const dir of dataDirs) {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

function spawnEtcd(args: readonly string[], dataDir: string): ChildProcess {
  installExitHook();
  dataDirs.add(dataDir);
  const child = spawn(process.env["ETCD_BIN"] ?? "etcd", args, { stdio: ["ignore", "ignore", "pipe"] });
  running.add(child);
  child.once("exit", () => running.delete(child));
  child.once("error", () => running.delete(child));
  return child;
}

async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  dataDirs.delete(dir);
}

export interface EtcdMember {
  /** The member's name in --initial-cluster, e.g. "m1". */
  readonly name: string;
  /** Its client URL, e.g. "http://127.0.0.1:41234". */
  readonly endpoint: string;
  /** Its peer URL. */
  readonly peerUrl: string;
  /** The process id, while it runs. */
  readonly pid: number | undefined;
  /** False once the process has exited (killed or stopped). */
  readonly alive: boolean;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** The client URLs of all members, in member order. */
  readonly endpoints: readonly string[];
  /**
   * The index of the member that is leader now, asked of the living members
   * (/v3/maintenance/status: header.member_id === leader); waits up to
   * `timeoutMs` for a leader that the living members agree on.
   */
  leader(timeoutMs?: number): Promise<number>;
  /** SIGKILLs member `index` and resolves once the process is gone. */
  kill(index: number): Promise<void>;
  /** Stops every member still running and removes every data directory. */
  stop(): Promise<void>;
}

export interface StartEtcdClusterOptions {
  /** Raft heartbeat in ms (default 50; etcd's default is 100). */
  readonly heartbeatMs?: number;
  /** Raft election timeout in ms (default 250; etcd's default is 1,000). */
  readonly electionMs?: number;
}

interface MemberStatus {
  header?: { member_id?: string };
  leader?: string;
}

/**
 * Starts an etcd cluster of `size` members on free loopback ports (a new
 * cluster with a random token) and resolves once every member serves client
 * requests and all of them name the same leader.
 */
export async function startEtcdCluster(size = 3, { heartbeatMs = 50, electionMs = 250 }: StartEtcdClusterOptions = {}): Promise<EtcdCluster> {
  const root = await mkdtemp(join(tmpdir(), "etcd-cluster-"));
  dataDirs.add(root);
  const token = `test-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const specs: { name: string; endpoint: string; peerUrl: string }[] = [];
  const ports = new Set<number>();
  while (specs.length < size) {
    const client = await freePort();
    const peer = await freePort();
    if (ports.has(client) || ports.has(peer) || client === peer) {
      continue; // the kernel may hand out a released port again
    }
    ports.add(client).add(peer);
    specs.push({ name: `m${specs.length}`, endpoint: `http://127.0.0.1:${client}`, peerUrl: `http://127.0.0.1:${peer}` });
  }
  const initialCluster = specs.map((s) => `${s.name}=${s.peerUrl}`).join(",");
  const children: ChildProcess[] = [];
  const members: EtcdMember[] = specs.map((spec, index) => ({
    ...spec,
    get pid() {
      return children[index]?.pid;
    },
    get alive() {
      const child = children[index];
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
  }));

  // SIGKILL: a throwaway cluster has nothing to save, and a SIGTERMed leader
  // first tries to hand its leadership to followers that are stopping too.
  const kill = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      return;
    }
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  };
  const stop = async () => {
    await Promise.all(children.map(kill));
    await removeDir(root);
  };

  async function statusOf(endpoint: string): Promise<MemberStatus> {
    const response = await fetch(`${endpoint}/v3/maintenance/status`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
      signal: AbortSignal.timeout(1_000),
    });
    if (!response.ok) {
      throw new Error(`${endpoint}/v3/maintenance/status: ${response.status} ${await response.text()}`);
    }
    return (await response.json()) as MemberStatus;
  }

  async function leader(timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let last = "no answer yet";
    for (;;) {
      const living = members.map((m, i) => ({ m, i })).filter(({ m }) => m.alive);
      const answers = await Promise.allSettled(living.map(({ m }) => statusOf(m.endpoint)));
      const statuses = answers.flatMap((a, k) => (a.status === "fulfilled" ? [{ index: living[k]!.i, status: a.value }] : []));
      const leaders = new Set(statuses.map(({ status }) => status.leader));
      if (statuses.length === living.length && leaders.size === 1) {
        const id = [...leaders][0];
        const found = statuses.find(({ status }) => status.header?.member_id === id);
        if (found !== undefined && id !== undefined && id !== "0") {
          return found.index;
        }
      }
      last = answers.map((a) => (a.status === "fulfilled" ? `leader ${a.value.leader}` : String(a.reason))).join("; ");
      if (Date.now() > deadline) {
        throw new Error(`the etcd cluster agreed on no leader within ${timeoutMs} ms (${last})`);
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  try {
    for (const spec of specs) {
      const args = [
        "--name", spec.name,
        "--data-dir", join(root, spec.name),
        "--listen-client-urls", spec.endpoint,
        "--advertise-client-urls", spec.endpoint,
        "--listen-peer-urls", spec.peerUrl,
        "--initial-advertise-peer-urls", spec.peerUrl,
        "--initial-cluster", initialCluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--heartbeat-interval", String(heartbeatMs),
        "--election-timeout", String(electionMs),
      ];
      children.push(spawnEtcd(args, root));
    }
    // A member of a cluster is ready once it has joined and a leader exists.
    await Promise.all(children.map((child) => waitForOutput(child, "ready to serve client requests", 30_000)));
    await leader();
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    members,
    endpoints: specs.map((s) => s.endpoint),
    leader,
    async kill(index) {
      const child = children[index];
      if (child === undefined) {
        throw new Error(`no etcd member ${index}`);
      }
      await kill(child);
    },
    stop,
  };
}
