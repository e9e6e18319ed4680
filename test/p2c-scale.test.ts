// p2c picks at the same cost at any number of peers: proven by counting what a
// pick reads, not by timing it (which a loaded machine would make flaky).
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import type { Peer, PickRequest } from "../src/index.js";
import { createPeer } from "../src/peer.js";
import { parseEndpoint, type Endpoint } from "../src/registry/endpoint.js";
import { p2cOver } from "../src/balancer/p2c.js";
import { LatencyAverage } from "../src/balancer/latency-average.js";
import { StatsByPeer, type PeerLoad } from "../src/balancer/peer-stats.js";

function peer(n: number): Peer {
  return createPeer(
    { key: `k${n}`, id: `${n}`, name: "svc", version: "", metadata: {}, endpoints: [] },
    parseEndpoint(`grpc://10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}:9000`) as Endpoint,
  );
}
const request: PickRequest = { method: UserService.method.getUser, header: new Headers(), contextValues: createContextValues(), attempt: 0 };

/** A stats store whose pickers read each peer's stats through a proxy that notes which peers were read. */
class ReadCountingStats extends StatsByPeer {
  readonly read = new Set<PeerLoad>();

  override forPeers(peers: readonly Peer[]): PeerLoad[] {
    const read = this.read;
    return super.forPeers(peers).map(
      (stats) =>
        new Proxy(stats, {
          get(target, property) {
            read.add(target);
            return Reflect.get(target, property);
          },
        }),
    );
  }
}

describe("p2c at 100,000 peers", () => {
  const peers = Array.from({ length: 100_000 }, (_, i) => peer(i + 1));

  it("reads the stats of at most two peers per pick and its end, while most peers are unmeasured and as they get measured", () => {
    const stats = new ReadCountingStats();
    const picker = p2cOver(stats, 10_000).build(peers);
    let mostRead = 0;
    for (let i = 0; i < 5_000; i++) {
      stats.read.clear();
      const pick = picker(request);
      pick.done?.({}, 1 + (i % 7));
      mostRead = Math.max(mostRead, stats.read.size);
    }
    expect(mostRead).toBeLessThanOrEqual(2); // a scan over the unmeasured peers' prior read all 100,000
  });
});

describe("an older picker used again after a newer one was built", () => {
  it("counts the latencies its peers got meanwhile, so an unmeasured peer is assumed as fast as the measured ones", () => {
    const [measured, fresh] = [peer(1), peer(2)];
    const balancer = p2cOver(new StatsByPeer(), 10_000);
    const all = balancer.build([measured, fresh]);
    const subset = balancer.build([measured]); // fresh is ejected for a while
    for (let i = 0; i < 10; i++) subset(request).done?.({}, 100);
    // all peers again (the ejection ended): held calls, so only the assumed latency of fresh decides
    const held = Array.from({ length: 100 }, () => all(request).peer);
    const toFresh = held.filter((p) => p === fresh).length;
    expect(toFresh).toBeGreaterThanOrEqual(45); // an average missing the 100 ms samples would assume 1 ms and send ~99
    expect(toFresh).toBeLessThanOrEqual(55);
  });
});

describe("LatencyAverage", () => {
  const decayMs = 1_000;
  const step = fc.oneof(
    fc.record({ kind: fc.constant("sample" as const), peer: fc.nat(9), latencyMs: fc.double({ min: 0.01, max: 10_000, noNaN: true }) }),
    fc.record({ kind: fc.constant("leave" as const), peer: fc.nat(9) }),
    fc.record({ kind: fc.constant("wait" as const), ms: fc.double({ min: 0, max: 40 * decayMs, noNaN: true }) }),
  );

  it("equals the mean of the fading estimates of the peers measured now, whatever samples, departures and waits came before", () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        let now = 1_000;
        const average = new LatencyAverage(decayMs, now);
        const samples = new Map<number, { latencyMs: number; sampledAt: number }>();
        for (const s of steps) {
          if (s.kind === "wait") {
            now += s.ms;
            continue;
          }
          const old = samples.get(s.peer);
          if (old !== undefined) average.remove(old);
          samples.delete(s.peer);
          if (s.kind === "sample") {
            const sample = { latencyMs: s.latencyMs, sampledAt: now };
            samples.set(s.peer, sample);
            average.add(sample);
          }
        }
        const estimates = [...samples.values()].map((s) => s.latencyMs * Math.exp(-(now - s.sampledAt) / decayMs));
        const expected = estimates.length === 0 ? 1 : estimates.reduce((a, b) => a + b, 0) / estimates.length;
        expect(Math.abs(average.mean(now) - expected)).toBeLessThanOrEqual(1e-9 * Math.max(1, expected));
      }),
      { numRuns: 500 },
    );
  });
});
