import { createContextKey } from "@connectrpc/connect";
import type { Endpoint, EndpointScheme } from "./registry/endpoint.js";
import type { Instance } from "./registry/instance.js";

/**
 * One dialable instance of a service: the instance's first endpoint whose
 * scheme the transport accepts. Built once per snapshot and frozen, so
 * exposing it on every call costs nothing.
 */
export interface Peer {
  /** "host:port" as dialled; IPv6 as "[::1]:9000". */
  readonly address: string;
  /** Host without brackets: "10.0.0.7", "::1". */
  readonly host: string;
  /** The port dialled: the registered one, or 80/443 when an http(s) endpoint names none. */
  readonly port: number;
  /** Base URL for the per-peer transport: "http://10.0.0.7:9000" or "https://…" when secure. */
  readonly url: string;
  /** The registered scheme, after `?isSecure=true` turned grpc into grpcs. */
  readonly scheme: EndpointScheme;
  /** The registry key the instance was read from. */
  readonly key: string;
  /** The instance id; for etcd-naming the address, for entries without one the last key segment. */
  readonly id: string;
  /** The registered service name. */
  readonly name: string;
  /** The registered version, "" when none (a `filter` can select on it). */
  readonly version: string;
  /** The registered metadata: frozen, without a prototype, strings only. */
  readonly metadata: Readonly<Record<string, string>>;
  /** From `metadata.weight`; 100 when absent or not a positive integer. */
  readonly weight: number;
}

/**
 * The peer a call was sent to. The balanced transport sets it in the call's
 * context values before interceptors run, so it is readable inside them and,
 * on the caller's context values, after the call — also after a failure.
 */
export const peerKey = createContextKey<Peer | undefined>(undefined, {
  description: "connect-etcd-balancer peer",
});

const defaultWeight = 100;

export function createPeer(instance: Instance, endpoint: Endpoint): Peer {
  return Object.freeze({
    address: endpoint.address,
    host: endpoint.host,
    port: endpoint.port,
    url: endpoint.url,
    scheme: endpoint.scheme,
    key: instance.key,
    id: instance.id,
    name: instance.name,
    version: instance.version,
    metadata: instance.metadata,
    weight: parseWeight(instance.metadata["weight"]),
  });
}

function parseWeight(text: string | undefined): number {
  if (text === undefined || !/^\d+$/.test(text)) {
    return defaultWeight;
  }
  const weight = Number(text);
  return weight > 0 && Number.isSafeInteger(weight) ? weight : defaultWeight;
}
