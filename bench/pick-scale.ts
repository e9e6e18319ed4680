// A pick must cost the same at any number of peers (issue 8): p2c once scanned
// every peer per pick while some were unmeasured: 22× round_robin at 100,000.
import type { Balancer, Peer, PickRequest } from "../src/index.js";
import { p2c, roundRobin } from "../src/index.js";
import { createPeer } from "../src/peer.js";
import { parseEndpoint, type Endpoint } from "../src/registry/endpoint.js";

const sizes = [10, 1_000, 100_000] as const;
const policies: Record<string, () => Balancer> = { round_robin: roundRobin, p2c: () => p2c() };

function peersOf(count: number): Peer[] {
  return Array.from({ length: count }, (_, i) =>
    createPeer(
      { key: `/microservices/svc/${i}`, id: `${i}`, name: "svc", version: "v1", metadata: {}, endpoints: [] },
      parseEndpoint(`grpc://10.${i >> 16}.${(i >> 8) & 255}.${i & 255}:9000`) as Endpoint,
    ),
  );
}

const candidateName = (policy: string, size: number) => `${policy}, ${size} peers`;

/**
 * One candidate per policy and size: n picks, each ended as a 1 ms success.
 * The pickers are fresh, so at 100,000 peers most peers stay unmeasured.
 */
export function pickScaleCandidates(request: PickRequest): Record<string, (n: number) => void> {
  const ok = {};
  const candidates: Record<string, (n: number) => void> = {};
  for (const size of sizes) {
    const peers = peersOf(size);
    for (const [policy, create] of Object.entries(policies)) {
      const pick = create().build(peers);
      candidates[candidateName(policy, size)] = (n) => {
        for (let i = 0; i < n; i++) pick(request).done?.(ok, 1);
      };
    }
  }
  return candidates;
}

/** Picks per second, one row per size, the policies side by side. */
export function printPickScale(nsPerPick: Record<string, number>): void {
  const names = Object.keys(policies);
  console.log(`\npick + done at 10 / 1,000 / 100,000 peers, picks per second`);
  console.log(`  ${"peers".padEnd(10)}${names.map((name) => name.padStart(16)).join("")}`);
  for (const size of sizes) {
    const rates = names.map((policy) => `${(1e9 / nsPerPick[candidateName(policy, size)]! / 1e6).toFixed(2)} M/s`.padStart(16));
    console.log(`  ${size.toLocaleString("en-US").padEnd(10)}${rates.join("")}`);
  }
}
