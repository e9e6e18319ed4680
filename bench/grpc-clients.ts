// Side-by-side throughput of gRPC clients against @grpc/grpc-js servers in
// another process: @grpc/grpc-js round_robin over three servers (the
// baseline), connect-etcd-balancer over the same three, connect-node's gRPC
// transport to one, and a bare node:http2 unary call to one (the floor).
// Unary EchoService.Echo of a 16-byte payload; N concurrent callers each
// await their call in a loop for a fixed time; rounds interleave the clients
// and the report takes medians over rounds.
import * as http2 from "node:http2";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { EchoRequestSchema, EchoResponseSchema, EchoService } from "../gen/test/echo/v1/echo_pb.js";
import { createBalancedTransport, staticDiscovery } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { bundleScript, firstJsonLine, spawnScript } from "../support/child-process.js";
import { deserializeEchoResponse, echoPath, serializeEchoRequest } from "./echo-grpc-js.js";

// The repository root: bench/ when run from source, .cache/ when bundled.
const root = fileURLToPath(new URL("..", import.meta.url));

export interface EchoServers {
  /** "127.0.0.1:port" of each server. */
  readonly addresses: readonly string[];
  /** Ends the child process (and waits for it to exit). */
  stop(): Promise<void>;
}

/**
 * Bundles bench/echo-servers-process.ts with esbuild and runs it with node;
 * resolves once the child printed the ports its servers listen on. The child
 * exits when its stdin closes, so it does not outlive this process even if
 * this one is killed.
 */
export async function startEchoServersProcess(count = 3): Promise<EchoServers> {
  const outfile = `${root}.cache/echo-servers.mjs`;
  await bundleScript("bench/echo-servers-process.ts", outfile);
  const spawned = spawnScript(outfile, [String(count)]);
  const { child, exited, killOnExit } = spawned;
  try {
    const { ports } = await firstJsonLine<{ ports: number[] }>(spawned, "echo servers process");
    return {
      addresses: ports.map((port) => `127.0.0.1:${port}`),
      async stop() {
        process.off("exit", killOnExit);
        if (child.exitCode === null && child.signalCode === null) {
          child.stdin?.end();
          const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
          await exited;
          clearTimeout(timer);
        }
      },
    };
  } catch (error) {
    child.kill("SIGKILL");
    await exited;
    process.off("exit", killOnExit);
    throw error;
  }
}

/** One client of EchoService.Echo: call() resolves to the server that answered. */
export interface EchoCaller {
  readonly name: string;
  /** How many servers it spreads its calls over. */
  readonly servers: number;
  call(): Promise<string>;
  close(): Promise<void>;
}

const request = create(EchoRequestSchema, { payload: new Uint8Array(16).fill(7) });

/** a. @grpc/grpc-js with the round_robin policy over all the servers. */
export function grpcJsRoundRobin(addresses: readonly string[]): EchoCaller {
  const client = new grpc.Client(`ipv4:${addresses.join(",")}`, grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  });
  return {
    name: "@grpc/grpc-js round_robin",
    servers: addresses.length,
    call: () =>
      new Promise<string>((resolve, reject) => {
        client.makeUnaryRequest(echoPath, serializeEchoRequest, deserializeEchoResponse, request, (error, response) =>
          error ? reject(error) : resolve(response!.servedBy),
        );
      }),
    close: async () => client.close(),
  };
}

/** b. createBalancedTransport + nodeHttp2Transport({ protocol: "grpc" }) over all the servers. */
export function balancedNodeHttp2(addresses: readonly string[]): EchoCaller {
  const transport = createBalancedTransport({
    service: "echo-service",
    discovery: staticDiscovery(addresses.map((address) => `grpc://${address}`)),
    balancer: "round_robin",
    transport: nodeHttp2Transport({ protocol: "grpc" }),
  });
  const client = createClient(EchoService, transport);
  return {
    name: "connect-etcd-balancer",
    servers: addresses.length,
    call: () => client.echo(request).then((response) => response.servedBy),
    close: () => transport.close(),
  };
}

/** c. connect-node's gRPC transport over HTTP/2 to one server. */
export function connectNodeGrpc(address: string): EchoCaller {
  const baseUrl = `http://${address}`;
  // connect-node 2.x's gRPC transport is always HTTP/2 (its options have no
  // httpVersion). The session manager is the one createGrpcTransport would
  // make itself (same defaults), passed in to be able to close it.
  const sessionManager = new Http2SessionManager(baseUrl);
  const client = createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager }));
  return {
    name: "connect-node gRPC transport",
    servers: 1,
    call: () => client.echo(request).then((response) => response.servedBy),
    close: async () => sessionManager.abort(),
  };
}

/** d. A bare node:http2 gRPC unary call with protobuf-es encoding to one server: the floor. */
export function bareNodeHttp2(address: string): EchoCaller {
  const session = http2.connect(`http://${address}`);
  session.on("error", () => {}); // surfaces as a failed call
  const headers = { ":method": "POST", ":path": echoPath, "content-type": "application/grpc", te: "trailers" };
  const call = () =>
    new Promise<string>((resolve, reject) => {
      const message = toBinary(EchoRequestSchema, request);
      const frame = new Uint8Array(5 + message.byteLength);
      new DataView(frame.buffer).setUint32(1, message.byteLength);
      frame.set(message, 5);
      const stream = session.request(headers);
      const chunks: Buffer[] = [];
      let status: string | undefined;
      let statusMessage = "";
      let settled = false;
      const fail = (error: Error) => {
        if (!settled) {
          settled = true;
          reject(error);
        }
      };
      const onStatus = (fields: http2.IncomingHttpHeaders) => {
        if (fields["grpc-status"] !== undefined) {
          status = String(fields["grpc-status"]);
          statusMessage = String(fields["grpc-message"] ?? "");
        }
      };
      stream.on("response", onStatus); // a trailers-only response
      stream.on("trailers", onStatus);
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", fail);
      stream.on("close", () => fail(new Error(`stream closed before its end (RST code ${stream.rstCode})`)));
      stream.on("end", () => {
        if (settled) return;
        if (status !== "0") return fail(new Error(`grpc-status ${status ?? "missing"} ${decodeURIComponent(statusMessage)}`));
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        if (body.byteLength < 5 || body[0] !== 0) return fail(new Error("unexpected response envelope"));
        const length = body.readUInt32BE(1);
        settled = true;
        resolve(fromBinary(EchoResponseSchema, body.subarray(5, 5 + length)).servedBy);
      });
      stream.end(frame);
    });
  return {
    name: "bare node:http2 (floor)",
    servers: 1,
    call,
    close: () => new Promise<void>((resolve) => session.close(() => resolve())),
  };
}

export interface RunResult {
  readonly calls: number;
  readonly errors: number;
  readonly callsPerSecond: number;
  /** Latency percentiles in ms. */
  readonly p50: number;
  readonly p99: number;
}

function percentile(sorted: ArrayLike<number>, q: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

/** `concurrency` callers, each awaiting its call in a loop until `ms` have passed. */
async function runFor(caller: EchoCaller, concurrency: number, ms: number, servedBy?: Map<string, number>): Promise<RunResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: unknown;
  const start = performance.now();
  const deadline = start + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const callStart = performance.now();
        try {
          const by = await caller.call();
          latencies.push(performance.now() - callStart);
          if (servedBy !== undefined) servedBy.set(by, (servedBy.get(by) ?? 0) + 1);
        } catch (error) {
          errors++;
          firstError ??= error;
        }
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  if (errors > 0) console.log(`  ! ${caller.name}: ${errors} failed calls, first: ${String(firstError)}`);
  const sorted = Float64Array.from(latencies).sort();
  return { calls: latencies.length, errors, callsPerSecond: latencies.length / seconds, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
}

export interface ClientSummary {
  readonly name: string;
  readonly servers: number;
  /** Per concurrency: medians over rounds, and the range of calls/s over rounds. */
  readonly at: Record<number, { callsPerSecond: number; p50: number; p99: number; minCallsPerSecond: number; maxCallsPerSecond: number; errors: number }>;
}

export interface GrpcComparison {
  readonly clients: readonly ClientSummary[];
  readonly concurrencies: readonly number[];
  readonly rounds: number;
  readonly secondsPerRun: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const collectGarbage = () => (globalThis as { gc?: () => void }).gc?.();

/**
 * Warm-up (connections, JIT) of every client, a check that the balanced
 * clients reach every server, then `rounds` rounds; each round runs every
 * client in turn at every concurrency, the order of the clients rotated by
 * one each round.
 */
export async function compareClients(
  callers: readonly EchoCaller[],
  { concurrencies = [1, 16], rounds = 5, secondsPerRun = 1.5, warmupSeconds = 1 } = {},
): Promise<GrpcComparison> {
  for (const caller of callers) {
    await runFor(caller, 16, (warmupSeconds * 1000) / 2);
    const servedBy = new Map<string, number>();
    const { calls } = await runFor(caller, 1, (warmupSeconds * 1000) / 2, servedBy);
    const spread = [...servedBy.values()].map((n) => `${((100 * n) / calls).toFixed(0)}%`).join(" / ");
    console.log(`  warm-up  ${caller.name.padEnd(30)} answered by ${servedBy.size} server${servedBy.size === 1 ? "" : "s"} (${spread})`);
    if (servedBy.size !== caller.servers) {
      console.log(`  ! ${caller.name} was expected to reach ${caller.servers} servers`);
    }
  }
  const runs = new Map<string, RunResult[]>();
  for (let round = 0; round < rounds; round++) {
    const order = callers.map((_, i) => callers[(i + round) % callers.length]!);
    for (const concurrency of concurrencies) {
      for (const caller of order) {
        collectGarbage();
        await sleep(20);
        const key = `${caller.name}\0${concurrency}`;
        const list = runs.get(key) ?? [];
        list.push(await runFor(caller, concurrency, secondsPerRun * 1000));
        runs.set(key, list);
      }
    }
  }
  const clients = callers.map((caller): ClientSummary => {
    const at: ClientSummary["at"] = {};
    for (const concurrency of concurrencies) {
      const list = runs.get(`${caller.name}\0${concurrency}`)!;
      const rates = list.map((r) => r.callsPerSecond);
      at[concurrency] = {
        callsPerSecond: median(rates),
        p50: median(list.map((r) => r.p50)),
        p99: median(list.map((r) => r.p99)),
        minCallsPerSecond: Math.min(...rates),
        maxCallsPerSecond: Math.max(...rates),
        errors: list.reduce((sum, r) => sum + r.errors, 0),
      };
    }
    return { name: caller.name, servers: caller.servers, at };
  });
  return { clients, concurrencies, rounds, secondsPerRun };
}

const thousands = (n: number) => Math.round(n).toLocaleString("en-US");

/** The table: client × concurrency, calls/s, p99 and calls/s relative to the first client. */
export function printComparison(result: GrpcComparison): void {
  const [baseline] = result.clients;
  const cell = (calls: string, p99: string, ratio: string) => `${calls.padStart(9)} ${p99.padStart(7)} ${ratio.padStart(9)}`;
  const head = result.concurrencies.map((c) => `concurrency ${c}`.padStart(27)).join("   ");
  console.log(`  ${"".padEnd(30)} ${"servers".padStart(7)} ${head}`);
  console.log(`  ${"client".padEnd(30)} ${"".padStart(7)} ${result.concurrencies.map(() => cell("calls/s", "p99 ms", "× grpc-js")).join("   ")}`);
  for (const client of result.clients) {
    const cells = result.concurrencies.map((c) => {
      const at = client.at[c]!;
      const ratio = at.callsPerSecond / baseline!.at[c]!.callsPerSecond;
      return cell(thousands(at.callsPerSecond), at.p99.toFixed(2), `×${ratio.toFixed(2)}`);
    });
    console.log(`  ${client.name.padEnd(30)} ${String(client.servers).padStart(7)} ${cells.join("   ")}`);
  }
  console.log(`  calls/s over the ${result.rounds} rounds (min–max), p50 ms (median):`);
  for (const client of result.clients) {
    const cells = result.concurrencies
      .map((c) => {
        const at = client.at[c]!;
        return `c=${c}: ${thousands(at.minCallsPerSecond)}–${thousands(at.maxCallsPerSecond)}, p50 ${at.p50.toFixed(2)}`.padEnd(34);
      })
      .join(" ");
    const errors = result.concurrencies.reduce((sum, c) => sum + client.at[c]!.errors, 0);
    console.log(`  ${client.name.padEnd(30)} ${cells}${errors > 0 ? `  ${errors} failed calls` : ""}`);
  }
}
