import type { Balancer, Picker } from "../balancer/balancer.js";
import type { Peer } from "../peer.js";
import type { OutlierDetection } from "../transport/outlier-detection.js";
import type { Reachability } from "../transport/reachability.js";
import { healthOf, type Health } from "./health.js";
import { RendezvousRanking } from "./rendezvous.js";
import type { SlowStart } from "./slow-start.js";
import { takeSubset } from "./subset.js";
import { fullyAvailable, localShare, splitByZone, type ZoneOptions } from "./zones.js";

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
  private built: { readonly all: readonly Peer[]; readonly reachVersion: number; readonly ejectVersion: number; readonly result: PickablePeers } | undefined;

  constructor(
    private readonly options: PickPathOptions,
    private readonly detection: OutlierDetection | undefined,
    private readonly reachability: Reachability,
  ) {
    this.local = new GroupStage(options);
    this.others = new GroupStage(options);
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
    const result = { ...path, members: inRegistryOrder(all, path.members) };
    this.built = { all, reachVersion, ejectVersion, result };
    return result;
  }

  private build(all: readonly Peer[], now: number): PickablePeers {
    const { zones } = this.options;
    const { detection, reachability } = this;
    if (zones === undefined) {
      const ranked = this.local.rank(all);
      return only(this.ramped([this.local.over(ranked, healthOf(ranked, detection, reachability, true), this.options.subsetSize)], now)[0]!);
    }
    if (this.split?.all !== all) {
      this.split = { all, ...splitByZone(all, zones) };
    }
    const localRanked = this.local.rank(this.split.local);
    const othersRanked = this.others.rank(this.split.others);
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
    const [local, others] = this.ramped([this.local.over(localRanked, localHealth, size), this.others.over(othersRanked, othersHealth, othersSize)], now) as [Group, Group];
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
  private ramped(groups: Group[], now: number): Group[] {
    const { slowStart } = this.options;
    if (slowStart === undefined) {
      return groups;
    }
    slowStart.look(
      groups.flatMap((group) => group.health.usable),
      now,
    );
    return groups.map((group) => (group.pick === undefined ? group : { ...group, pick: slowStart.wrap(group.pick, group.chosen, now) }));
  }
}

/** `members` (a subset of `all`, as ranked) in the order of `all`, so that `peers()` and `stats()` list peers as the registry does. */
function inRegistryOrder(all: readonly Peer[], members: readonly Peer[]): readonly Peer[] {
  if (members.length === all.length) {
    return all;
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
  private readonly ranking: RendezvousRanking | undefined;
  private picker: { readonly peers: readonly Peer[]; readonly pick: Picker } | undefined;

  constructor(private readonly options: PickPathOptions) {
    this.ranking = options.subsetSize === undefined ? undefined : new RendezvousRanking(options.seed);
  }

  /** The peers in the subset's order (as given without a subset); the same array while `peers` is. */
  rank(peers: readonly Peer[]): readonly Peer[] {
    return this.ranking?.rank(peers) ?? peers;
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
