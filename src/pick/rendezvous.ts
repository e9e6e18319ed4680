import type { Peer } from "../peer.js";

/**
 * Ranks peers by rendezvous (highest random weight) hashing: each peer's
 * score is a hash of its address and the ranking's seed, and the ranking is
 * the peers by falling score. A peer joining or leaving moves no other peer
 * relative to the rest, so a subset taken as the first `size` peers changes
 * by at most one member (gRFC A68's random subsetting; a random seed per
 * client spreads the clients over the fleet).
 */
export class RendezvousRanking {
  private readonly scores = new Map<string, number>();
  private ranked: { readonly peers: readonly Peer[]; readonly order: readonly Peer[] } | undefined;

  /** `seed` defaults to 32 random bits, drawn at the first ranking: Workers refuse random values in global scope, where transports are often made. */
  constructor(private seed?: number) {}

  /** The peers by falling score, the same array while `peers` is; ties by address. */
  rank(peers: readonly Peer[]): readonly Peer[] {
    if (this.ranked?.peers === peers) {
      return this.ranked.order;
    }
    const seed = (this.seed ??= Math.floor(Math.random() * 2 ** 32));
    const scores = new Map<string, number>();
    for (const peer of peers) {
      scores.set(peer.url, this.scores.get(peer.url) ?? rendezvousScore(peer.url, seed));
    }
    // Kept for the peers of the last ranking only: the memory follows the registry.
    this.scores.clear();
    scores.forEach((score, url) => this.scores.set(url, score));
    const order = [...peers].sort((a, b) => scores.get(b.url)! - scores.get(a.url)! || (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
    this.ranked = { peers, order };
    return order;
  }
}

/**
 * A 53-bit score of `text` under `seed`: two murmur3 (32-bit) hashes with
 * different seeds, so that ties among thousands of peers are practically
 * impossible and the scores are uniform, which is what spreads the load.
 */
export function rendezvousScore(text: string, seed: number): number {
  const high = murmur3(text, seed >>> 0);
  const low = murmur3(text, (seed ^ 0x9e3779b9) >>> 0) >>> 11;
  return high * 2 ** 21 + low;
}

/** MurmurHash3 x86 32-bit over the UTF-16 code units of `text`. */
function murmur3(text: string, seed: number): number {
  let h = seed;
  const length = text.length;
  let i = 0;
  for (; i + 1 < length; i += 2) {
    h = mixInto(h, (text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16)) >>> 0);
    h = Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64;
  }
  if (i < length) {
    h = mixInto(h, text.charCodeAt(i));
  }
  h ^= length * 2;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function mixInto(h: number, block: number): number {
  let k = Math.imul(block, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  return h ^ k;
}
