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
import { startUserServer } from "../support/user-server.js";

const rounds = 7;

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

// 3. One slow instance among three (Linkerd's anchor: p99 734 ms with peak-EWMA
// P2C vs 2,100 ms with round robin). Peers answer after a timer: two in 2 ms,
// one in 40 ms; 32 callers make 2,000 calls per policy.
{
  const delayed = (ms: number, servedBy: string): Transport => ({
    async unary(method) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return { stream: false, service: method.parent, method, header: new Headers(), trailer: new Headers(), message: create(method.output, { servedBy } as never) } as never;
    },
    stream: () => Promise.reject(new Error("unused")),
  });
  console.log("\none slow instance (40 ms) among three (2 ms), 32 concurrent callers, 2,000 calls");
  for (const balancer of ["round_robin", "least_request", "p2c"] as const) {
    const transport = createBalancedTransport({
      service: "user-service",
      discovery: staticDiscovery(["grpc://10.0.0.1:9000", "grpc://10.0.0.2:9000", "grpc://10.0.0.3:9000"]),
      balancer,
      transport: (peer) => delayed(peer.address.startsWith("10.0.0.3") ? 40 : 2, peer.address),
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
          toSlow += response.servedBy.startsWith("10.0.0.3") ? 1 : 0;
        }
      }),
    );
    latencies.sort((a, b) => a - b);
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(1);
    const mean = (latencies.reduce((sum, l) => sum + l, 0) / latencies.length).toFixed(1);
    console.log(`  ${balancer.padEnd(16)} mean ${mean.padStart(5)} ms   p50 ${at(0.5).padStart(5)} ms   p99 ${at(0.99).padStart(5)} ms   calls to the slow one ${((100 * toSlow) / latencies.length).toFixed(1).padStart(4)} %`);
    await transport.close();
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
    const peers: readonly Peer[] = buildPeerSet(snapshotOf(count), ["grpc"], undefined, roundRobin(), "bench").peers;
    const policies = [["round_robin", roundRobin()], ["random", random()], ["weighted_round_robin", weightedRoundRobin()], ["least_request", leastRequest()], ["p2c", p2c()], ["ring_hash (keyed)", ringHash({ key: () => "user-42" })]] as const;
    for (const [name, balancer] of policies) {
      const pick = balancer.build(peers);
      candidates[`${name}, ${count} peers`] = (n) => {
        for (let i = 0; i < n; i++) pick(request).done?.(ok, 1);
      };
    }
  }
  report("pick + done, per call", await compare(candidates, 1_000_000));

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
        "build 1000 peers + picker": () => void buildPeerSet(snapshotOf(1000), ["grpc"], undefined, roundRobin(), "bench"),
      },
      20,
    ),
  );
}

// 6. What an edge bundle carries (peer dependencies @connectrpc/* and @bufbuild/* left external).
{
  console.log("\nuniversal bundle size (esbuild, minified)");
  for (const entry of ["src/index.ts", "src/fetch/index.ts"]) {
    const bundle = await bundleUniversalEntry(entry);
    console.log(`  ${entry.padEnd(34)} ${(bundle.minifiedBytes / 1024).toFixed(1).padStart(6)} KB minified  ${(bundle.gzipBytes / 1024).toFixed(1).padStart(5)} KB gzipped`);
  }
}
