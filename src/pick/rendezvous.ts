import type { Peer } from "../peer.js";
import { fmix32 } from "../fmix32.js";

/**
 * Ranks peers by rendezvous (highest random weight) hashing: each peer's
 * score is a hash of its address and the ranking's seed, and the ranking is
 * the peers by falling score. A peer joining or leaving moves no other peer
 * relative to the rest, so a subset taken as the first `size` peers changes
 * by at most one member (gRFC A68's random subsetting; a random seed per
 * client spreads the clients over the fleet).
 */
export class RendezvousRanking {
  private ranked: { readonly peers: readonly Peer[] | undefined; readonly order: readonly Scored[]; readonly ranking: readonly Peer[] } | undefined;

  /** `seed` defaults to 32 random bits, drawn at the first ranking: Workers refuse random values in global scope, where transports are often made. */
  constructor(private seed?: number) {}

  /** The peers by falling score, the same array while `peers` is; ties by address. */
  rank(peers: readonly Peer[]): readonly Peer[] {
    if (this.ranked?.peers === peers) {
      return this.ranked.ranking;
    }
    const seed = this.seedOf();
    const order = (this.ranked === undefined ? undefined : reorder(this.ranked.order, peers, seed)) ?? peers.map((peer) => ({ peer, score: rendezvousScore(peer.url, seed) })).sort(byScore);
    this.ranked = { peers, order, ranking: order.map((scored) => scored.peer) };
    return this.ranked.ranking;
  }

  /**
   * The ranking after `departed` left it and `added` came: each found or
   * placed by binary search, so a change of one peer among 20,000 costs a
   * copy of the arrays, not a pass over the peers. A fresh array; the one
   * before stays as it was. Departed peers not in the ranking are passed over.
   */
  update(departed: readonly Peer[], added: readonly Peer[]): readonly Peer[] {
    const seed = this.seedOf();
    const order = (this.ranked?.order ?? []).slice();
    const ranking = (this.ranked?.ranking ?? []).slice();
    for (const peer of departed) {
      const scored = { peer, score: rendezvousScore(peer.url, seed) };
      for (let at = lowerBound(order, scored); at < order.length && order[at]!.score === scored.score; at++) {
        if (order[at]!.peer === peer) {
          order.splice(at, 1);
          ranking.splice(at, 1);
          break;
        }
      }
    }
    for (const peer of added) {
      const scored = { peer, score: rendezvousScore(peer.url, seed) };
      const at = lowerBound(order, scored);
      order.splice(at, 0, scored);
      ranking.splice(at, 0, peer);
    }
    this.ranked = { peers: undefined, order, ranking };
    return ranking;
  }

  private seedOf(): number {
    return (this.seed ??= Math.floor(Math.random() * 2 ** 32));
  }
}

/** Where `scored` belongs in `order` (by falling score): the first place whose entry does not rank before it. */
function lowerBound(order: readonly Scored[], scored: Scored): number {
  let low = 0;
  let high = order.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (byScore(order[middle]!, scored) < 0) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

interface Scored {
  readonly peer: Peer;
  readonly score: number;
}

function byScore(a: Scored, b: Scored): number {
  return b.score - a.score || (a.peer.url < b.peer.url ? -1 : a.peer.url > b.peer.url ? 1 : 0);
}

/**
 * The last order carried over to `peers`: the peers that stayed keep their
 * scores and places (taking their new Peer objects), the new ones are put in
 * by binary search. Undefined when so much changed that sorting afresh is
 * cheaper. A registry change of one instance among 20,000 costs a pass, not a sort.
 */
function reorder(last: readonly Scored[], peers: readonly Peer[], seed: number): Scored[] | undefined {
  const byUrl = new Map<string, Peer>();
  for (const peer of peers) {
    byUrl.set(peer.url, peer);
  }
  const order: Scored[] = [];
  for (const scored of last) {
    const now = byUrl.get(scored.peer.url);
    if (now !== undefined) {
      order.push(now === scored.peer ? scored : { peer: now, score: scored.score });
      byUrl.delete(now.url);
    }
  }
  if (byUrl.size * 8 > peers.length) {
    return undefined;
  }
  for (const peer of byUrl.values()) {
    const scored = { peer, score: rendezvousScore(peer.url, seed) };
    order.splice(lowerBound(order, scored), 0, scored);
  }
  return order;
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
  return fmix32(h ^ (length * 2));
}

function mixInto(h: number, block: number): number {
  let k = Math.imul(block, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  return h ^ k;
}
