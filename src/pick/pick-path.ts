import type { Balancer, Picker } from "../balancer/balancer.js";
import { compareKeys } from "../discovery/decode.js";
import type { Peer } from "../peer.js";
import type { OutlierDetection } from "../transport/outlier-detection.js";
import type { Reachability } from "../transport/reachability.js";
import { healthOf, type Health } from "./health.js";
import { RendezvousRanking } from "./rendezvous.js";
import type { SlowStart } from "./slow-start.js";
import { takeSubset } from "./subset.js";
import { fullyAvailable, isLocal, localShare, splitByZone, type ZoneOptions } from "./zones.js";

/** How the peers changed, by identity, between two lists in key order (the transport's PeerChange). */
export interface PathChange {
  readonly from: readonly Peer[];
  readonly departed: readonly Peer[];
  readonly added: readonly Peer[];
}

export interface PickPathOptions {
  /** The user's policy, at the top of the path. */
  readonly balancer: Balancer;
  /** How many peers of each zone priority calls are spread over; undefined: all of them. */
  readonly subsetSize: number | undefined;
  /** The caller's zone; undefined: zones are not looked at. */
  readonly zones: ZoneOptions | undefined;
  /** Ramps peers that come into rotation; undefined: every peer gets its full share at once. */
  readonly slowStart?: SlowStart;
  /** Seeds the subsets' ranking; default random per transport, so that clients spread over the fleet. */
  readonly seed?: number;
}

/** What the path hands to a call: the picker, and the peers it chooses from. */
export interface PickablePeers {
  /** The peers the transport balances over, members out of order included, in registry order: what `peers()` and `stats()` show. */
  readonly members: readonly Peer[];
  /** The peers the picker chooses from now. */
  readonly peers: readonly Peer[];
  readonly pick: Picker;
  /** Every peer is out of reach: the picker is over them all the same, and a fresh registry read is worth waiting for. */
  readonly noneReachable: boolean;
}

/** One zone priority (or all peers) after health and subset: the peers the balancer is given. */
interface Group {
  readonly health: Health;
  readonly total: number;
  readonly chosen: readonly Peer[];
  readonly members: readonly Peer[];
  readonly pick: Picker | undefined;
}

/**
 * The stages between a snapshot's peers and the user's policy, each taking
 * the state below it and handing its result up, as grpc's balancer tree:
 *
 *   peers → zone priority → health (reachability, outlier detection) → subset → balancer → slow start
 *
 * The zone stage splits the peers into the caller's zone and the rest, and
 * sends each call to one of them by the local zone's health. In each, health
 * keeps the peers calls may go to, the subset the first `subsetSize` of them
 * in a rendezvous ranking, and the balancer builds its picker over those,
 * which slow start weighs down for the peers that are ramping in. The
 * result is rebuilt only when the peers, a reachability or an ejection
 * changes, and a policy's picker only when the peers it is given change, so
 * round-robin order, weights and ring-hash affinity hold across rebuilds.
 */
export class PickPath {
  private readonly local: GroupStage;
  private readonly others: GroupStage;
  private split: { readonly all: readonly Peer[]; readonly local: Peer[]; readonly others: Peer[] } | undefined;
  /**
   * The peers the subsets' rankings are of, once follow() kept them up to
   * date (so these peers are in key order); undefined: ranked afresh from
   * the peers of the next over().
   */
  private followed: readonly Peer[] | undefined;
  /**
   * The peers slow start last looked at when every one of them was in
   * rotation, and the changes followed since: the next look, if every peer
   * is in rotation again, is told just those.
   */
  private looked: { readonly to: readonly Peer[]; readonly changes: readonly Pick<PathChange, "departed" | "added">[]; readonly size: number } | undefined;
  /** The peers of the last change followed: in key order, as a change is only told between such lists. */
  private keyOrdered: readonly Peer[] | undefined;
  private built: { readonly all: readonly Peer[]; readonly reachVersion: number; readonly ejectVersion: number; readonly result: PickablePeers } | undefined;

  constructor(
    private readonly options: PickPathOptions,
    private readonly detection: OutlierDetection | undefined,
    private readonly reachability: Reachability,
  ) {
    this.local = new GroupStage(options);
    this.others = new GroupStage(options);
  }

  /**
   * Takes a change of the peers to `all` into the subsets' rankings, in
   * proportion to the change: the next over(all) then ranks nothing afresh.
   * Without a change (or one not from the peers followed, or a big one),
   * the next over() ranks its peers afresh. Without subsets there is
   * nothing to keep: the policy is given every peer anyway.
   */
  follow(all: readonly Peer[], change: PathChange | undefined): void {
    const followed = this.followed;
    const looked = this.looked;
    this.followed = undefined;
    this.looked = undefined;
    const { subsetSize, zones } = this.options;
    if (subsetSize === undefined || change === undefined || followed === undefined || change.from !== followed) {
      return;
    }
    if ((change.departed.length + change.added.length) * 8 > all.length) {
      return; // a sort costs less than that many moves
    }
    if (zones === undefined) {
      this.local.update(change.departed, change.added);
    } else {
      const local = (peers: readonly Peer[]) => peers.filter((peer) => isLocal(peer, zones));
      const others = (peers: readonly Peer[]) => peers.filter((peer) => !isLocal(peer, zones));
      this.local.update(local(change.departed), local(change.added));
      this.others.update(others(change.departed), others(change.added));
    }
    this.followed = all;
    this.keyOrdered = all;
    const size = (looked?.size ?? 0) + change.departed.length + change.added.length;
    // bounded: a transport that gets no call keeps no more than a full look would cost
    if (looked?.to === change.from && size * 8 <= all.length) {
      this.looked = { to: all, changes: [...looked.changes, { departed: change.departed, added: change.added }], size };
    }
  }

  /** The picker over `all` (never empty) as of `now`. */
  over(all: readonly Peer[], now: number): PickablePeers {
    const { detection, reachability } = this;
    detection?.expire(now);
    reachability.expire(now);
    const reachVersion = reachability.version;
    const ejectVersion = detection?.version ?? 0;
    const built = this.built;
    if (built !== undefined && built.all === all && built.reachVersion === reachVersion && built.ejectVersion === ejectVersion) {
      return built.result;
    }
    const path = this.build(all, now);
    const result = { ...path, members: inRegistryOrder(all, path.members, this.keyOrdered === all) };
    this.built = { all, reachVersion, ejectVersion, result };
    return result;
  }

  private build(all: readonly Peer[], now: number): PickablePeers {
    const { zones, subsetSize } = this.options;
    const { detection, reachability } = this;
    const followed = this.followed === all;
    this.followed = subsetSize === undefined ? undefined : all; // ranked below, if not yet
    if (zones === undefined) {
      const ranked = followed ? this.local.ranking() : this.local.rank(all);
      return only(this.ramped(all, [this.local.over(ranked, healthOf(ranked, detection, reachability, true), subsetSize)], now)[0]!);
    }
    if (!followed && this.split?.all !== all) {
      this.split = { all, ...splitByZone(all, zones) };
    }
    const localRanked = followed ? this.local.ranking() : this.local.rank(this.split!.local);
    const othersRanked = followed ? this.others.ranking() : this.others.rank(this.split!.others);
    if (subsetSize !== undefined) {
      this.split = undefined; // the rankings hold the zones now
    }
    // A zone spreads over its ejected peers (panic) only while the zones together lack the capacity to take its calls, as Envoy.
    const healthOfBoth = (panicAllowed: boolean) => [healthOf(localRanked, detection, reachability, panicAllowed), healthOf(othersRanked, detection, reachability, panicAllowed)] as const;
    let [localHealth, othersHealth] = healthOfBoth(false);
    if (!fullyAvailable([{ ...localHealth, total: localRanked.length }, { ...othersHealth, total: othersRanked.length }])) {
      [localHealth, othersHealth] = healthOfBoth(true);
    }
    const share = localShare({ ...localHealth, total: localRanked.length }, { ...othersHealth, total: othersRanked.length });
    // the other zones' subset only as large as the spill-over needs, so that a client connects to few of them
    const size = this.options.subsetSize;
    const othersSize = size === undefined ? undefined : Math.max(1, Math.ceil(size * (1 - share)));
    const [local, others] = this.ramped(all, [this.local.over(localRanked, localHealth, size), this.others.over(othersRanked, othersHealth, othersSize)], now) as [Group, Group];
    if (share >= 1) {
      return only(local);
    }
    if (share <= 0) {
      // the caller's zone stays in view, out as it is: that is when an operator looks
      return { ...only(others), members: [...local.members, ...others.members] };
    }
    const [pickLocal, pickOthers] = [local.pick!, others.pick!];
    return {
      members: [...local.members, ...others.members],
      peers: [...local.chosen, ...others.chosen],
      pick: (request) => (Math.random() < share ? pickLocal(request) : pickOthers(request)),
      noneReachable: false,
    };
  }

  /** The groups with their pickers weighed by slow start, once it has seen which peers are in rotation now. */
  private ramped(all: readonly Peer[], groups: Group[], now: number): Group[] {
    const { slowStart } = this.options;
    if (slowStart === undefined) {
      return groups;
    }
    const everyPeer = groups.every((group) => group.health.usable.length === group.total);
    const looked = this.looked;
    if (everyPeer && looked?.to === all) {
      // every peer in rotation now and at the last look: what came into rotation is what the registry added
      for (const change of looked.changes) {
        slowStart.lookChange(change.departed, change.added, now);
      }
    } else {
      slowStart.look(
        groups.flatMap((group) => group.health.usable),
        now,
      );
    }
    this.looked = everyPeer ? { to: all, changes: [], size: 0 } : undefined;
    return groups.map((group) => (group.pick === undefined ? group : { ...group, pick: slowStart.wrap(group.pick, group.chosen, now) }));
  }
}

/**
 * `members` (a subset of `all`, as ranked) in the order of `all`, so that
 * `peers()` and `stats()` list peers as the registry does: by key when `all`
 * is known to be in key order (a subset's few members are sorted, not all
 * peers passed over).
 */
function inRegistryOrder(all: readonly Peer[], members: readonly Peer[], keyOrdered: boolean): readonly Peer[] {
  if (members.length === all.length) {
    return all;
  }
  if (keyOrdered) {
    return [...members].sort((a, b) => compareKeys(a.key, b.key));
  }
  const chosen = new Set(members);
  return all.filter((peer) => chosen.has(peer));
}

/** The group's picker as the path's; the stages above never hand up a group without peers. */
function only(group: Group): PickablePeers {
  return { members: group.members, peers: group.chosen, pick: group.pick!, noneReachable: group.health.noneReachable };
}

/** Health, subset and the balancer's picker for one group of peers; keeps the picker while its peers stay the same. */
class GroupStage {
  private readonly ranker: RendezvousRanking | undefined;
  private ranked: readonly Peer[] = [];
  private picker: { readonly peers: readonly Peer[]; readonly pick: Picker } | undefined;

  constructor(private readonly options: PickPathOptions) {
    this.ranker = options.subsetSize === undefined ? undefined : new RendezvousRanking(options.seed);
  }

  /** The peers in the subset's order (as given without a subset); the same array while `peers` is. */
  rank(peers: readonly Peer[]): readonly Peer[] {
    this.ranked = this.ranker?.rank(peers) ?? peers;
    return this.ranked;
  }

  /** The ranking as of the last rank() or update(). */
  ranking(): readonly Peer[] {
    return this.ranked;
  }

  /** The ranking after a change of its peers (subsets only). */
  update(departed: readonly Peer[], added: readonly Peer[]): void {
    if (this.ranker !== undefined && (departed.length > 0 || added.length > 0)) {
      this.ranked = this.ranker.update(departed, added);
    }
  }

  /** The group over `ranked` (from rank()) with its health, on a subset of `size` (undefined: all usable peers). */
  over(ranked: readonly Peer[], health: Health, size: number | undefined): Group {
    const { chosen, members } = size === undefined ? { chosen: health.usable, members: ranked } : takeSubset(ranked, health.usable, size);
    return { health, total: ranked.length, chosen, members, pick: chosen.length === 0 ? undefined : this.pickerOver(chosen) };
  }

  private pickerOver(peers: readonly Peer[]): Picker {
    const last = this.picker;
    if (last === undefined || last.peers.length !== peers.length || last.peers.some((peer, i) => peer !== peers[i])) {
      this.picker = { peers, pick: this.options.balancer.build(peers) };
    }
    return this.picker!.pick;
  }
}
