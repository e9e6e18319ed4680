// A fast rolling deploy, measured from the caller's side: a fleet of servers
// in a child process (support/fleet-process.ts) replaced one instance at a
// time while callers keep calling through one balanced transport. Used by the
// rolling-deploy test and by `npm run bench`.
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { bundleScript, spawnScript } from "./child-process.js";

export interface RollingDeployOptions {
  /** The etcd the fleet registers in. */
  readonly etcdEndpoint: string;
  readonly service: string;
  /** Follow the registry with a watch instead of the default polling. */
  readonly watch?: boolean;
  /** Instances registered at any time (default 10). */
  readonly instances?: number;
  /** One instance replaced this often (default 500 ms). */
  readonly replaceEveryMs?: number;
  /** How long the deploy lasts (default 20,000 ms). */
  readonly durationMs?: number;
  /** Callers calling in a loop (default 4). */
  readonly concurrency?: number;
}

export interface RollingDeployResult {
  readonly calls: number;
  readonly failed: number;
  /** Instances replaced during the run. */
  readonly replaced: number;
  /** The distinct error messages of the failed calls, with their counts (peer addresses masked). */
  readonly errors: Record<string, number>;
}

const root = fileURLToPath(new URL("..", import.meta.url));

export async function runRollingDeploy(options: RollingDeployOptions): Promise<RollingDeployResult> {
  const { instances = 10, replaceEveryMs = 500, durationMs = 20_000, concurrency = 4 } = options;
  const fleet = await startFleet(options.etcdEndpoint, options.service, instances);
  const transport = createBalancedTransport({
    service: options.service,
    discovery: etcdDiscovery({ endpoints: [options.etcdEndpoint], watch: options.watch === true }),
    transport: nodeHttp2Transport(),
    onEvent: () => {},
  });
  const client = createPeerClient(UserService, transport);
  let calls = 0;
  let failed = 0;
  const errors: Record<string, number> = {};
  try {
    await client.getUser({ id: "warm-up" }, { timeoutMs: 5_000 });
    const endAt = performance.now() + durationMs;
    const caller = async () => {
      while (performance.now() < endAt) {
        calls++;
        try {
          await client.getUser({ id: String(calls) }, { timeoutMs: 2_000 });
        } catch (error) {
          failed++;
          const message = String((error as Error).message).replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "ADDR");
          errors[message] = (errors[message] ?? 0) + 1;
        }
      }
    };
    const callers = Promise.all(Array.from({ length: concurrency }, caller));
    let replaced = 0;
    while (performance.now() < endAt) {
      await Promise.all([fleet.replace(), new Promise((resolve) => setTimeout(resolve, replaceEveryMs))]);
      replaced++;
    }
    await callers;
    return { calls, failed, replaced, errors };
  } finally {
    await transport.close();
    await fleet.stop();
  }
}

interface Fleet {
  /** Replaces the oldest instance; resolves once the new one is registered and the old one stopped. */
  replace(): Promise<void>;
  stop(): Promise<void>;
}

async function startFleet(etcdEndpoint: string, service: string, instances: number): Promise<Fleet> {
  const outfile = `${root}.cache/fleet-process.mjs`;
  await bundleScript("support/fleet-process.ts", outfile);
  const { child, exited, killOnExit } = spawnScript(outfile, [etcdEndpoint, service, String(instances)]);
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  lines.on("line", (line) => waiting.shift()?.(line));
  const nextLine = () =>
    new Promise<string>((resolve, reject) => {
      waiting.push(resolve);
      exited.then(() => reject(new Error("the fleet process exited")));
    });
  const ready = await nextLine();
  if (!ready.startsWith("ready ")) {
    child.kill("SIGKILL");
    throw new Error(`the fleet process said ${ready}`);
  }
  return {
    async replace() {
      const answer = nextLine();
      child.stdin!.write("replace\n");
      await answer;
    },
    async stop() {
      process.off("exit", killOnExit);
      child.stdin!.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
