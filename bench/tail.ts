// Issue 14, item 1: does a policy keep away from a slow instance when the
// servers are real processes and the client is noisy? Four @grpc/grpc-js
// servers, each in a process of its own (support/latency-fleet.ts), three
// answering in 2 ms and one in 60 ms; this process is the only client:
// 8 concurrent callers, 100 warm-up calls then 600 measured calls, over a
// fresh createBalancedTransport per policy, per-peer transport and run. Per
// run: p50 and p99 of the measured calls, the slow instance's share of them,
// and each policy's p99 over the baseline's (round_robin) in the same run.
//
// "noisy": while the calls run, a timer in this process busy-waits 5–20 ms
// at random gaps of 10–100 ms, as a GC pause or a busy event loop would: the
// fast peers' latency samples spike although the peers did not slow down.
//
// Used by bench/index.ts and test/slow/p2c-noise.test.ts.
// Alone: npx tsx bench/tail.ts [runs] [quiet|noisy|both]
import { loadavg } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { EchoRequestSchema, EchoService } from "../gen/test/echo/v1/echo_pb.js";
import { createBalancedTransport, staticDiscovery, type Balancer, type BalancerName, type Peer } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startLatencyFleet, type LatencyFleet } from "../support/latency-fleet.js";

/** The per-peer transports compared: connect-node's createGrpcTransport and the library's nodeHttp2Transport(). */
export type TailTransportName = "connect-node" | "nodeHttp2";
export const tailTransports: readonly TailTransportName[] = ["connect-node", "nodeHttp2"];
const transportLabel: Record<TailTransportName, string> = {
  "connect-node": "connect-node createGrpcTransport",
  nodeHttp2: "nodeHttp2Transport()",
};

/** A policy by name, or a named factory of a candidate balancer (a fresh one per run). */
export type TailPolicy = BalancerName | { readonly name: string; readonly balancer: () => Balancer | BalancerName };
const policyName = (policy: TailPolicy) => (typeof policy === "string" ? policy : policy.name);

/** Client-side jitter: busy-wait `busyMs` (uniform in [min, max]) after a gap of `gapMs` (uniform), again and again. */
export interface TailNoise {
  readonly busyMs?: readonly [number, number];
  readonly gapMs?: readonly [number, number];
}
const defaultNoise = { busyMs: [5, 20], gapMs: [10, 100] } as const;

export interface TailScenarioOptions {
  /** The fleet to call; by default one of `delaysMs` is started and stopped. */
  readonly fleet?: LatencyFleet;
  /** Server delays when the fleet is started here (default [2, 2, 2, 60]). */
  readonly delaysMs?: readonly number[];
  /** The first is the baseline of the p99 ratio (default ["round_robin", "p2c"]). */
  readonly policies?: readonly TailPolicy[];
  readonly transports?: readonly TailTransportName[];
  /** false (default), true for the default noise, or the noise to add. */
  readonly noisy?: boolean | TailNoise;
  readonly runs?: number;
  readonly callers?: number;
  readonly warmupCalls?: number;
  readonly measuredCalls?: number;
  /** One untimed round_robin pass per transport before the first run (default true). */
  readonly warmupRun?: boolean;
  /** Called after each measurement, e.g. to print it at once. */
  readonly onRun?: (run: TailRun) => void;
}

export interface TailRun {
  readonly run: number;
  readonly policy: string;
  readonly transport: TailTransportName;
  readonly noisy: boolean;
  /** Measured calls that succeeded, and those that failed (warm-up excluded). */
  readonly calls: number;
  readonly errors: number;
  readonly firstError?: string;
  /** Latency of the measured calls, ms. */
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  /** Share of the measured calls answered by the slow instance(s), 0..1, and how many. */
  readonly slowShare: number;
  readonly slowCalls: number;
  /** Measured calls per instance address. */
  readonly byInstance: Readonly<Record<string, number>>;
  /** This process's event-loop delay over the run (1 ms resolution): how much jitter the client saw. */
  readonly loopDelayP99Ms: number;
  readonly loopDelayMaxMs: number;
  /** Share of the run's wall time the noise spent busy-waiting (0 when quiet). */
  readonly noiseDuty: number;
  readonly wallMs: number;
}

export interface TailSummary {
  readonly policy: string;
  readonly transport: TailTransportName;
  /** Medians over the runs. */
  readonly p50: number;
  readonly p99: number;
  readonly slowShare: number;
  /** This policy's p99 ÷ the baseline policy's p99, per run (in run order), and their median; 1 for the baseline. */
  readonly p99Ratios: readonly number[];
  readonly p99Ratio: number;
  /** The highest slow share over the runs. */
  readonly maxSlowShare: number;
}

export interface TailScenario {
  readonly noisy: boolean;
  readonly noise?: TailNoise;
  readonly delaysMs: readonly number[];
  readonly callers: number;
  readonly warmupCalls: number;
  readonly measuredCalls: number;
  readonly baseline: string;
  readonly runs: readonly TailRun[];
  readonly summaries: readonly TailSummary[];
  /** The 1-minute load average of the machine before and after (os.loadavg()). */
  readonly loadBefore: number;
  readonly loadAfter: number;
}

const request = create(EchoRequestSchema, { payload: new Uint8Array(16).fill(7) });
const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const percentile = (sorted: ArrayLike<number>, q: number) => (sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const uniform = ([min, max]: readonly [number, number]) => min + Math.random() * (max - min);

function peerTransport(name: TailTransportName): (peer: Peer) => Transport & { close(): void } {
  if (name === "nodeHttp2") {
    return nodeHttp2Transport();
  }
  return (peer) => {
    // The session manager createGrpcTransport would make itself, passed in to be able to abort it on close.
    const sessionManager = new Http2SessionManager(peer.url);
    return Object.assign(createGrpcTransport({ baseUrl: peer.url, sessionManager }), { close: () => sessionManager.abort() });
  };
}

/** Starts the noise; the function returned stops it and returns how long it busy-waited in all. */
function startNoise(noise: TailNoise): () => number {
  const busyMs = noise.busyMs ?? defaultNoise.busyMs;
  const gapMs = noise.gapMs ?? defaultNoise.gapMs;
  let busy = 0;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    const until = performance.now() + uniform(busyMs);
    const start = performance.now();
    while (performance.now() < until) {
      // a busy event loop
    }
    busy += performance.now() - start;
    timer = setTimeout(tick, uniform(gapMs));
  };
  timer = setTimeout(tick, uniform(gapMs));
  return () => {
    clearTimeout(timer);
    return busy;
  };
}

/** One measurement: a fresh balanced transport, `callers` callers, warm-up then measured calls in one stream. */
export async function measureTail(options: {
  readonly fleet: LatencyFleet;
  readonly policy: TailPolicy;
  readonly transport: TailTransportName;
  readonly noise?: TailNoise | undefined;
  readonly run?: number;
  readonly callers?: number;
  readonly warmupCalls?: number;
  readonly measuredCalls?: number;
}): Promise<TailRun> {
  const { fleet, policy, noise, run = 1, callers = 8, warmupCalls = 100, measuredCalls = 600 } = options;
  const slowest = Math.max(...fleet.instances.map((i) => i.delayMs));
  const slow = new Set(fleet.instances.filter((i) => i.delayMs === slowest && slowest > Math.min(...fleet.instances.map((j) => j.delayMs))).map((i) => i.address));
  const transport = createBalancedTransport({
    service: "echo-service",
    discovery: staticDiscovery(fleet.endpoints),
    balancer: typeof policy === "string" ? policy : policy.balancer(),
    transport: peerTransport(options.transport),
  });
  const client = createClient(EchoService, transport);
  const latencies: number[] = [];
  const byInstance: Record<string, number> = Object.fromEntries(fleet.instances.map((i) => [i.address, 0]));
  let errors = 0;
  let firstError: string | undefined;
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const stopNoise = noise === undefined ? () => 0 : startNoise(noise);
  const start = performance.now();
  let issued = 0;
  let busy = 0;
  let wallMs = 0;
  try {
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (issued < warmupCalls + measuredCalls) {
          const measured = issued++ >= warmupCalls;
          const callStart = performance.now();
          try {
            const response = await client.echo(request);
            if (measured) {
              latencies.push(performance.now() - callStart);
              byInstance[response.servedBy] = (byInstance[response.servedBy] ?? 0) + 1;
            }
          } catch (error) {
            if (measured) {
              errors++;
              firstError ??= String(error);
            }
          }
        }
      }),
    );
  } finally {
    busy = stopNoise();
    wallMs = performance.now() - start;
    loop.disable();
    await transport.close();
  }
  const sorted = Float64Array.from(latencies).sort();
  const slowCalls = [...slow].reduce((sum, address) => sum + (byInstance[address] ?? 0), 0);
  const ms = (ns: number) => (Number.isFinite(ns) ? ns / 1e6 : Number.NaN);
  return {
    run,
    policy: policyName(policy),
    transport: options.transport,
    noisy: noise !== undefined,
    calls: latencies.length,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    max: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1]!,
    slowShare: latencies.length === 0 ? Number.NaN : slowCalls / latencies.length,
    slowCalls,
    byInstance,
    loopDelayP99Ms: ms(loop.percentile(99)),
    loopDelayMaxMs: ms(loop.max),
    noiseDuty: busy / wallMs,
    wallMs,
  };
}

/**
 * `runs` runs over the same fleet; each run measures every transport × policy
 * with a fresh balanced transport, the order of the policies rotated each
 * run so that a noisy spell of the machine does not always hit the same one.
 */
export async function runTailScenario(options: TailScenarioOptions = {}): Promise<TailScenario> {
  const { policies = ["round_robin", "p2c"], transports = tailTransports, runs = 5, callers = 8, warmupCalls = 100, measuredCalls = 600 } = options;
  const delaysMs = options.fleet?.instances.map((i) => i.delayMs) ?? options.delaysMs ?? [2, 2, 2, 60];
  const noise = options.noisy === true ? {} : options.noisy === false || options.noisy === undefined ? undefined : options.noisy;
  const fleet = options.fleet ?? (await startLatencyFleet(delaysMs));
  const loadBefore = loadavg()[0]!;
  const results: TailRun[] = [];
  try {
    if (options.warmupRun !== false) {
      // This process's first calls (JIT, the first HTTP/2 sessions) would otherwise be the first run's baseline.
      for (const transport of transports) {
        await measureTail({ fleet, policy: "round_robin", transport, callers, warmupCalls: 0, measuredCalls: 200 });
      }
    }
    for (let run = 1; run <= runs; run++) {
      for (const transport of transports) {
        for (let i = 0; i < policies.length; i++) {
          const policy = policies[(i + run - 1) % policies.length]!;
          (globalThis as { gc?: () => void }).gc?.();
          await sleep(20);
          const result = await measureTail({ fleet, policy, transport, noise, run, callers, warmupCalls, measuredCalls });
          results.push(result);
          options.onRun?.(result);
        }
      }
    }
  } finally {
    if (options.fleet === undefined) {
      await fleet.stop();
    }
  }
  const baseline = policyName(policies[0]!);
  const summaries: TailSummary[] = [];
  for (const transport of transports) {
    for (const policy of policies.map(policyName)) {
      const mine = results.filter((r) => r.transport === transport && r.policy === policy).sort((a, b) => a.run - b.run);
      const ratios = mine.map((r) => r.p99 / results.find((b) => b.transport === transport && b.policy === baseline && b.run === r.run)!.p99);
      summaries.push({
        policy,
        transport,
        p50: median(mine.map((r) => r.p50)),
        p99: median(mine.map((r) => r.p99)),
        slowShare: median(mine.map((r) => r.slowShare)),
        p99Ratios: ratios,
        p99Ratio: median(ratios),
        maxSlowShare: Math.max(...mine.map((r) => r.slowShare)),
      });
    }
  }
  return { noisy: noise !== undefined, ...(noise === undefined ? {} : { noise }), delaysMs, callers, warmupCalls, measuredCalls, baseline, runs: results, summaries, loadBefore, loadAfter: loadavg()[0]! };
}

const pct = (share: number) => `${(100 * share).toFixed(1)} %`;
const f1 = (ms: number) => ms.toFixed(1);

/** One line per measurement: what onRun can print. */
export function formatTailRun(r: TailRun): string {
  const failed = r.errors > 0 ? `  ${r.errors} failed: ${r.firstError?.slice(0, 100)}` : "";
  const noise = r.noisy ? `, noise ${(100 * r.noiseDuty).toFixed(0)} % busy` : "";
  return `  run ${r.run}  ${transportLabel[r.transport].padEnd(33)} ${r.policy.padEnd(12)} p50 ${f1(r.p50).padStart(5)} ms  p99 ${f1(r.p99).padStart(5)} ms  max ${f1(r.max).padStart(5)} ms  slow ${pct(r.slowShare).padStart(6)} (${r.slowCalls})  loop delay p99 ${f1(r.loopDelayP99Ms)} max ${f1(r.loopDelayMaxMs)} ms${noise}${failed}`;
}

/** The scenario as a table: per transport, every run side by side, then the medians; and whether issue 14's goal held. */
export function printTailScenario(result: TailScenario): void {
  const policies = [...new Set(result.runs.map((r) => r.policy))];
  const transports = [...new Set(result.runs.map((r) => r.transport))];
  const runs = Math.max(...result.runs.map((r) => r.run));
  const servers = result.delaysMs.map((d) => `${d} ms`).join(", ");
  const noise = result.noise === undefined ? "quiet client" : `noisy client (busy-waits ${(result.noise.busyMs ?? defaultNoise.busyMs).join("–")} ms every ${(result.noise.gapMs ?? defaultNoise.gapMs).join("–")} ms)`;
  console.log(`\ntail: ${result.delaysMs.length} @grpc/grpc-js servers in processes of their own (${servers}), ${result.callers} callers, ${result.warmupCalls} warm-up + ${result.measuredCalls} measured calls, ${noise}; ${runs} runs, fresh transports each; load ${result.loadBefore.toFixed(2)} → ${result.loadAfter.toFixed(2)}`);
  const width = Math.max(30, ...policies.map((p) => p.length + 22));
  const cell = (r: TailRun | undefined) => (r === undefined ? "".padEnd(width) : `${f1(r.p50).padStart(5)} ${f1(r.p99).padStart(6)} ${pct(r.slowShare).padStart(7)}${r.errors > 0 ? "!" : " "}`.padEnd(width));
  const head = policies.map((p) => `${p} p50 / p99 ms / slow`.padEnd(width)).join("");
  for (const transport of transports) {
    console.log(`  ${transportLabel[transport]}`);
    console.log(`    ${"".padEnd(8)}${head}${policies.slice(1).map((p) => `${p} p99 ÷ ${result.baseline}'s`).join("  ")}`);
    for (let run = 1; run <= runs; run++) {
      const row = policies.map((p) => result.runs.find((r) => r.run === run && r.transport === transport && r.policy === p));
      const ratios = policies.slice(1).map((p) => {
        const s = result.summaries.find((x) => x.transport === transport && x.policy === p)!;
        return `×${s.p99Ratios[run - 1]!.toFixed(2)}`.padEnd(p.length + result.baseline.length + 10);
      });
      console.log(`    run ${String(run).padEnd(4)}${row.map(cell).join("")}${ratios.join("  ")}`.trimEnd());
    }
    const medians = policies.map((p) => {
      const s = result.summaries.find((x) => x.transport === transport && x.policy === p)!;
      return `${f1(s.p50).padStart(5)} ${f1(s.p99).padStart(6)} ${pct(s.slowShare).padStart(7)} `.padEnd(width);
    });
    const ratioMedians = policies.slice(1).map((p) => {
      const s = result.summaries.find((x) => x.transport === transport && x.policy === p)!;
      return `×${s.p99Ratio.toFixed(2)} (${Math.min(...s.p99Ratios).toFixed(2)}–${Math.max(...s.p99Ratios).toFixed(2)})`;
    });
    console.log(`    ${"median".padEnd(8)}${medians.join("")}${ratioMedians.join("  ")}`);
  }
  for (const goal of tailGoal(result)) {
    console.log(`  ${goal.met ? "goal met" : "goal NOT met"} (issue 14: in every run slow share < 0.5 % and p99 ≤ 0.35 × ${result.baseline}'s): ${goal.policy}, ${transportLabel[goal.transport]}: slow share up to ${pct(goal.maxSlowShare)}, p99 ratio up to ×${goal.maxRatio.toFixed(2)}`);
  }
}

/** Issue 14's goal per non-baseline policy and transport: in every run, slow share < 0.5 % and p99 ≤ 0.35 × the baseline's. */
export function tailGoal(result: TailScenario, { maxSlowShare = 0.005, maxP99Ratio = 0.35 } = {}) {
  return result.summaries
    .filter((s) => s.policy !== result.baseline)
    .map((s) => {
      const maxRatio = Math.max(...s.p99Ratios);
      return { policy: s.policy, transport: s.transport, maxSlowShare: s.maxSlowShare, maxRatio, met: s.maxSlowShare < maxSlowShare && maxRatio <= maxP99Ratio };
    });
}

/**
 * `npm run bench`'s section: one fleet, the quiet then the noisy variant, both per-peer
 * transports, every measurement printed as it ends, then the tables.
 */
export async function runTailBench({ runs = 5, variants = [false, true] as readonly boolean[] } = {}): Promise<TailScenario[]> {
  const fleet = await startLatencyFleet([2, 2, 2, 60]);
  const results: TailScenario[] = [];
  try {
    for (const noisy of variants) {
      console.log(`\ntail, ${noisy ? "noisy" : "quiet"} client: every measurement as it ends`);
      const result = await runTailScenario({ fleet, noisy, runs, onRun: (run) => console.log(formatTailRun(run)) });
      printTailScenario(result);
      results.push(result);
    }
  } finally {
    await fleet.stop();
  }
  return results;
}

// Run alone when this file is the script itself; by name, as in the bench's bundle every module has the bundle's URL.
if (/tail\.[cm]?[jt]s$/.test(process.argv[1] ?? "")) {
  const variant = process.argv[3] ?? "both";
  await runTailBench({ runs: Number(process.argv[2] ?? 5), variants: variant === "both" ? [false, true] : [variant === "noisy"] });
}
