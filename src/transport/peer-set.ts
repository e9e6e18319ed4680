import type { Snapshot } from "../discovery/discovery.js";
import { compileAllow, type AllowList } from "../registry/address-policy.js";
import type { Endpoint, EndpointScheme } from "../registry/endpoint.js";
import type { Instance, SkippedEntry } from "../registry/instance.js";
import { createPeer, type Peer } from "../peer.js";
import { compareKeys, inKeyOrder } from "../discovery/decode.js";

/** The peers of one snapshot that the transport may call (never empty), or why there are none: built once per snapshot change. */
export type PeerSet = (
  | { readonly snapshot: Snapshot; readonly peers: readonly Peer[]; readonly unavailable?: undefined }
  | { readonly snapshot: Snapshot; readonly peers: readonly []; readonly unavailable: string }
) & {
  /** How `peers` differ from the last build's for the same schemes; undefined when that could not be told cheaply (then anything may have changed). */
  readonly change?: PeerChange;
};

/**
 * How one build's peers differ from the one before, by identity: a peer
 * whose instance changed departs and its successor is added (their URLs may
 * be the same). Given only between snapshots in key order, so `from` and the
 * new peers are both in key order, each key once.
 */
export interface PeerChange {
  /** The peers of the build before. */
  readonly from: readonly Peer[];
  /** Peers of `from` that are not among the new peers. */
  readonly departed: readonly Peer[];
  /** New peers that were not in `from`. */
  readonly added: readonly Peer[];
}

/** Which peers a transport may call, e.g. one version or one zone; applied once per snapshot. */
export type PeerFilter = (peer: Peer) => boolean;

/**
 * The allow option of one transport: which hosts it may dial. Refusals are
 * reported once per key and reason while the key stays refused, not on every
 * snapshot; keys that left are forgotten, so the memory is bounded.
 */
export interface AllowGate {
  readonly list: AllowList;
  report(refused: readonly SkippedEntry[]): void;
}

export function createAllowGate(entries: readonly string[] | undefined, onRefused: (entry: SkippedEntry) => void): AllowGate | undefined {
  if (entries === undefined) {
    return undefined;
  }
  const list = compileAllow(entries);
  let reported = new Set<string>();
  return {
    list,
    report(refused) {
      const now = new Set<string>();
      for (const entry of refused) {
        const id = JSON.stringify([entry.key, entry.reason]);
        if (!reported.has(id) && !now.has(id)) {
          onRefused(entry);
        }
        now.add(id);
      }
      reported = now;
    },
  };
}

/**
 * Turns each instance into a peer through its first endpoint with an accepted
 * scheme (so one registry serves gRPC and Connect clients alike) that the
 * allow option permits, and keeps those the filter accepts. `where` names
 * the registry for error messages.
 *
 * A rebuild costs in proportion to the change: the last build for the same
 * `schemes` (the transport's own array) and allow gate is kept, and when the
 * new snapshot was made from a registry in key order, as etcdDiscovery's
 * are, only the instances that are not the same objects as before are
 * looked at; every other keeps its peer (the same object). The filter still
 * sees every peer: it is applied once per snapshot.
 */
export function buildPeerSet(
  snapshot: Snapshot,
  schemes: readonly EndpointScheme[],
  filter: PeerFilter | undefined,
  where: string,
  allow?: AllowGate,
): PeerSet {
  const last = lastBuilds.get(schemes);
  lastBuilds.delete(schemes); // its URL counts are changed in place below
  const ordered = last !== undefined && inKeyOrder(last.snapshot) && inKeyOrder(snapshot);
  const build = ordered && last.allow === allow ? changedChoices(last, snapshot, schemes, allow) : allChoices(snapshot, schemes, allow);
  const { delta } = build;
  let dialable: readonly Peer[];
  let refused: readonly SkippedEntry[] | undefined;
  if (delta !== undefined && allow === undefined && last!.duplicates === 0 && build.duplicates === 0 && (delta.left.length + delta.came.length) * 8 <= last!.dialable.length) {
    // the peers before with those that left taken out and those that came put in: no pass over the choices
    dialable = spliceByKey(last!.dialable, delta.left, delta.came);
  } else {
    const peers: Peer[] = [];
    const refusals: SkippedEntry[] = [];
    const urls = build.duplicates > 0 ? new Set<string>() : undefined;
    for (const choice of build.choices) {
      if (isPeer(choice)) {
        if (urls?.has(choice.url) !== true) {
          urls?.add(choice.url);
          peers.push(choice);
        }
      } else if (choice !== undefined) {
        refusals.push(choice);
      }
    }
    allow?.report(refusals);
    dialable = peers;
    refused = refusals;
  }
  build.dialable = dialable;
  const peers = filter === undefined ? dialable : dialable.filter(filter);
  build.peers = peers;
  build.delta = undefined;
  lastBuilds.set(schemes, build);
  // spliced without a filter, the change is what went and came; else one walk over the peers before and now tells it
  const change = !ordered ? undefined : refused === undefined && filter === undefined ? { from: last!.peers, departed: delta!.left, added: delta!.came } : changeBetween(last!.peers, peers);
  if (peers.length > 0) {
    return { snapshot, peers, change };
  }
  const refusals = refused ?? build.choices.filter((choice): choice is SkippedEntry => choice !== undefined && !isPeer(choice));
  return { snapshot, peers: [], unavailable: explainNoPeers(snapshot, schemes, dialable, refusals, where), change };
}

/** `peers` (in key order, each key once) without `left` and with `came`, each found or placed by binary search on the key: a fresh array. */
function spliceByKey(peers: readonly Peer[], left: readonly Peer[], came: readonly Peer[]): Peer[] {
  const result = peers.slice();
  const placeOf = (key: string) => {
    let low = 0;
    let high = result.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compareKeys(result[middle]!.key, key) < 0) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    return low;
  };
  for (const peer of left) {
    const at = placeOf(peer.key);
    if (result[at] === peer) {
      result.splice(at, 1);
    }
  }
  for (const peer of came) {
    result.splice(placeOf(peer.key), 0, peer);
  }
  return result;
}

/**
 * The peers that left and came between two lists in key order, each key
 * once: one walk comparing objects, keys only where they differ.
 */
export function changeBetween(from: readonly Peer[], to: readonly Peer[]): PeerChange {
  const departed: Peer[] = [];
  const added: Peer[] = [];
  let i = 0;
  let j = 0;
  while (i < from.length || j < to.length) {
    const before = from[i];
    const after = to[j];
    if (before === after) {
      i++;
      j++;
      continue;
    }
    const order = before === undefined ? 1 : after === undefined ? -1 : compareKeys(before.key, after.key);
    if (order <= 0) {
      departed.push(before!);
      i++;
    }
    if (order >= 0) {
      added.push(after!);
      j++;
    }
  }
  return { from, departed, added };
}

/** What one instance gives a transport: a peer, a refusal by the allow option, or neither (no endpoint of its schemes). */
type Choice = Peer | SkippedEntry | undefined;

const isPeer = (choice: Choice): choice is Peer => choice !== undefined && "url" in choice;

/** The choices of one snapshot, instance by instance, and how many instances share a URL with one before them. */
interface Build {
  readonly snapshot: Snapshot;
  readonly allow: AllowGate | undefined;
  readonly choices: readonly Choice[];
  /** Instances per peer URL; handed on to the next build, which changes it in place. */
  readonly urls: Map<string, number>;
  /** URLs with more than one instance: only the first of them is a peer. */
  readonly duplicates: number;
  /** The peers made of the choices, deduplicated, before the filter; set once they are. */
  dialable: readonly Peer[];
  /** The same, filtered: the peers of the build's PeerSet. */
  peers: readonly Peer[];
  /** Made from the build before: the peers among the choices that went and came; only until the peers are made. */
  delta?: { readonly left: Peer[]; readonly came: Peer[] } | undefined;
}

/** The last build per schemes array, i.e. per transport; held weakly with it. */
const lastBuilds = new WeakMap<readonly EndpointScheme[], Build>();

function allChoices(snapshot: Snapshot, schemes: readonly EndpointScheme[], allow: AllowGate | undefined): Build {
  const urls = new Map<string, number>();
  let duplicates = 0;
  const choices = snapshot.instances.map((instance) => {
    const choice = choose(instance, schemes, allow);
    if (isPeer(choice)) {
      const count = (urls.get(choice.url) ?? 0) + 1;
      urls.set(choice.url, count);
      duplicates += count === 2 ? 1 : 0;
    }
    return choice;
  });
  return { snapshot, allow, choices, urls, duplicates, dialable: [], peers: [] };
}

/**
 * The choices of `snapshot` from those of the last build: both list their
 * instances in key order, each key once, so one walk finds the instances
 * that left (keys passed over), came (keys not there before) and changed
 * (another object under the same key); only those are chosen anew.
 */
function changedChoices(last: Build, snapshot: Snapshot, schemes: readonly EndpointScheme[], allow: AllowGate | undefined): Build {
  const before = last.snapshot.instances;
  const after = snapshot.instances;
  const { urls } = last;
  let duplicates = last.duplicates;
  const left: Peer[] = [];
  const came: Peer[] = [];
  const count = (choice: Choice, by: number) => {
    if (!isPeer(choice)) {
      return;
    }
    (by < 0 ? left : came).push(choice);
    const url = choice.url;
    const was = urls.get(url) ?? 0;
    const now = was + by;
    now === 0 ? urls.delete(url) : urls.set(url, now);
    duplicates += (now >= 2 ? 1 : 0) - (was >= 2 ? 1 : 0);
  };
  const choices: Choice[] = new Array<Choice>(after.length);
  let i = 0;
  for (let j = 0; j < after.length; j++) {
    const instance = after[j]!;
    if (before[i] === instance) {
      choices[j] = last.choices[i++];
      continue;
    }
    while (i < before.length && compareKeys(before[i]!.key, instance.key) < 0) {
      count(last.choices[i++], -1); // left
    }
    if (before[i] === instance) {
      choices[j] = last.choices[i++];
      continue;
    }
    if (i < before.length && before[i]!.key === instance.key) {
      count(last.choices[i++], -1); // changed: its old choice goes
    }
    const choice = choose(instance, schemes, allow);
    count(choice, 1);
    choices[j] = choice;
  }
  while (i < before.length) {
    count(last.choices[i++], -1);
  }
  return { snapshot, allow, choices, urls, duplicates, dialable: [], peers: [], delta: { left, came } };
}

function choose(instance: Instance, schemes: readonly EndpointScheme[], allow: AllowGate | undefined): Choice {
  let accepted = false;
  for (const endpoint of instance.endpoints) {
    if (schemes.includes(endpoint.scheme)) {
      accepted = true;
      if (allow === undefined || allow.list.permits(endpoint.host)) {
        return peerOf(instance, endpoint);
      }
    }
  }
  return accepted ? { key: instance.key, reason: allowRefusal(instance.endpoints.filter((e) => schemes.includes(e.scheme))) } : undefined;
}

/**
 * The peers made so far for each instance. A snapshot made from an earlier
 * one by a registry change keeps the Instance objects of the instances that
 * did not change, so their peers stay the same objects, also for a
 * transport that builds them afresh: what is keyed by a peer (connections,
 * outlier records, statistics, a picker's arrays) sees no change there.
 * Held weakly: an instance no snapshot holds takes its peers along.
 */
const madePeers = new WeakMap<Instance, Peer | readonly Peer[]>();

function peerOf(instance: Instance, endpoint: Endpoint): Peer {
  const made = madePeers.get(instance);
  const known = made === undefined ? [] : Array.isArray(made) ? (made as readonly Peer[]) : [made as Peer];
  const found = known.find((peer) => peer.url === endpoint.url && peer.scheme === endpoint.scheme);
  if (found !== undefined) {
    return found;
  }
  const peer = createPeer(instance, endpoint);
  // At most one per endpoint, and an instance lists at most 100.
  madePeers.set(instance, known.length === 0 ? peer : [...known, peer]);
  return peer;
}

function allowRefusal(endpoints: readonly Endpoint[]): string {
  const more = endpoints.length > 1 ? ` (and ${endpoints.length - 1} more endpoints)` : "";
  return `the allow option refuses ${endpoints[0]!.address}${more}`;
}

function explainNoPeers(
  snapshot: Snapshot,
  schemes: readonly EndpointScheme[],
  dialable: readonly Peer[],
  refused: readonly SkippedEntry[],
  where: string,
): string {
  const service = `service "${snapshot.service}"`;
  if (dialable.length > 0) {
    const versions = [...new Set(dialable.map((p) => p.version || "(none)"))];
    return `${dialable.length} instances of ${service} in ${where}, but the filter option accepts none of them (versions: ${versions.join(", ")})`;
  }
  const first = refused[0];
  if (first !== undefined) {
    return `${refused.length} instances of ${service} in ${where}, but the allow option refuses their addresses, e.g. ${first.key}: ${first.reason}`;
  }
  if (snapshot.instances.length > 0) {
    const found = [...new Set(snapshot.instances.flatMap((i) => i.endpoints.map((e) => e.scheme)))];
    return (
      `${snapshot.instances.length} instances of ${service} in ${where}, but none registers an endpoint ` +
      `with scheme ${schemes.join(" or ")} (they register ${found.join(", ")}; see the schemes option)`
    );
  }
  const skipped = snapshot.skipped[0];
  return skipped === undefined
    ? `no instances of ${service} in ${where}`
    : `no usable instances of ${service} in ${where}: ${snapshot.skipped.length} malformed entries skipped, e.g. ${skipped.key}: ${skipped.reason}`;
}
