// Malformed registry entries are reported once each, not again on every
// registry change, and the default console output is rate-limited process-wide.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createBalancedTransport, etcdDiscovery, type BalancedTransport, type BalancerEvent, type EventListener } from "../src/index.js";
import { limitLines } from "../src/events.js";
import { acceptRead, initialState } from "../src/cache/acceptance.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { etcdRequest, putKey } from "../support/registry.js";
import { countBy, eventRecorder, sleep } from "./helpers.js";

let etcd: EtcdServer;
const open: BalancedTransport[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

afterAll(async () => {
  await Promise.all(open.map((t) => t.close()));
  await etcd?.stop();
});

const base64 = (text: string) => Buffer.from(text).toString("base64");
const badKey = (service: string, i: number | string) => `/microservices/${service}/bad-${i}`;

/** Writes `count` entries that are not JSON under a service, 100 per etcd transaction. */
async function putMalformed(service: string, count: number): Promise<void> {
  for (let start = 0; start < count; start += 100) {
    const puts = Array.from({ length: Math.min(100, count - start) }, (_, k) => ({
      request_put: { key: base64(badKey(service, start + k)), value: base64(`{not json ${start + k}`) },
    }));
    await etcdRequest(etcd.endpoint, "/v3/kv/txn", { success: puts });
  }
}

/** A valid kratos entry at `key`: each new one is a registry change that adds an instance. */
async function putInstance(service: string, key: string, port: number): Promise<void> {
  const value = { id: key, name: service, version: "v1", metadata: null, endpoints: [`grpc://127.0.0.1:${port}`] };
  await putKey(etcd.endpoint, `/microservices/${service}/${key}`, JSON.stringify(value));
}

/** A transport that follows the registry by watch; without onEvent it logs to the console. */
function watching(service: string, onEvent?: EventListener): BalancedTransport {
  const transport = createBalancedTransport({
    service,
    discovery: etcdDiscovery({ endpoints: [etcd.endpoint], watch: true, ttlMs: 3_600_000 }),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
    ...(onEvent && { onEvent }),
  });
  open.push(transport);
  return transport;
}

/** The reason the first report of `key` gave. */
const reasonOf = (events: readonly BalancerEvent[], key: string) => events.flatMap((e) => (e.type === "entry_skipped" && e.key === key ? [e.reason] : []))[0];
const skippedKeys = (events: readonly BalancerEvent[]) => events.flatMap((e) => (e.type === "entry_skipped" ? [e.key] : []));

/** Makes `changes` registry changes, each awaited as the snapshot it brings. */
async function change(service: string, recorder: ReturnType<typeof eventRecorder>, changes: number, firstPort: number): Promise<void> {
  for (let i = 0; i < changes; i++) {
    const seen = recorder.next("snapshot");
    await putInstance(service, `good-${firstPort + i}`, firstPort + i);
    await seen;
  }
}

describe("skipped registry entries", () => {
  it("are reported once per key across registry changes; a new, or fixed then broken, entry is reported again", async () => {
    const service = "skip-service";
    await putMalformed(service, 1_000);
    await putInstance(service, "good", 9000);
    const recorder = eventRecorder();
    const transport = watching(service, recorder.onEvent);
    expect(await transport.peers()).toHaveLength(1);
    await change(service, recorder, 20, 10_000);
    expect(recorder.events.filter((e) => e.type === "snapshot")).toHaveLength(21);
    const perKey = countBy(skippedKeys(recorder.events));
    expect(Object.keys(perKey)).toHaveLength(1_000);
    expect(Object.values(perKey).every((count) => count === 1)).toBe(true);

    // A transport created now shares the cache: it hears only of what goes wrong from now on.
    const late = eventRecorder();
    expect(await watching(service, late.onEvent).peers()).toHaveLength(21);
    const reported = recorder.next("entry_skipped");
    const reportedLate = late.next("entry_skipped");
    await putKey(etcd.endpoint, badKey(service, "new"), "{also not json");
    expect((await reported).key).toBe(badKey(service, "new"));
    expect((await reportedLate).key).toBe(badKey(service, "new"));

    await putInstance(service, "bad-0", 11_000); // fixed: nothing to report
    await change(service, recorder, 1, 12_000);
    const again = recorder.next("entry_skipped");
    await putKey(etcd.endpoint, badKey(service, 0), "{not json 0"); // as first broken: the same key and reason
    expect(await again).toMatchObject({ key: badKey(service, 0), reason: reasonOf(recorder.events, badKey(service, 0)) });
    expect(skippedKeys(recorder.events)).toHaveLength(1_002);
    expect(skippedKeys(late.events)).toEqual([badKey(service, "new"), badKey(service, 0)]);
  });

  it("go to the console once each, within the process-wide limit, with a count of the lines held back", async () => {
    const service = "console-service";
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    vi.useFakeTimers({ toFake: ["performance"] }); // the limiter's monotonic clock
    await putMalformed(service, 1_000);
    await putInstance(service, "good", 9000);
    // Shares the cache with the console transport; only there to await the registry changes.
    const recorder = eventRecorder();
    watching(service, recorder.onEvent);
    await watching(service).peers();
    await change(service, recorder, 20, 10_000);
    const lines = warn.mock.calls.map(([line]) => String(line));
    expect(lines).toHaveLength(101);
    expect(new Set(lines.slice(0, 100)).size).toBe(100);
    expect(lines.slice(0, 100).every((line) => line.includes(`skipped registry entry /microservices/${service}/bad-`))).toBe(true);
    expect(lines[100]).toContain("more than 100 warnings within 60 s");

    vi.advanceTimersByTime(60_000);
    const reported = recorder.next("entry_skipped");
    await putKey(etcd.endpoint, badKey(service, "new"), "{also not json");
    await reported;
    // 900 of the first read, not 900 + 20 × 1,000 from reports repeated on each change.
    expect(warn.mock.calls.slice(101).map(([line]) => String(line))).toEqual([
      "connect-etcd-balancer: 900 more warnings were suppressed (at most 100 per 60 s)",
      expect.stringContaining(`skipped registry entry ${badKey(service, "new")}`),
    ]);
  });
});

describe("the acceptance rules for skipped entries (pure)", () => {
  const instance = { key: "/microservices/s/a", id: "a", name: "s", version: "v1", metadata: {}, endpoints: [] };
  const read = (revision: number, instances: (typeof instance)[], skipped: [string, string][]) => ({
    service: "s",
    revision,
    instances,
    skipped: skipped.map(([key, reason]) => ({ key, reason })),
  });
  const reported = (events: readonly BalancerEvent[]) => events.map((e) => (e.type === "entry_skipped" ? `${e.key}: ${e.reason}` : e.type));

  it("report an entry when first skipped: also in a read that lists no instance, and again when its reason changes", () => {
    const first = acceptRead(initialState, read(1, [instance], [["k1", "bad port"]]));
    expect(reported(first.events)).toEqual(["snapshot", "k1: bad port"]);
    const empty = acceptRead(first.state, read(2, [], [["k1", "bad port"], ["k2", "no endpoints"]]));
    expect(reported(empty.events)).toEqual(["empty_registry_ignored", "k2: no endpoints"]);
    const back = acceptRead(empty.state, read(3, [instance], [["k1", "not JSON"], ["k2", "no endpoints"]]));
    expect(reported(back.events)).toEqual(["snapshot", "k1: not JSON"]);
    expect(reported(acceptRead(back.state, read(4, [instance], [["k1", "not JSON"], ["k2", "no endpoints"]])).events)).toEqual([]);
  });
});

describe("limitLines", () => {
  it("passes a number of lines per window, then says so once, and counts the rest at the next window; no timer", () => {
    vi.useFakeTimers();
    let now = 0;
    const written: string[] = [];
    const log = limitLines((line) => written.push(line), 3, 1_000, () => now);
    for (let i = 0; i < 6; i++) log(`line ${i}`);
    expect(written).toEqual(["line 0", "line 1", "line 2", expect.stringContaining("more than 3 warnings within 1 s")]);
    expect(vi.getTimerCount()).toBe(0);

    now += 999;
    log("still held back");
    expect(written).toHaveLength(4);
    now += 1;
    log("next window");
    expect(written.slice(4)).toEqual(["connect-etcd-balancer: 4 more warnings were suppressed (at most 3 per 1 s)", "next window"]);
    now += 1_000;
    log("quiet window");
    expect(written.slice(6)).toEqual(["quiet window"]);
  });

  it("by default counts windows on a monotonic clock: the wall clock stepped back an hour does not silence the console for that hour", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const written: string[] = [];
    const log = limitLines((line) => written.push(line), 1, 20);
    log("before the step");
    vi.setSystemTime(Date.now() - 3_600_000);
    await sleep(30);
    log("after the step, in the next window");
    expect(written).toEqual(["before the step", "after the step, in the next window"]);
  });
});

describe("the default console line of a skipped entry", () => {
  it("shows at most 200 characters of the key and of the reason, with control characters escaped: no line of its own for registry text", async () => {
    vi.resetModules(); // a limiter of its own, whatever the tests before wrote
    const { logProblems } = await import("../src/events.js");
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    const hugeKey = `/microservices/svc/${"k".repeat(1.5 * 2 ** 20)}`;
    logProblems({ type: "entry_skipped", service: "svc", key: hugeKey, reason: "bad\nconnect-etcd-balancer: forged\u001b[2K\u202e" });
    logProblems({ type: "entry_skipped", service: "svc", key: "/microservices/svc/a\r\nforged\u2028", reason: "x".repeat(10_000) });
    expect(warn.mock.calls.map(([line]) => String(line))).toEqual([
      `connect-etcd-balancer: skipped registry entry ${hugeKey.slice(0, 200)}… of "svc": bad\\u{a}connect-etcd-balancer: forged\\u{1b}[2K\\u{202e}`,
      `connect-etcd-balancer: skipped registry entry /microservices/svc/a\\u{d}\\u{a}forged\\u{2028} of "svc": ${"x".repeat(200)}…`,
    ]);
  });
});
