/**
 * The universal entry: no node: module anywhere below it, so it runs on Node,
 * Lambda, Next.js (Node and Edge), Cloudflare Workers, Deno and Bun.
 *
 * @module connect-etcd-balancer
 */
export { createBalancedTransport } from "./transport/balanced-transport.js";
export type {
  BalancedTransport,
  BalancedTransportOptions,
  PeerUnaryResponse,
  PeerStreamResponse,
} from "./transport/balanced-transport.js";
export type { PeerTransportFactory } from "./transport/peer-transports.js";
export { deliveryOf, markDelivery } from "./transport/delivery.js";
export type { Delivery } from "./transport/delivery.js";
export type { PeerFilter } from "./transport/peer-set.js";
export type { OutlierDetectionOptions } from "./transport/outlier-detection.js";
export type { SlowStartOptions } from "./pick/slow-start.js";
export type { PeerStats } from "./transport/transport-stats.js";
export { createPeerClient } from "./peer-client.js";
export type { PeerClient, PeerResult, PeerStream } from "./peer-client.js";
export { peerKey } from "./peer.js";
export type { Peer } from "./peer.js";
export { etcdDiscovery } from "./discovery/etcd.js";
export type { EtcdDiscoveryOptions } from "./discovery/etcd.js";
export type { EtcdAuth } from "./discovery/etcd-gateway.js";
export { staticDiscovery } from "./discovery/static.js";
export type { Discovery, Snapshot, SnapshotPersistence } from "./discovery/discovery.js";
export type { SnapshotStore } from "./discovery/snapshot-store.js";
export type { Instance, InstanceInit, SkippedEntry } from "./registry/instance.js";
export type { Endpoint, EndpointScheme } from "./registry/endpoint.js";
export type { RegistryFormat, RegistryDecoder } from "./registry/format.js";
export { roundRobin } from "./balancer/round-robin.js";
export { random } from "./balancer/random.js";
export { weightedRoundRobin } from "./balancer/weighted-round-robin.js";
export { leastRequest } from "./balancer/least-request.js";
export { p2c } from "./balancer/p2c.js";
export type { P2cOptions } from "./balancer/p2c.js";
export { ringHash, hashKey } from "./balancer/ring-hash.js";
export type { RingHashOptions } from "./balancer/ring-hash.js";
export type { BalancerName } from "./balancer/index.js";
export type { Balancer, Picker, Pick, PickRequest, DoneFunc, CallResult } from "./balancer/balancer.js";
export type { BalancerEvent, EventListener } from "./events.js";
