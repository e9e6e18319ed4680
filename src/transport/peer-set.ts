import type { Snapshot } from "../discovery/discovery.js";
import { compileAllow, type AllowList } from "../registry/address-policy.js";
import type { Endpoint, EndpointScheme } from "../registry/endpoint.js";
import type { SkippedEntry } from "../registry/instance.js";
import { createPeer, type Peer } from "../peer.js";

/** The peers of one snapshot that the transport may call (never empty), or why there are none: built once per snapshot change. */
export type PeerSet =
  | { readonly snapshot: Snapshot; readonly peers: readonly Peer[]; readonly unavailable?: undefined }
  | { readonly snapshot: Snapshot; readonly peers: readonly []; readonly unavailable: string };

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
 */
export function buildPeerSet(
  snapshot: Snapshot,
  schemes: readonly EndpointScheme[],
  filter: PeerFilter | undefined,
  where: string,
  allow?: AllowGate,
): PeerSet {
  const dialable: Peer[] = [];
  const refused: SkippedEntry[] = [];
  const urls = new Set<string>();
  for (const instance of snapshot.instances) {
    const accepted = instance.endpoints.filter((e) => schemes.includes(e.scheme));
    const endpoint = accepted.find((e) => allow === undefined || allow.list.permits(e.host));
    if (endpoint === undefined && accepted.length > 0) {
      refused.push({ key: instance.key, reason: allowRefusal(accepted) });
    }
    if (endpoint !== undefined && !urls.has(endpoint.url)) {
      urls.add(endpoint.url);
      dialable.push(createPeer(instance, endpoint));
    }
  }
  allow?.report(refused);
  const peers = filter === undefined ? dialable : dialable.filter(filter);
  if (peers.length > 0) {
    return { snapshot, peers };
  }
  return { snapshot, peers: [], unavailable: explainNoPeers(snapshot, schemes, dialable, refused, where) };
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
