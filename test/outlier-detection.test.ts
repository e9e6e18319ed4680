// Outlier detection: which call endings count against a peer, how long
// ejections last, how many peers may be out, and what callers see on real servers.
import { afterEach, describe, expect, it } from "vitest";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, hashKey, staticDiscovery, type BalancedTransport, type Peer } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { OutlierDetection, outcomeOf } from "../src/transport/outlier-detection.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy, eventRecorder } from "./helpers.js";

const peer = (n: number) => ({ url: `http://10.0.0.${n}:9000`, address: `10.0.0.${n}:9000` }) as Peer;

describe("outcomeOf", () => {
  const error = (code: Code) => new ConnectError("x", code);
  it.each([
    ["a success", undefined, false, false, "alive"],
    ["NotFound (the server works)", error(Code.NotFound), false, false, "alive"],
    ["InvalidArgument", error(Code.InvalidArgument), false, false, "alive"],
    ["Unavailable", error(Code.Unavailable), false, false, "failed"],
    ["Internal", error(Code.Internal), false, false, "failed"],
    ["Unknown", error(Code.Unknown), false, false, "failed"],
    ["DataLoss", error(Code.DataLoss), false, false, "failed"],
    ["a lost connection", error(Code.Unavailable), true, false, "unreachable"],
    ["a connection that could not be established", error(Code.Unavailable), "not connected", false, "unreached"],
    ["the caller's cancellation", error(Code.Canceled), false, true, "unknown"],
    ["a cancellation that cut a connection attempt", error(Code.Unavailable), true, true, "unknown"],
    ["a passed deadline", error(Code.DeadlineExceeded), false, false, "unknown"],
    ["a passed deadline while other peers answered faster (a black hole)", error(Code.DeadlineExceeded), "others answered", false, "failed"],
    ["a refused stream (REFUSED_STREAM on a live connection)", error(Code.Unavailable), "refused", false, "unknown"],
  ] as const)("%s → %s", (_name, failure, unreachable, canceled, outcome) => {
    const kind = { unreachable: unreachable === true || unreachable === "not connected", refused: unreachable === "refused", notConnected: unreachable === "not connected" };
    expect(outcomeOf(failure, kind, canceled, unreachable === "others answered")).toBe(outcome);
  });
});

describe("OutlierDetection", () => {
  it("ejects after 5 consecutive failures, and a success in between starts the count again", () => {
    const detection = new OutlierDetection();
    for (let i = 0; i < 4; i++) expect(detection.record(peer(1), "failed", 0, 20)).toBeUndefined();
    detection.record(peer(1), "alive", 0, 20);
    for (let i = 0; i < 4; i++) expect(detection.record(peer(1), "failed", 0, 20)).toBeUndefined();
    expect(detection.record(peer(1), "failed", 0, 20)).toBe(30_000);
    expect(detection.isEjected(peer(1))).toBe(true);
  });

  it("ejects an unreachable peer at once, for 30 s × the ejections in a row, at most 300 s", () => {
    const detection = new OutlierDetection();
    const lengths: number[] = [];
    let now = 0;
    for (let i = 0; i < 12; i++) {
      lengths.push(detection.record(peer(1), "unreachable", now, 20)!);
      now += lengths.at(-1)!;
      detection.expire(now);
      expect(detection.isEjected(peer(1))).toBe(false);
    }
    expect(lengths).toEqual([30_000, 60_000, 90_000, 120_000, 150_000, 180_000, 210_000, 240_000, 270_000, 300_000, 300_000, 300_000]);
  });

  it("shortens the next ejection by 30 s for each 30 s the peer spent healthy", () => {
    const detection = new OutlierDetection();
    detection.record(peer(1), "unreachable", 0, 20);
    detection.expire(30_000);
    detection.record(peer(1), "unreachable", 30_000, 20); // 60 s: the second in a row
    detection.expire(90_000);
    expect(detection.record(peer(1), "unreachable", 90_000 + 30_000, 20)).toBe(60_000); // one period healthy: 2 - 1 + 1
    detection.expire(180_000);
    expect(detection.record(peer(1), "unreachable", 180_000 + 600_000, 20)).toBe(30_000); // long healthy: back to the first
  });

  it("ejects at most 10 % of the peers at once, but always one", () => {
    const detection = new OutlierDetection();
    const ejected = [1, 2, 3].map((n) => detection.record(peer(n), "unreachable", 0, 3));
    expect(ejected).toEqual([30_000, undefined, undefined]);
    const ofTwenty = new OutlierDetection();
    expect([1, 2, 3].map((n) => ofTwenty.record(peer(n), "unreachable", 0, 20))).toEqual([30_000, 30_000, undefined]);
  });

  it("ends a run-out ejection before ejecting the peer again, so the limit is not used up", () => {
    const detection = new OutlierDetection();
    expect(detection.record(peer(1), "unreachable", 0, 20)).toBe(30_000);
    // no pick ran expire() in between: the first ejection is over all the same
    expect(detection.record(peer(1), "unreachable", 31_000, 20)).toBe(60_000);
    detection.expire(1_000_000);
    expect([1, 2, 3].map((n) => detection.record(peer(n), "unreachable", 1_000_000, 20) !== undefined)).toEqual([true, true, false]);
  });

  it("never ejects a peer that already left the registry (its last calls end after it)", () => {
    const detection = new OutlierDetection();
    detection.retain(new Set([peer(2).url, peer(3).url]));
    expect(detection.record(peer(1), "unreachable", 0, 2)).toBeUndefined();
    expect(detection.record(peer(2), "unreachable", 1, 2)).toBe(30_000);
  });

  it("frees the slot of a peer that left the registry", () => {
    const detection = new OutlierDetection();
    detection.record(peer(1), "unreachable", 0, 3);
    detection.retain(new Set([peer(2).url, peer(3).url]));
    expect(detection.record(peer(2), "unreachable", 0, 2)).toBe(30_000);
  });
});

describe("on real servers", () => {
  const servers: UserServer[] = [];
  const transports: BalancedTransport[] = [];
  afterEach(async () => {
    await Promise.all(transports.splice(0).map((t) => t.close()));
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  async function fleet(options: Parameters<typeof startUserServer>[0][], balancer: "round_robin" | "ring_hash" = "round_robin") {
    const started = await Promise.all(options.map((o) => startUserServer(o)));
    servers.push(...started);
    const recorder = eventRecorder();
    const transport = createBalancedTransport({
      service: "user-service",
      discovery: staticDiscovery(started.map((s) => `grpc://${s.address}`)),
      transport: nodeHttp2Transport(),
      balancer,
      onEvent: recorder.onEvent,
    });
    transports.push(transport);
    return { started, recorder, users: createPeerClient(UserService, transport) };
  }

  it("takes an instance that fails every call out after 5 in a row; callers of idempotent methods never see a failure", async () => {
    const { started, recorder, users } = await fleet([{ failWith: Code.Unavailable }, {}, {}]);
    const [broken, ...working] = started;
    for (let i = 0; i < 60; i++) {
      const res = await users.getUser({ id: String(i) });
      expect(res.message.servedBy).not.toBe(broken!.address);
    }
    expect(broken!.calls).toBe(5);
    expect(working[0]!.calls + working[1]!.calls).toBe(60);
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([
      expect.objectContaining({ address: broken!.address, reason: "consecutive_failures", forMs: 30_000 }),
    ]);
  });

  it("never takes out an instance for application errors (NotFound)", async () => {
    const { started, recorder, users } = await fleet([{ failWith: Code.NotFound }, {}]);
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => users.getUser({ id: String(i) })));
    expect(results.filter((r) => r.status === "rejected")).toHaveLength(10);
    expect(started[0]!.calls).toBe(10);
    expect(recorder.events.filter((e) => e.type === "peer_ejected")).toEqual([]);
  });

  it("keeps every other key on its instance while one instance is out (ring_hash)", async () => {
    const { started, users } = await fleet([{}, {}, {}, {}, {}, {}, {}, {}, {}, {}], "ring_hash");
    const owner = async (key: string) => {
      const contextValues = createContextValues();
      contextValues.set(hashKey, key);
      return (await users.getUser({ id: key }, { contextValues })).message.servedBy;
    };
    const keys = Array.from({ length: 200 }, (_, i) => `user-${i}`);
    const before = new Map<string, string>();
    for (const key of keys) before.set(key, await owner(key));
    const victim = started.find((s) => s.address === before.get("user-0"))!;
    await victim.stop(); // the next call to it fails unreachable: resent, and the instance is ejected
    await owner("user-0");
    const moved = [];
    for (const key of keys) {
      const now = await owner(key);
      expect(now).not.toBe(victim.address);
      if (before.get(key) !== victim.address && now !== before.get(key)) moved.push(key);
    }
    expect(moved).toEqual([]);
    expect(Object.keys(countBy([...before.values()])).length).toBe(10);
  });
});
