/// <reference types="node" />
// Node-only additions; everything here may import node: modules.
export { nodeHttp2Transport } from "./http2-transport.js";
export type { NodeHttp2TransportOptions } from "./http2-transport.js";
export { fileSnapshotStore } from "./file-snapshot-store.js";
