import type { Snapshot } from "../discovery/discovery.js";
import type { Balancer, Picker } from "../balancer/balancer.js";
import type { EndpointScheme } from "../registry/endpoint.js";
import { createPeer, type Peer } from "../peer.js";

/** The peers of one snapshot and the picker over them: built once per snapshot change. */
export type PeerSet =
  | { readonly snapshot: Snapshot; readonly peers: readonly Peer[]; readonly pick: Picker }
  | { readonly snapshot: Snapshot; readonly peers: readonly []; readonly unavailable: string };

/** Which peers a transport may call, e.g. one version or one zone; applied once per snapshot. */
export type PeerFilter = (peer: Peer) => boolean;

/**
 * Turns each instance into a peer through its first endpoint with an accepted
 * scheme (so one registry serves gRPC and Connect clients alike), keeps those
 * the filter accepts, then lets the balancer build its picker. `where` names
 * the registry for error messages.
 */
export function buildPeerSet(
  snapshot: Snapshot,
  schemes: readonly EndpointScheme[],
  filter: PeerFilter | undefined,
  balancer: Balancer,
  where: string,
): PeerSet {
  const dialable: Peer[] = [];
  const urls = new Set<string>();
  for (const instance of snapshot.instances) {
    const endpoint = instance.endpoints.find((e) => schemes.includes(e.scheme));
    if (endpoint !== undefined && !urls.has(endpoint.url)) {
      urls.add(endpoint.url);
      dialable.push(createPeer(instance, endpoint));
    }
  }
  const peers = filter === undefined ? dialable : dialable.filter(filter);
  if (peers.length > 0) {
    return { snapshot, peers, pick: balancer.build(peers) };
  }
  return { snapshot, peers: [], unavailable: explainNoPeers(snapshot, schemes, dialable, where) };
}

function explainNoPeers(snapshot: Snapshot, schemes: readonly EndpointScheme[], dialable: readonly Peer[], where: string): string {
  const service = `service "${snapshot.service}"`;
  if (dialable.length > 0) {
    const versions = [...new Set(dialable.map((p) => p.version || "(none)"))];
    return `${dialable.length} instances of ${service} in ${where}, but the filter option accepts none of them (versions: ${versions.join(", ")})`;
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
