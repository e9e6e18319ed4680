// The built-in policies, over frozen peers as the transport builds them.
import { describe, expect, it } from "vitest";
import { createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { random, roundRobin, type Peer, type PickRequest } from "../src/index.js";
import { createPeer } from "../src/peer.js";
import { parseEndpoint, type Endpoint } from "../src/registry/endpoint.js";

const peers: Peer[] = [1, 2, 3, 4].map((n) =>
  createPeer(
    { key: `k${n}`, id: `${n}`, name: "svc", version: "", metadata: {}, endpoints: [] },
    parseEndpoint(`grpc://10.0.0.${n}:9000`) as Endpoint,
  ),
);
const request: PickRequest = { method: UserService.method.getUser, header: new Headers(), contextValues: createContextValues() };

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
