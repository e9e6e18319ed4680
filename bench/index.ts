// `npm run bench`: what the balancer costs, measured side by side in one run.
// It runs as plain JavaScript bundled by esbuild: tsx keeps function names by
// wrapping every closure, which made each closure creation cost ~0.4 µs.
// Each comparison alternates its candidates over several rounds and reports
// the median, so a noisy shared machine skews both sides alike.
import { createClient, createContextValues, type Transport } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, leastRequest, p2c, random, ringHash, roundRobin, staticDiscovery, weightedRoundRobin, type Peer } from "../src/index.js";
import { decodeSnapshot } from "../src/discovery/decode.js";
import { resolveFormat } from "../src/registry/format.js";
import { buildPeerSet } from "../src/transport/peer-set.js";
import { bundleUniversalEntry } from "../support/bundle.js";
import { startEtcd } from "../support/etcd.js";
import { runRollingDeploy } from "../support/rolling-deploy.js";
import { startUserServer } from "../support/user-server.js";
import { balancedNodeHttp2, bareNodeHttp2, compareClients, connectNodeGrpc, grpcJsRoundRobin, printComparison, startEchoServersProcess, type GrpcComparison } from "./grpc-clients.js";
import { pickScaleCandidates, printPickScale } from "./pick-scale.js";
import { measureFleet, printFleet } from "./fleet.js";
import { measureRegistryChange, printRegistryChange } from "./registry-change.js";
import { measureStartup, printStartup } from "./startup.js";
import { runTailBench } from "./tail.js";
import { barChartSvg } from "./svg.js";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";

const rounds = 7;

const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
/** Section 3's latency percentiles (ms) per policy, one entry per run, for docs/bench-p2c.svg. */
const slowInstanceRuns = new Map<string, { p50: number; p90: number; p99: number }[]>();

/** Median time per operation in ns, alternating the candidates each round. */
async function compare(candidates: Record<string, (n: number) => Promise<void> | void>, perRound: number) {
  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(candidates).map((k) => [k, []]));
  for (const run of Object.values(candidates)) {
    await run(Math.ceil(perRound / 10)); // warm up
  }
  for (let round = 0; round < rounds; round++) {
    for (const [name, run] of Object.entries(candidates)) {
      const start = performance.now();
      await run(perRound);
      samples[name]!.push(((performance.now() - start) * 1e6) / perRound);
    }
  }
  return Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, v.sort((a, b) => a - b)[Math.floor(v.length / 2)]!]));
}

function report(title: string, results: Record<string, number>, baseline?: string) {
  console.log(`\n${title}`);
  const base = baseline === undefined ? undefined : results[baseline];
  for (const [name, ns] of Object.entries(results)) {
    const per = ns >= 1000 ? `${(ns / 1000).toFixed(2)} µs` : `${ns.toFixed(0)} ns`;
    const ratio = base === undefined || name === baseline ? "" : `  ×${(ns / base).toFixed(2)} of ${baseline}`;
    console.log(`  ${name.padEnd(34)} ${per.padStart(10)} per op${ratio}`);
  }
}

// 1. What the balancer adds to a call: against a transport that answers at
// once, the difference is the balancer's own work (snapshot, pick, context,
// interceptor plumbing, response with peer).
{
  const instant = (servedBy: string): Transport => ({
    async unary(method, _signal, _timeoutMs, _header, input) {
      return {
        stream: false,
        service: method.parent,
        method,
        header: new Headers(),
        trailer: new Headers(),
        message: create(method.output, { servedBy, user: { id: String((input as { id?: string }).id) } } as never),
      } as never;
    },
    stream: () => Promise.reject(new Error("unused")),
  });
  const balanced = createBalancedTransport({
    service: "user-service",
    discovery: staticDiscovery(["grpc://10.0.0.1:9000", "grpc://10.0.0.2:9000", "grpc://10.0.0.3:9000"]),
    transport: (peer) => instant(peer.address),
  });
  const direct = createClient(UserService, instant("direct"));
  const viaBalancer = createClient(UserService, balanced);
  const results = await compare(
    {
      "direct, instant transport": async (n) => {
        for (let i = 0; i < n; i++) await direct.getUser({ id: "1" });
      },
      "balanced over 3 instant peers": async (n) => {
        for (let i = 0; i < n; i++) await viaBalancer.getUser({ id: "1" });
      },
    },
    50_000,
  );
  report("unary call through a typed client, transport answering at once", results, "direct, instant transport");
  const added = results["balanced over 3 instant peers"]! - results["direct, instant transport"]!;
  console.log(`  added by the balancer: ${(added / 1000).toFixed(2)} µs per call`);
  await balanced.close();
}

// 2. The same over real HTTP/2 on loopback.
{
  const servers = await Promise.all([startUserServer(), startUserServer(), startUserServer()]);
  const direct = createClient(UserService, createGrpcTransport({ baseUrl: `http://${servers[0]!.address}` }));
  const balanced = createBalancedTransport({
    service: "user-service",
    discovery: staticDiscovery(servers.map((s) => `grpc://${s.address}`)),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
  });
  const viaBalancer = createClient(UserService, balanced);
  const results = await compare(
    {
      "direct gRPC transport, 1 server": async (n) => {
        await Promise.all(Array.from({ length: n }, () => direct.getUser({ id: "1" })));
      },
      "balanced over 3 servers": async (n) => {
        await Promise.all(Array.from({ length: n }, () => viaBalancer.getUser({ id: "1" })));
      },
    },
    500,
  );
  report("unary gRPC over HTTP/2 on loopback, 500 concurrent calls per round", results, "direct gRPC transport, 1 server");
  await balanced.close();
  await Promise.all(servers.map((s) => s.stop()));
}

// 3. One instance 30× slower than four others (Linkerd's anchor: p99 734 ms
// with peak-EWMA P2C vs 2,100 ms with round robin, a ratio of 0.35). Peers
// answer after a timer: four in 2 ms, one in 60 ms; 32 callers make 2,000
// calls per policy, in 5 runs; each run reports p2c's p99 over round_robin's.
{
  const delayed = (ms: number, servedBy: string): Transport => ({
    async unary(method) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return { stream: false, service: method.parent, method, header: new Headers(), trailer: new Headers(), message: create(method.output, { servedBy } as never) } as never;
    },
    stream: () => Promise.reject(new Error("unused")),
  });
  const policies = ["round_robin", "least_request", "p2c"] as const;
  const runs = 5;
  const peers = [1, 2, 3, 4, 5].map((n) => `grpc://10.0.0.${n}:9000`);
  const isSlow = (address: string) => address.startsWith("10.0.0.5");
  console.log(`\none instance 30× slower (60 ms) than four others (2 ms), 32 concurrent callers, 2,000 calls; ${runs} runs, the policies alternated`);
  for (let run = 1; run <= runs; run++) {
    for (const balancer of policies) {
      const transport = createBalancedTransport({
        service: "user-service",
        discovery: staticDiscovery(peers),
        balancer,
        transport: (peer) => delayed(isSlow(peer.address) ? 60 : 2, peer.address),
      });
      const client = createClient(UserService, transport);
      const latencies: number[] = [];
      let toSlow = 0;
      let remaining = 2_000;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (remaining-- > 0) {
            const start = performance.now();
            const response = await client.getUser({ id: "1" });
            latencies.push(performance.now() - start);
            toSlow += isSlow(response.servedBy) ? 1 : 0;
          }
        }),
      );
      latencies.sort((a, b) => a - b);
      const value = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
      const at = (q: number) => value(q).toFixed(1);
      const mean = (latencies.reduce((sum, l) => sum + l, 0) / latencies.length).toFixed(1);
      console.log(`  ${balancer.padEnd(16)} mean ${mean.padStart(5)} ms   p50 ${at(0.5).padStart(5)} ms   p99 ${at(0.99).padStart(5)} ms   calls to the slow one ${((100 * toSlow) / latencies.length).toFixed(1).padStart(4)} %   run ${run}`);
      const percentiles = slowInstanceRuns.get(balancer) ?? [];
      percentiles.push({ p50: value(0.5), p90: value(0.9), p99: value(0.99) });
      slowInstanceRuns.set(balancer, percentiles);
      await transport.close();
    }
    const p99 = (policy: string) => slowInstanceRuns.get(policy)!.at(-1)!.p99;
    console.log(`  run ${run}: p2c p99 ×${(p99("p2c") / p99("round_robin")).toFixed(2)} of round_robin's (Linkerd's anchor: ×0.35)`);
  }
  console.log(`  median over the ${runs} runs (min–max):`);
  for (const [balancer, list] of slowInstanceRuns) {
    const cells = (["p50", "p90", "p99"] as const).map((q) => {
      const values = list.map((p) => p[q]);
      return `${q} ${median(values).toFixed(1).padStart(5)} ms (${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)})`.padEnd(27);
    });
    console.log(`  ${balancer.padEnd(16)} ${cells.join(" ")}`);
  }
}

// 4. Picking a peer.
{
  const kratos = resolveFormat("kratos");
  const snapshotOf = (count: number) =>
    decodeSnapshot(
      kratos,
      "svc",
      1,
      Array.from({ length: count }, (_, i) => ({
        key: `/microservices/svc/${i}`,
        value: JSON.stringify({ id: `${i}`, name: "svc", version: "v1", metadata: { weight: "100" }, endpoints: [`grpc://10.0.${i >> 8}.${i & 255}:9000`] }),
      })),
    );
  const request = { method: UserService.method.getUser, header: new Headers(), contextValues: createContextValues(), attempt: 0 };
  const ok = {};
  const candidates: Record<string, (n: number) => void> = {};
  for (const count of [3, 1000]) {
    const peers: readonly Peer[] = buildPeerSet(snapshotOf(count), ["grpc"], undefined, "bench").peers;
    const policies = [["round_robin", roundRobin()], ["random", random()], ["weighted_round_robin", weightedRoundRobin()], ["least_request", leastRequest()], ["p2c", p2c()], ["ring_hash (keyed)", ringHash({ key: () => "user-42" })]] as const;
    for (const [name, balancer] of policies) {
      const pick = balancer.build(peers);
      candidates[`${name}, ${count} peers`] = (n) => {
        for (let i = 0; i < n; i++) pick(request).done?.(ok, 1);
      };
    }
  }
  report("pick + done, per call", await compare(candidates, 1_000_000));
  printPickScale(await compare(pickScaleCandidates(request), 200_000));

  // 5. Work per registry change, not per call: decode + build peers + picker.
  const entries = Array.from({ length: 1000 }, (_, i) => ({
    key: `/microservices/svc/${i}`,
    value: JSON.stringify({ id: `${i}`, name: "svc", version: "v1", metadata: null, endpoints: [`grpc://10.0.${i >> 8}.${i & 255}:9000`, `http://10.0.${i >> 8}.${i & 255}:8000`] }),
  }));
  report(
    "per registry change (not per call)",
    await compare(
      {
        "decode 1000 kratos entries": () => void decodeSnapshot(kratos, "svc", 1, entries),
        "build 1000 peers + picker": () => void roundRobin().build(buildPeerSet(snapshotOf(1000), ["grpc"], undefined, "bench").peers),
      },
      20,
    ),
  );
}

// 5b. A fast rolling deploy (issue 13's scenario): 10 instances in a process
// of their own, one replaced every 0.5 s for 20 s (each deregistered before
// it stops), 4 callers calling GetUser in a loop through one transport with
// nodeHttp2Transport(); the default polling (ttlMs 10 s) against the watch.
{
  console.log("\nrolling deploy: 10 instances, one replaced every 0.5 s for 20 s, 4 callers; failed calls (2 runs each, interleaved)");
  const etcd = await startEtcd();
  try {
    for (let run = 0; run < 2; run++) {
      for (const watch of [false, true]) {
        const result = await runRollingDeploy({ etcdEndpoint: etcd.endpoint, service: `rolling-${run}-${watch}`, watch });
        const share = ((100 * result.failed) / result.calls).toFixed(3);
        const kinds = Object.entries(result.errors).map(([message, n]) => `${n}× ${message.slice(0, 120)}`);
        console.log(`  ${(watch ? "watch" : "polling (default)").padEnd(18)} ${String(result.failed).padStart(5)} of ${result.calls} calls failed (${share} %), ${result.replaced} replaced${kinds.length > 0 ? `; ${kinds.join("; ")}` : ""}`);
      }
    }
  } finally {
    await etcd.stop();
  }
}

// 6. What an edge bundle carries (peer dependencies @connectrpc/* and @bufbuild/* left external).
{
  console.log("\nuniversal bundle size (esbuild, minified)");
  for (const entry of ["src/index.ts", "src/fetch/index.ts"]) {
    const bundle = await bundleUniversalEntry(entry);
    console.log(`  ${entry.padEnd(34)} ${(bundle.minifiedBytes / 1024).toFixed(1).padStart(6)} KB minified  ${(bundle.gzipBytes / 1024).toFixed(1).padStart(5)} KB gzipped`);
  }
}

// 7. gRPC clients side by side, the issue's method: three @grpc/grpc-js
// servers of EchoService in a child process, this process the only client;
// unary Echo of 16 bytes at concurrency 1 and 16, rounds interleaving the
// clients, medians over rounds.
let grpcComparison: GrpcComparison;
{
  const servers = await startEchoServersProcess(3);
  const [first] = servers.addresses as [string, ...string[]];
  const callers = [grpcJsRoundRobin(servers.addresses), balancedNodeHttp2(servers.addresses), connectNodeGrpc(first), bareNodeHttp2(first)];
  const rounds = 5;
  const secondsPerRun = 1.5;
  console.log(`\nunary Echo (16-byte payload) over gRPC/HTTP/2 on loopback; 3 @grpc/grpc-js servers in a child process; medians of ${rounds} rounds × ${secondsPerRun} s per client and concurrency`);
  try {
    grpcComparison = await compareClients(callers, { concurrencies: [1, 16], rounds, secondsPerRun, warmupSeconds: 1 });
  } finally {
    for (const caller of callers) await caller.close();
    await servers.stop();
  }
  printComparison(grpcComparison);
}

// 8. Start-up: a fresh node process importing each entry point.
{
  console.log("\nstart-up: a fresh `node -e 'import(ENTRY)'` from the repository root, dist/ built by tsc (or bundled by esbuild where named), median of 15 spawns each, interleaved");
  const result = measureStartup(
    [
      "connect-etcd-balancer/node",
      "connect-etcd-balancer",
      // what a user of nodeHttp2Transport loads
      { name: "connect-etcd-balancer + …/node", specifiers: ["connect-etcd-balancer", "connect-etcd-balancer/node"] },
      { name: "connect-etcd-balancer, bundled (1 file)", bundle: "src/index.ts" },
      { name: "connect-etcd-balancer/node, bundled", bundle: "src/node/index.ts" },
      "@connectrpc/connect-node",
      "@connectrpc/connect",
      "@grpc/grpc-js",
    ],
    { spawns: 15 },
  );
  printStartup(result);
}

// 9. Subsetting, zone priority and slow start at fleet scale (issue 16): 300
// clients × 300 instances, each client the transport's real PickPath with its
// own random seed; then one instance leaving; then where a client in az1
// sends its calls as az1's instances are ejected; then the share a 10th
// instance gets through its slow-start ramp (round_robin, random, p2c;
// aggression 1 and 2). A simulation of picks, no network.
{
  const request = { method: UserService.method.getUser, header: new Headers(), contextValues: createContextValues(), attempt: 0 };
  printFleet(measureFleet(request));
}

// 10. The cost of one registry change with `watch: true`, at 1,000 and 20,000
// instances in a real etcd: CPU, the longest event-loop block, the time until
// the transport sees it, and the heap per instance.
printRegistryChange([await measureRegistryChange(1_000), await measureRegistryChange(20_000)]);

// 11. The tail on real processes (issue 14, item 1): four @grpc/grpc-js
// servers, each in a process of its own, three answering in 2 ms and one in
// 60 ms; 8 callers, 100 warm-up + 600 measured calls, a fresh transport per
// policy (round_robin, p2c), per-peer transport (connect-node's
// createGrpcTransport, nodeHttp2Transport()) and run; 5 runs with a quiet
// client, then 5 with a noisy one (busy-waits 5–20 ms every 10–100 ms, as GC
// or a busy event loop would). p50/p99, the slow instance's share, p2c p99 ÷
// round_robin p99 per run and the medians.
await runTailBench({ runs: 5 });

// 12. Charts: docs/bench.svg (section 7) and docs/bench-p2c.svg (section 3).
{
  const docs = fileURLToPath(new URL("../docs/", import.meta.url));
  mkdirSync(docs, { recursive: true });
  const machine = `Node ${process.version}, ${cpus().length} cores, ${new Date().toISOString().slice(0, 10)}`;
  const concurrencySeries = [
    { name: "concurrency 1", color: "#8fb8de" },
    { name: "concurrency 16", color: "#2b6cb0" },
  ];
  const clients = grpcComparison.clients;
  const label = (c: (typeof clients)[number]) => `${c.name.replace(" (floor)", "")}\n${c.servers} server${c.servers === 1 ? "" : "s"}${c.name.includes("floor") ? " (floor)" : ""}`;
  const thousands = (n: number) => Math.round(n).toLocaleString("en-US");
  const throughput = barChartSvg(
    [
      {
        title: "Unary gRPC Echo: calls per second (higher is better)",
        subtitle: `16-byte payload, @grpc/grpc-js servers in another process; median of ${grpcComparison.rounds} rounds × ${grpcComparison.secondsPerRun} s, whiskers min–max`,
        yLabel: "calls / s",
        series: concurrencySeries,
        groups: clients.map((c) => ({
          label: label(c),
          values: grpcComparison.concurrencies.map((n) => c.at[n]!.callsPerSecond),
          ranges: grpcComparison.concurrencies.map((n) => [c.at[n]!.minCallsPerSecond, c.at[n]!.maxCallsPerSecond] as const),
        })),
        format: thousands,
      },
      {
        title: "Unary gRPC Echo: p99 latency (lower is better)",
        subtitle: `median over the rounds of each round's 99th percentile`,
        yLabel: "p99 latency, ms",
        series: concurrencySeries,
        groups: clients.map((c) => ({ label: label(c), values: grpcComparison.concurrencies.map((n) => c.at[n]!.p99) })),
        format: (ms) => ms.toFixed(2),
      },
    ],
    { footnote: `npm run bench, ${machine}. One client process; connect-node and bare node:http2 call one server, the others round-robin over three.` },
  );
  writeFileSync(`${docs}bench.svg`, throughput);
  const policyColors: Record<string, string> = { round_robin: "#e07b39", least_request: "#9f7aea", p2c: "#2f855a" };
  const slowRuns = [...slowInstanceRuns];
  const p2cChart = barChartSvg(
    [
      {
        title: "One instance 30× slower (60 ms) than four others (2 ms): latency percentiles",
        subtitle: `32 concurrent callers, 2,000 calls per run; median of ${slowRuns[0]?.[1].length ?? 0} runs, whiskers min–max (lower is better)`,
        yLabel: "latency, ms",
        series: slowRuns.map(([name]) => ({ name, color: policyColors[name] ?? "#777" })),
        groups: (["p50", "p90", "p99"] as const).map((q) => ({
          label: q,
          values: slowRuns.map(([, list]) => median(list.map((p) => p[q]))),
          ranges: slowRuns.map(([, list]) => [Math.min(...list.map((p) => p[q])), Math.max(...list.map((p) => p[q]))] as const),
        })),
        format: (ms) => ms.toFixed(1),
      },
    ],
    { footnote: `npm run bench, ${machine}. Peers are in-process transports answering after a timer.` },
  );
  writeFileSync(`${docs}bench-p2c.svg`, p2cChart);
  console.log(`\ncharts written: docs/bench.svg, docs/bench-p2c.svg`);
}
