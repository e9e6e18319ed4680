// Hostile and broken peers in a process of their own. One that accepts calls
// and never answers them (headers, then nothing), beside peers that answer:
// deadlines run out on it, and that must take it out of rotation — but a
// deadline too tight for every peer ejects nobody. One that declares a 1 GiB
// message: refused at its prefix, with the memory of the client (a process of
// its own too) bounded. One that pours messages out: the deadline still fires
// on time. Ones that flood frames: their connection is closed at once.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, staticDiscovery, type BalancedTransport } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { countBy, eventRecorder, rejection } from "./helpers.js";

const children: ChildProcess[] = [];
const transports: BalancedTransport[] = [];
const service = "black-hole-service";

afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(
    children.splice(0).map((child) => {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.stdin!.end();
      return exited;
    }),
  );
});

/** Starts the fixture's servers, one per mode, in a child process; resolves to their addresses. */
async function peers(...modes: string[]): Promise<string[]> {
  return fixture("test/fixtures/unanswering-peers.ts", modes);
}

async function fixture(script: string, args: readonly string[]): Promise<string[]> {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  children.push(child);
  const [line] = await new Promise<string[]>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", (first) => resolve([first]));
    child.once("exit", () => reject(new Error("the peers' process exited")));
  });
  return (JSON.parse(line!) as number[]).map((port) => `127.0.0.1:${port}`);
}

function balanced(addresses: readonly string[], options: Partial<Parameters<typeof createBalancedTransport>[0]> = {}) {
  const transport = createBalancedTransport({
    service,
    discovery: staticDiscovery(addresses.map((a) => `grpc://${a}`)),
    transport: nodeHttp2Transport(),
    ...options,
  });
  transports.push(transport);
  return transport;
}

describe("a peer that answers headers and never finishes", () => {
  it("is out of rotation after a few calls ran out of time on it while the others answered", async () => {
    const [good1, good2, hole] = await peers("slow:1", "slow:1", "black-hole");
    const recorder = eventRecorder();
    const users = createPeerClient(UserService, balanced([good1!, good2!, hole!], { onEvent: recorder.onEvent }));
    const failed: string[] = [];
    const served: string[] = [];
    const caller = async (calls: number) => {
      for (let i = 0; i < calls; i++) {
        try {
          served.push((await users.getUser({ id: String(i) }, { timeoutMs: 300 })).message.servedBy);
        } catch (error) {
          failed.push((error as Error).message);
        }
      }
    };
    await Promise.all([caller(50), caller(50), caller(50), caller(50)]);
    expect(failed.length).toBeLessThanOrEqual(15);
    expect(failed.length).toBeGreaterThan(0);
    for (const message of failed) {
      expect(message).toContain(`[deadline_exceeded]`);
      expect(message).toContain(`peer ${hole} of "black-hole-service"`);
    }
    expect(served.length + failed.length).toBe(200);
    expect(Object.keys(countBy(served)).sort()).toEqual([good1, good2].sort());
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([
      expect.objectContaining({ address: hole, reason: "consecutive_failures", forMs: 30_000 }),
    ]);
    // the calls already on their way to it when the fifth ran out fail too
    expect(transports[0]!.stats().find((s) => s.address === hole)).toEqual(expect.objectContaining({ ejected: true, failures: failed.length }));
  });

  it("ejects nobody when the deadline is too tight for every peer", async () => {
    const slow = await peers("slow:150", "slow:150", "slow:150");
    const recorder = eventRecorder();
    const users = createPeerClient(UserService, balanced(slow, { onEvent: recorder.onEvent }));
    for (let i = 0; i < 24; i++) {
      expect((await rejection(users.getUser({ id: "1" }, { timeoutMs: 50 }))).code).toBe(Code.DeadlineExceeded);
    }
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([]);
    const served = [];
    for (let i = 0; i < 6; i++) {
      served.push((await users.getUser({ id: "1" }, { timeoutMs: 2_000 })).message.servedBy);
    }
    expect(Object.keys(countBy(served)).sort()).toEqual([...slow].sort());
  });

  it("holds a call without a deadline only as long as defaultTimeoutMs", async () => {
    const [hole] = await peers("black-hole");
    const users = createPeerClient(UserService, balanced([hole!], { defaultTimeoutMs: 200, onEvent: () => {} }));
    const started = performance.now();
    const error = await rejection(users.getUser({ id: "1" }));
    expect(error.code).toBe(Code.DeadlineExceeded);
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(() => balanced([hole!], { defaultTimeoutMs: -1 })).toThrow(/defaultTimeoutMs must be a positive number of ms, got -1/);
  });
});

interface ProbeCall {
  readonly code: Code | undefined;
  readonly message: string;
  readonly elapsedMs: number;
  readonly received?: number;
}

/** Runs test/fixtures/memory-probe.ts against `address` in a process of its own: a clean RSS, and timers no test runner delays. */
async function probe(address: string, mode: "huge" | "firehose"): Promise<{ rssGrowth: number; calls: ProbeCall[] }> {
  const child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", "test/fixtures/memory-probe.ts", address, mode], { stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise((resolve) => child.once("exit", resolve));
  expect(code).toBe(0);
  return JSON.parse(output) as { rssGrowth: number; calls: ProbeCall[] };
}

describe("a peer that declares a 1 GiB message and streams it", () => {
  it("is refused at the prefix by the default 4 MiB limit: ResourceExhausted naming the peer, size, limit and option, memory bounded", async () => {
    const [huge] = await peers("huge");
    const { rssGrowth, calls } = await probe(huge!, "huge");
    expect(calls).toHaveLength(2); // with a 3 s deadline, then without one
    for (const call of calls) {
      expect(call.code).toBe(Code.ResourceExhausted);
      expect(call.message).toContain(`${huge} sent a message of 1073741824 bytes, over the limit of 4194304 bytes (readMaxBytes): refused before reading it`);
      expect(call.message).toContain(`peer ${huge} of "memory-probe"`);
      expect(call.elapsedMs).toBeLessThan(1_000);
    }
    expect(rssGrowth).toBeLessThan(50 * 1024 * 1024);
  });
});

describe("a peer streaming messages as fast as it can", () => {
  it("cannot hold a call past its deadline: it ends on time while the data pours in", async () => {
    const [firehose] = await peers("firehose");
    const { calls } = await probe(firehose!, "firehose");
    const [call] = calls;
    expect(call!.code).toBe(Code.DeadlineExceeded);
    expect(call!.received).toBeGreaterThan(5); // 1 MiB messages did arrive
    // 300 ms deadline; a few ms late at most on an idle machine, the margin is for a shared CI one
    expect(call!.elapsedMs).toBeGreaterThanOrEqual(299);
    expect(call!.elapsedMs).toBeLessThan(400);
  });
});

describe("a peer flooding control frames", () => {
  it.each(["settings", "ping"])("loses its connection at once (%s): the call fails as a lost connection, within a bounded CPU cost", async (kind) => {
    const [flooder] = await fixture("test/fixtures/flooding-peer.ts", [kind]);
    const users = createPeerClient(UserService, balanced([flooder!], { onEvent: () => {} }));
    const cpu = process.cpuUsage();
    const started = performance.now();
    const error = await rejection(users.getUser({ id: "1" }, { timeoutMs: 3_000 }));
    const cpuMs = (process.cpuUsage(cpu).user + process.cpuUsage(cpu).system) / 1_000;
    expect(error.code).toBe(Code.Unavailable);
    // nghttp2 itself cuts a PING flood whose acknowledgements pile up; the guard catches the rest
    const ours = `sent more than ${kind === "ping" ? 1000 : 100} ${kind.toUpperCase()} frames within a second: connection closed as a flood`;
    expect(error.message).toMatch(kind === "ping" ? /sent more than 1000 PING frames|Flooding was detected in this HTTP\/2 session/ : new RegExp(ours));
    expect(error.message).toContain(`peer ${flooder} of`);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(cpuMs).toBeLessThan(500);
  });

  // node:http2 and nghttp2 guard these themselves; the test holds them to it on every Node the project supports.
  it.each([
    ["empty-data", /lost: Too many invalid HTTP\/2 frames/],
    ["continuation", /lost: Too many CONTINUATION frames following a HEADER frame/],
  ])("loses its connection at once (%s on the call's stream): the call fails as lost, within a bounded CPU cost", async (kind, message) => {
    const [flooder] = await fixture("test/fixtures/flooding-peer.ts", [kind]);
    const users = createPeerClient(UserService, balanced([flooder!], { onEvent: () => {} }));
    const cpu = process.cpuUsage();
    const started = performance.now();
    const error = await rejection(users.getUser({ id: "1" }, { timeoutMs: 3_000 }));
    const cpuMs = (process.cpuUsage(cpu).user + process.cpuUsage(cpu).system) / 1_000;
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toMatch(message);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(cpuMs).toBeLessThan(500);
  });
});
