/// <reference types="node" />
/**
 * Node-only additions; everything here may import node: modules.
 *
 * @module connect-etcd-balancer/node
 */
export { nodeHttp2Transport } from "./http2-transport.js";
export type { NodeHttp2TransportOptions } from "./http2-transport.js";
export { fileSnapshotStore } from "./file-snapshot-store.js";
// The etcd3 package is an optional peer dependency: these modules import only
// its types, and registerInstance loads it when given URLs.
export { registerInstance } from "./register-instance.js";
export type { RegisterInstanceOptions, Registration, RegistrationEvent } from "./register-instance.js";
export { etcd3Discovery } from "./etcd3-discovery.js";
export type { Etcd3DiscoveryOptions } from "./etcd3-discovery.js";
