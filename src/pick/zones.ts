import type { Peer } from "../peer.js";
import type { Health } from "./health.js";

/** Where the caller runs, and where instances say they run. */
export interface ZoneOptions {
  /** The caller's zone, e.g. the AZ ID "use1-az1". */
  readonly zone: string;
  /** The instance metadata key holding an instance's zone. */
  readonly zoneKey: string;
}

/**
 * Envoy's overprovisioning factor: a zone whose healthy share times 1.4 is
 * still at least 1 (≥ 5 of 7, 71.4 %, healthy) keeps all its calls; below, the rest
 * spill over. Capacity is provisioned with headroom, so a few peers out do
 * not justify paying for cross-zone traffic.
 */
export const overprovisioningFactor = 1.4;

/** min(1, 1.4 × healthy ÷ total), as 7 × healthy ÷ (5 × total): exactly 1 at 5 of 7 healthy, where 1.4 × 5 ÷ 7 rounds below it. */
function overprovisioned(healthy: number, total: number): number {
  return Math.min(1, (7 * healthy) / (5 * total));
}

/** Whether the peer is in the caller's zone; a peer without the key is in no zone, never local. */
export function isLocal(peer: Peer, { zone, zoneKey }: ZoneOptions): boolean {
  return peer.metadata[zoneKey] === zone;
}

/** The caller's zone's peers (priority 0) and every other peer (priority 1); a peer without the key is in no zone, never local. */
export function splitByZone(peers: readonly Peer[], zones: ZoneOptions): { local: Peer[]; others: Peer[] } {
  const local: Peer[] = [];
  const others: Peer[] = [];
  for (const peer of peers) {
    (isLocal(peer, zones) ? local : others).push(peer);
  }
  return { local, others };
}

/**
 * The share of calls that stays in the caller's zone, from 0 to 1: all of
 * them while the zone's healthy share × 1.4 ≥ 1, that product below it, and
 * none with no healthy local peer — unless the other zones have no healthy
 * peer either (then the zone that can at least be reached keeps the calls).
 */
export function localShare(local: Health & { readonly total: number }, others: Health & { readonly total: number }): number {
  if (local.total === 0) {
    return 0;
  }
  if (others.total === 0) {
    return 1;
  }
  if (others.healthy === 0) {
    return local.healthy > 0 || !local.noneReachable || others.noneReachable ? 1 : 0;
  }
  return overprovisioned(local.healthy, local.total);
}

/**
 * Whether the zones together have the healthy capacity for every call:
 * Σ min(1, 1.4 × healthy ÷ total) ≥ 1, Envoy's normalized total
 * availability. While they do, no zone spreads its calls over ejected peers
 * (the panic threshold is ignored), as the others take what it cannot.
 */
export function fullyAvailable(zones: readonly { readonly healthy: number; readonly total: number }[]): boolean {
  let availability = 0;
  for (const { healthy, total } of zones) {
    availability += total === 0 ? 0 : overprovisioned(healthy, total);
  }
  return availability >= 1;
}
