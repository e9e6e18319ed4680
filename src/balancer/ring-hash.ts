import { createContextKey } from "@connectrpc/connect";
import type { Balancer, PickRequest } from "./balancer.js";
import { random } from "./random.js";
import { fmix32 } from "../fmix32.js";

/**
 * The key a ring_hash balancer hashes to choose the peer of a call, e.g. a
 * user or tenant id: `contextValues.set(hashKey, userId)`. Calls without one
 * go to a random peer.
 */
export const hashKey = createContextKey<string | undefined>(undefined, { description: "connect-etcd-balancer hash key" });

export interface RingHashOptions {
  /** Where a call's key comes from (default: the `hashKey` context value). */
  readonly key?: (request: PickRequest) => string | undefined;
}

/** Points per peer of weight 100 (ketama's 160); a peer's points depend only on its own address and weight. */
const pointsPerWeight100 = 160;
/** Above this many points the ring is scaled down, so building it stays around a millisecond. */
const maxPoints = 65_536;

/**
 * Consistent hashing (ketama-style ring): calls with the same key go to the
 * same peer, and when a peer joins or leaves only the keys on its share of
 * the ring move. When the peer of a key is ejected or was already tried, the
 * next peer clockwise on the ring takes the call.
 */
export function ringHash(options: RingHashOptions = {}): Balancer {
  const keyOf = options.key ?? ((request: PickRequest) => request.contextValues.get(hashKey));
  const fallback = random();
  return {
    name: "ring_hash",
    build(peers) {
      const unkeyed = fallback.build(peers);
      const totalWeight = peers.reduce((sum, p) => sum + p.weight, 0);
      const scale = Math.min(1, maxPoints / ((totalWeight / 100) * pointsPerWeight100));
      const points: { hash: number; peer: number }[] = [];
      peers.forEach((peer, index) => {
        const count = Math.max(1, Math.round((peer.weight / 100) * pointsPerWeight100 * scale));
        for (let i = 0; i < count; i++) {
          points.push({ hash: hash32(`${peer.address}-${i}`), peer: index });
        }
      });
      points.sort((a, b) => a.hash - b.hash);
      const hashes = Uint32Array.from(points, (p) => p.hash);
      const owners = Uint32Array.from(points, (p) => p.peer);
      const picks = peers.map((peer) => ({ peer }));
      return (request) => {
        const key = keyOf(request);
        if (key === undefined) {
          return unkeyed(request);
        }
        const at = firstAtOrAfter(hashes, hash32(key));
        return picks[request.attempt === 0 ? owners[at]! : nthOwnerFrom(owners, at, request.attempt)]!;
      };
    },
  };
}

/** The (n+1)-th distinct peer met going clockwise from `start`; the last one met if there are fewer. */
function nthOwnerFrom(owners: Uint32Array, start: number, n: number): number {
  const seen = new Set<number>();
  let owner = owners[start]!;
  for (let step = 0; step < owners.length && seen.size <= n; step++) {
    owner = owners[(start + step) % owners.length]!;
    seen.add(owner);
  }
  return owner;
}

/** Index of the first ring point ≥ hash, wrapping to 0. */
function firstAtOrAfter(hashes: Uint32Array, hash: number): number {
  let low = 0;
  let high = hashes.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (hashes[mid]! < hash) {
      low = mid + 1;
    } else {
      high = mid;
    }
  }
  return low === hashes.length ? 0 : low;
}

/** FNV-1a over UTF-16 code units, finished with murmur3's fmix32 for avalanche. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}
