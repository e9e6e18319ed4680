// The built-in policies, over frozen peers as the transport builds them.
import { describe, expect, it } from "vitest";
import { createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { hashKey, leastRequest, p2c, random, ringHash, roundRobin, weightedRoundRobin, type Peer, type PickRequest } from "../src/index.js";
import { sleep } from "./helpers.js";
import { createPeer } from "../src/peer.js";
import { parseEndpoint, type Endpoint } from "../src/registry/endpoint.js";

function peer(n: number, metadata: Record<string, string> = {}): Peer {
  return createPeer(
    { key: `k${n}`, id: `${n}`, name: "svc", version: "", metadata, endpoints: [] },
    parseEndpoint(`grpc://10.0.0.${n}:9000`) as Endpoint,
  );
}
const peers: Peer[] = [1, 2, 3, 4].map((n) => peer(n));
const request: PickRequest = { method: UserService.method.getUser, header: new Headers(), contextValues: createContextValues(), attempt: 0 };

function counts(pick: () => Peer, calls: number): number[] {
  const seen = new Map<Peer, number>();
  for (let i = 0; i < calls; i++) {
    const peer = pick();
    seen.set(peer, (seen.get(peer) ?? 0) + 1);
  }
  return peers.map((p) => seen.get(p) ?? 0);
}

describe("round_robin", () => {
  it("takes every peer in turn", () => {
    const picker = roundRobin().build(peers);
    const first = peers.indexOf(picker(request).peer);
    const next = Array.from({ length: 8 }, () => peers.indexOf(picker(request).peer));
    expect(next).toEqual(Array.from({ length: 8 }, (_, i) => (first + 1 + i) % 4));
  });

  it("starts each balancer at a random peer, so fresh serverless instances do not all hit the first", () => {
    const firstPicks = counts(() => roundRobin().build(peers)(request).peer, 400);
    for (const count of firstPicks) {
      expect(count).toBeGreaterThan(40); // 100 expected per peer; a fixed start would give 400/0/0/0
    }
  });

  it("keeps its position when the peer set is rebuilt", () => {
    const balancer = roundRobin();
    const picker = balancer.build(peers);
    const a = peers.indexOf(picker(request).peer);
    const rebuilt = balancer.build(peers);
    expect(peers.indexOf(rebuilt(request).peer)).toBe((a + 1) % 4);
  });
});

describe("random", () => {
  it("spreads picks over all peers", () => {
    const picker = random().build(peers);
    for (const count of counts(() => picker(request).peer, 4000)) {
      expect(count).toBeGreaterThan(800); // 1000 expected per peer
    }
  });
});

describe("weighted_round_robin", () => {
  it("gives each peer calls in proportion to its registered weight, interleaved", () => {
    const weighted = [peer(1, { weight: "100" }), peer(2, { weight: "300" })];
    const picker = weightedRoundRobin().build(weighted);
    const picks = Array.from({ length: 400 }, () => picker(request).peer.id);
    expect(picks.filter((id) => id === "1")).toHaveLength(100);
    // smooth: the light peer never gets two calls in a row
    expect(picks.join("")).not.toContain("11");
  });
});

describe("least_request", () => {
  it("never picks a busy peer while an idle one is among the two choices", () => {
    const picker = leastRequest().build(peers);
    const held = [];
    let busy: Peer | undefined;
    // make one peer busy with a call that does not end
    while (busy === undefined) {
      const pick = picker(request);
      held.push(pick);
      busy = pick.peer;
    }
    const counts = new Map<Peer, number>();
    for (let i = 0; i < 300; i++) {
      const pick = picker(request);
      counts.set(pick.peer, (counts.get(pick.peer) ?? 0) + 1);
      pick.done?.({}, 1);
    }
    expect(counts.get(busy) ?? 0).toBe(0);
    expect(counts.size).toBe(3);
  });
});

describe("p2c (median of recent latencies)", () => {
  function warm(picker: ReturnType<ReturnType<typeof p2c>["build"]>, latencyOf: (p: Peer) => number, calls: number) {
    const counts = new Map<string, number>();
    for (let i = 0; i < calls; i++) {
      const pick = picker(request);
      counts.set(pick.peer.id, (counts.get(pick.peer.id) ?? 0) + 1);
      pick.done?.({}, latencyOf(pick.peer));
    }
    return counts;
  }

  it("steers calls away from a slow peer, keeps that knowledge across registry changes, and does not starve a new peer", () => {
    const balancer = p2c();
    const slow = (p: Peer) => (p.id === "1" ? 100 : 10);
    const first = warm(balancer.build(peers), slow, 400);
    expect(first.get("1") ?? 0).toBeLessThan(20); // only until its first slow answer is known
    const after = warm(balancer.build(peers), slow, 400);
    expect(after.get("1") ?? 0).toBe(0); // a rebuild resets nothing
    const grown = warm(balancer.build([...peers, peer(5)]), slow, 400);
    expect(grown.get("5") ?? 0).toBeGreaterThan(40); // new, unmeasured: picked, and fast, so kept
    expect(grown.get("1") ?? 0).toBe(0);
  });

  it("ignores a few stalled samples of a fast peer (a noisy client), and follows one that really turned slow", () => {
    const [fast, slow] = peers;
    const picker = p2c().build([fast!, slow!]);
    warm(picker, (p) => (p === slow ? 60 : 2), 200);
    // five of the fast peer's last eleven samples caught a 100 ms stall of the client (a peak would believe them)
    const stalled = (p: Peer) => (p === slow ? 60 : 102);
    warm(picker, (p) => (p === slow ? 60 : 2), 6);
    expect(warm(picker, stalled, 5).get(slow!.id) ?? 0).toBe(0);
    expect(warm(picker, (p) => (p === slow ? 60 : 2), 200).get(slow!.id) ?? 0).toBe(0);
    // six slow samples in a row: it is slow now, and the other one is preferred
    warm(picker, (p) => (p === slow ? 60 : 200), 6);
    expect(warm(picker, (p) => (p === slow ? 60 : 200), 100).get(fast!.id) ?? 0).toBeLessThan(10);
  });

  it("counts waiting calls against a peer only by how much longer they wait than the others' (a stall ages them all alike)", async () => {
    const [a, b, slow] = peers;
    const picker = p2c().build([a!, b!, slow!]);
    warm(picker, (p) => (p === slow ? 60 : 2), 300);
    // calls in flight on both fast peers, all aged 40 ms by a stall of this process
    const held = [];
    while (held.filter((pick) => pick.peer === a).length < 2 || held.filter((pick) => pick.peer === b).length < 2) {
      const pick = picker(request);
      if (pick.peer === slow) pick.done?.({}, 60);
      else held.push(pick);
    }
    await sleep(40);
    const counts = warm(picker, (p) => (p === slow ? 60 : 2), 30);
    expect(counts.get(slow!.id) ?? 0).toBe(0);
    held.forEach((pick) => pick.done?.({}, 42));
  });

  it("judges a peer tried again after a while by what it does now, not by its old samples", async () => {
    const [fast, slow] = peers;
    const picker = p2c({ decayMs: 20 }).build([fast!, slow!]);
    warm(picker, (p) => (p === slow ? 200 : 10), 100);
    await sleep(100); // five time constants: the slow peer's estimate has faded, and its samples are forgotten
    warm(picker, () => 10, 20); // it answers fast now: one sample is its estimate
    expect(warm(picker, () => 10, 200).get(slow!.id) ?? 0).toBeGreaterThan(60);
  });

  it("does not hold a caller's cancellation against the peer", () => {
    const picker = p2c().build(peers.slice(0, 2));
    warm(picker, () => 10, 50);
    for (let i = 0; i < 20; i++) {
      const pick = picker(request);
      pick.done?.({ error: new ConnectError("cancelled by the caller", Code.Canceled) }, 5_000);
    }
    const counts = warm(picker, () => 10, 200);
    expect(counts.get("1")! / 200).toBeGreaterThan(0.3);
    expect(counts.get("2")! / 200).toBeGreaterThan(0.3);
  });

  it("avoids a peer whose calls have been waiting long, before any of them answers", async () => {
    const [a, b] = peers;
    const picker = p2c().build([a!, b!]);
    warm(picker, () => 10, 50);
    const pickHeld = (target: Peer) => {
      for (;;) {
        const pick = picker(request);
        if (pick.peer === target) {
          return pick;
        }
        pick.done?.({}, 10);
      }
    };
    pickHeld(a!); // a call to a that does not answer
    await sleep(40);
    pickHeld(b!); // and a fresh one to b: both have one call in flight
    const counts = warm(picker, () => 10, 100);
    expect(counts.get(b!.id)).toBe(100);
  });

  it("bounds what failures cost, so a peer that failed two thousand times is forgiven in time", async () => {
    const balancer = p2c({ decayMs: 60 }); // long enough that a loaded machine cannot let it fade during the first picks
    const alone = balancer.build(peers.slice(0, 1)); // the only peer, so every call goes to it and fails
    for (let i = 0; i < 2000; i++) {
      alone(request).done?.({ error: new ConnectError("overloaded", Code.Unavailable) }, 1);
    }
    const picker = balancer.build(peers.slice(0, 2)); // a healthy peer joins; the statistics stay
    expect(warm(picker, () => 1, 100).get("1") ?? 0).toBeLessThan(5); // penalised (one tie while the newcomer is unmeasured)
    await sleep(900); // fifteen time constants: a bounded penalty has faded, an unbounded one never would
    expect(warm(picker, () => 1, 400).get("1") ?? 0).toBeGreaterThan(50);
  });

  it("forgives a slow sample as faster ones arrive over time", async () => {
    const picker = p2c({ decayMs: 5 }).build(peers.slice(0, 2));
    warm(picker, (p) => (p.id === "1" ? 1_000 : 10), 20);
    expect(warm(picker, (p) => (p.id === "1" ? 1_000 : 10), 100).get("1") ?? 0).toBe(0);
    await sleep(50); // ten time constants
    const counts = warm(picker, () => 10, 200);
    expect(counts.get("1") ?? 0).toBeGreaterThan(50);
  });
});

describe("ring_hash", () => {
  const keyed = (key: string, attempt = 0): PickRequest => {
    const contextValues = createContextValues();
    contextValues.set(hashKey, key);
    return { ...request, contextValues, attempt };
  };
  const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`);

  it("sends a key to the same peer every time and spreads keys over all peers", () => {
    const picker = ringHash().build(peers);
    const owner = new Map(keys.map((k) => [k, picker(keyed(k)).peer]));
    for (const k of keys.slice(0, 100)) {
      expect(picker(keyed(k)).peer).toBe(owner.get(k));
    }
    for (const p of peers) {
      const share = keys.filter((k) => owner.get(k) === p).length / keys.length;
      expect(share).toBeGreaterThan(0.15); // 0.25 each on average
      expect(share).toBeLessThan(0.35);
    }
  });

  it("moves only the keys of a peer that leaves, and follows weights", () => {
    const balancer = ringHash();
    const before = balancer.build(peers);
    const after = balancer.build(peers.slice(1));
    for (const k of keys) {
      const was = before(keyed(k)).peer;
      if (was !== peers[0]) {
        expect(after(keyed(k)).peer).toBe(was);
      }
    }
    const weighted = ringHash().build([peer(1, { weight: "300" }), peer(2)]);
    const heavy = keys.filter((k) => weighted(keyed(k)).peer.id === "1").length / keys.length;
    expect(heavy).toBeGreaterThan(0.65); // 0.75 expected
    expect(heavy).toBeLessThan(0.85);
  });

  it("gives the next peer clockwise on a re-pick, and a random peer without a key", () => {
    const picker = ringHash().build(peers);
    for (const k of keys.slice(0, 200)) {
      const first = picker(keyed(k, 0)).peer;
      const second = picker(keyed(k, 1)).peer;
      const third = picker(keyed(k, 2)).peer;
      expect(new Set([first, second, third]).size).toBe(3);
    }
    const unkeyed = new Set(Array.from({ length: 200 }, () => picker(request).peer));
    expect(unkeyed.size).toBe(4);
  });
});

describe("a peer that fails fast", () => {
  /** Picks `calls` times; the broken peer's calls fail at once, the other's stay in flight until 4 more are waiting. */
  function shareOfBroken(balancer: ReturnType<typeof leastRequest>, failure: ConnectError): number {
    const [broken, working] = [peer(1), peer(2)];
    const picker = balancer.build([broken, working]);
    const waiting: (() => void)[] = [];
    let toBroken = 0;
    for (let i = 0; i < 1_000; i++) {
      const pick = picker(request);
      if (pick.peer === broken) {
        toBroken++;
        pick.done?.({ error: failure }, 0.1);
      } else {
        waiting.push(() => pick.done?.({}, 5));
        if (waiting.length > 4) waiting.shift()!();
      }
    }
    return toBroken / 1_000;
  }

  it.each([
    ["least_request", () => leastRequest()],
    ["p2c", () => p2c()],
  ])("does not attract the calls under %s when it fails with Unavailable, but does when it answers NotFound", (_name, make) => {
    expect(shareOfBroken(make(), new ConnectError("down", Code.Unavailable))).toBeLessThan(0.5);
    expect(shareOfBroken(make(), new ConnectError("no such user", Code.NotFound))).toBeGreaterThan(0.5);
  });
});

describe("statistics across a picker built over a subset (the healthy peers while one is ejected)", () => {
  it("keeps a busy peer's calls in flight, so least_request still avoids it when it is back", () => {
    const all = Array.from({ length: 10 }, (_, i) => peer(i + 1));
    const balancer = leastRequest();
    const full = balancer.build(all);
    balancer.build(all.slice(1)); // peer 1 ejected for a while
    const held = [];
    for (let i = 0; i < 2_000 && held.length < 50; i++) {
      const pick = full(request);
      if (pick.peer === all[0]) held.push(pick); // 50 calls in flight on peer 1
      else pick.done?.({}, 1);
    }
    const subset = balancer.build([all[0]!, ...all.slice(2)]); // another peer ejected: peer 1 is in again
    let toBusy = 0;
    for (let i = 0; i < 900; i++) {
      const pick = subset(request);
      if (pick.peer === all[0]) toBusy++;
      pick.done?.({}, 1);
    }
    expect(toBusy).toBeLessThan(10);
  });
});

