// What one registry change costs a watching transport (issue 16, item 5): at
// 20,000 instances it once cost 616–646 ms of CPU and stalled the event loop
// up to 651 ms, as every change re-read and re-decoded the whole registry.
// A real etcd of its own, a transport with watch: true and the default
// options; one instance changes its port, again and again.
//
// Alone: npx tsx bench/registry-change.ts [instances…]   (node --expose-gc for the heap figure)
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Transport } from "@connectrpc/connect";
import { createBalancedTransport, etcdDiscovery, type BalancerEvent } from "../src/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";

export interface RegistryChangeResult {
  readonly instances: number;
  /**
   * The cold read of the registry by the first call (etcd's answers, decoding, building the peers), and
   * the longest stall of the discovery's read alone (etcd's answers and decoding, without the transport).
   */
  readonly firstRead: { readonly ms: number; readonly cpuMs: number; readonly maxStallMs: number; readonly readMaxStallMs: number; readonly rangeRequests: number };
  /** One instance changed, by watch: medians over the rounds, the stall the highest of them. */
  readonly change: {
    readonly rounds: number;
    /** CPU of this process from the write until the snapshot held the change, less that of a write of a key nobody watches. */
    readonly cpuMs: number;
    /** The longest the event loop was blocked meanwhile (1 ms resolution), over every round. */
    readonly maxStallMs: number;
    /** The longest block of the first peers() after a change, over every round (synchronous: its time, near enough). */
    readonly firstCallStallMs: number;
    /** From the write (sent by this process) until the snapshot held the change. */
    readonly appliedMs: number;
    /** The first peers() after it: the transport rebuilding its peers and picker over the new snapshot. */
    readonly firstCallMs: number;
    /** Range requests etcd served for all the rounds: 0 when changes are applied, not read. */
    readonly rangeRequests: number;
  };
  /** Heap held per instance by the snapshot, its index and one transport's peers; undefined without --expose-gc. */
  readonly heapBytesPerInstance: number | undefined;
}

const changeRounds = 7;
const base64 = (text: string) => Buffer.from(text).toString("base64");
const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const cpuMs = (since: NodeJS.CpuUsage) => {
  const { user, system } = process.cpuUsage(since);
  return (user + system) / 1000;
};
const gc = (globalThis as { gc?: () => void }).gc;
const heapUsed = () => {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
};

/** kratos' value for instance i: two endpoints and a zone, about 200 bytes. */
function value(service: string, i: number, port = 9000): string {
  const host = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  return JSON.stringify({ id: `i${i}`, name: service, version: "v1", metadata: { zone: `use1-az${1 + (i % 3)}` }, endpoints: [`grpc://${host}:${port}`, `http://${host}:8000`] });
}
const keyOf = (service: string, i: number) => `/microservices/${service}/i${String(i).padStart(6, "0")}`;

async function post(etcd: EtcdServer, path: string, body: unknown): Promise<void> {
  const response = await fetch(`${etcd.endpoint}${path}`, { method: "POST", body: JSON.stringify(body) });
  if (!response.ok) {
    throw new Error(`etcd ${path}: ${response.status} ${await response.text()}`);
  }
  await response.arrayBuffer();
}

async function fill(etcd: EtcdServer, service: string, count: number): Promise<void> {
  const batches: Promise<void>[] = [];
  for (let start = 0; start < count; start += 100) {
    const success = [];
    for (let i = start; i < Math.min(count, start + 100); i++) {
      success.push({ request_put: { key: base64(keyOf(service, i)), value: base64(value(service, i)) } });
    }
    batches.push(post(etcd, "/v3/kv/txn", { success }));
    if (batches.length === 8) {
      await Promise.all(batches.splice(0));
    }
  }
  await Promise.all(batches);
}

/** The longest event-loop block while `work` runs, in ms, with what it returns and the CPU it took. */
async function observed<T>(work: () => Promise<T>): Promise<{ result: T; maxStallMs: number; cpuMs: number; ms: number }> {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  await new Promise((resolve) => setTimeout(resolve, 5)); // the histogram counts from its second tick
  const cpu = process.cpuUsage();
  const start = performance.now();
  try {
    const result = await work();
    const ms = performance.now() - start;
    const cpuTaken = cpuMs(cpu);
    await new Promise((resolve) => setTimeout(resolve, 5)); // a block at the end is recorded at the next tick
    return { result, ms, cpuMs: cpuTaken, maxStallMs: histogram.max / 1e6 };
  } finally {
    histogram.disable();
  }
}

const noTransport: Transport = {
  unary: () => Promise.reject(new Error("the bench makes no calls")),
  stream: () => Promise.reject(new Error("the bench makes no calls")),
};

export async function measureRegistryChange(instances: number): Promise<RegistryChangeResult> {
  const etcd = await startEtcd();
  const service = `fleet-${instances}`;
  try {
    await fill(etcd, service, instances);
    let onSnapshot: ((event: BalancerEvent) => void) | undefined;
    const heapBefore = heapUsed();
    const transport = createBalancedTransport({
      service,
      discovery: etcdDiscovery({ endpoints: [etcd.endpoint], watch: true, ttlMs: 3_600_000 }),
      transport: () => noTransport,
      onEvent: (event) => event.type === "snapshot" && onSnapshot?.(event),
    });
    try {
      const rangesBefore = await etcd.rangeCount();
      const watchersBefore = await etcd.watcherCount();
      const first = await observed(() => transport.peers());
      const rangeRequests = (await etcd.rangeCount()) - rangesBefore;
      const heapBytesPerInstance = gc === undefined ? undefined : (heapUsed() - heapBefore) / instances;
      const readAlone = await observed(() => etcdDiscovery({ endpoints: [etcd.endpoint] }).load(service, new AbortController().signal));
      for (let i = 0; i < 500 && (await etcd.watcherCount()) <= watchersBefore; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      // What a write costs this process by itself (fetch, JSON), with nobody watching the key.
      const control: number[] = [];
      for (let round = 0; round < changeRounds; round++) {
        const cpu = process.cpuUsage();
        await post(etcd, "/v3/kv/put", { key: base64(`/unwatched/${round}`), value: base64(value(service, round)) });
        await new Promise((resolve) => setTimeout(resolve, 20));
        control.push(cpuMs(cpu));
      }
      const rounds: { cpuMs: number; maxStallMs: number; appliedMs: number; firstCallMs: number; firstCallStallMs: number }[] = [];
      const rangesBeforeChanges = await etcd.rangeCount();
      for (let round = 0; round < changeRounds; round++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        let appliedMs = 0;
        const change = await observed(async () => {
          const start = performance.now();
          const applied = new Promise<void>((resolve) => (onSnapshot = () => resolve()));
          await post(etcd, "/v3/kv/put", { key: base64(keyOf(service, 17)), value: base64(value(service, 17, 9100 + round)) });
          await applied;
          appliedMs = performance.now() - start;
          await new Promise((resolve) => setTimeout(resolve, 20)); // as the control
        });
        const call = await observed(() => transport.peers());
        rounds.push({ cpuMs: change.cpuMs - median(control), maxStallMs: change.maxStallMs, appliedMs, firstCallMs: call.ms, firstCallStallMs: call.maxStallMs });
      }
      return {
        instances,
        firstRead: { ms: first.ms, cpuMs: first.cpuMs, maxStallMs: first.maxStallMs, readMaxStallMs: readAlone.maxStallMs, rangeRequests },
        change: {
          rounds: changeRounds,
          cpuMs: Math.max(0, median(rounds.map((r) => r.cpuMs))),
          maxStallMs: Math.max(...rounds.map((r) => r.maxStallMs)),
          firstCallStallMs: Math.max(...rounds.map((r) => r.firstCallStallMs)),
          appliedMs: median(rounds.map((r) => r.appliedMs)),
          firstCallMs: median(rounds.map((r) => r.firstCallMs)),
          rangeRequests: (await etcd.rangeCount()) - rangesBeforeChanges,
        },
        heapBytesPerInstance,
      };
    } finally {
      await transport.close();
    }
  } finally {
    await etcd.stop();
  }
}

export function printRegistryChange(results: readonly RegistryChangeResult[]): void {
  const ms = (value: number) => `${value.toFixed(1)} ms`;
  console.log(`\none registry change under watch: kratos instances in one service, one changes its port (${results[0]?.change.rounds ?? 0} rounds, medians)`);
  console.log(
    `  ${"instances".padEnd(10)}${"CPU".padStart(9)}${"stall max".padStart(11)}${"applied".padStart(10)}${"1st call".padStart(10)}${"(stall)".padStart(9)}${"reads".padStart(7)}` +
      `${"heap/inst".padStart(11)}   first read: ${"time".padStart(9)}${"CPU".padStart(9)}${"stall".padStart(9)}${"(read)".padStart(9)}${"pages".padStart(7)}`,
  );
  for (const { instances, change, firstRead, heapBytesPerInstance } of results) {
    const heap = heapBytesPerInstance === undefined ? "(no gc)" : `${Math.round(heapBytesPerInstance)} B`;
    console.log(
      `  ${instances.toLocaleString("en-US").padEnd(10)}${ms(change.cpuMs).padStart(9)}${ms(change.maxStallMs).padStart(11)}${ms(change.appliedMs).padStart(10)}` +
        `${ms(change.firstCallMs).padStart(10)}${ms(change.firstCallStallMs).padStart(9)}${String(change.rangeRequests).padStart(7)}${heap.padStart(11)}` +
        `               ${ms(firstRead.ms).padStart(9)}${ms(firstRead.cpuMs).padStart(9)}${ms(firstRead.maxStallMs).padStart(9)}${ms(firstRead.readMaxStallMs).padStart(9)}${String(firstRead.rangeRequests).padStart(7)}`,
    );
  }
  console.log("  CPU: this process, less a write nobody watches; stall max: the longest block from the write until the change is applied;");
  console.log("  1st call: peers() after a change (the transport rebuilding peers and picker), its time and its longest block;");
  console.log("  reads: range requests etcd served for all the changes; first read (read): the discovery's read alone, without the transport");
}

// Run alone when this file is the script itself; by name, as in the bench's bundle every module has the bundle's URL.
if (/registry-change\.[cm]?[jt]s$/.test(process.argv[1] ?? "")) {
  const sizes = process.argv.slice(2).map(Number);
  const results: RegistryChangeResult[] = [];
  for (const size of sizes.length > 0 ? sizes : [1_000, 20_000]) {
    results.push(await measureRegistryChange(size));
  }
  printRegistryChange(results);
}
