/// <reference types="node" />
import type * as http2 from "node:http2";
import type { Transport } from "@connectrpc/connect";
import {
  Http2SessionManager,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  type ConnectTransportOptions,
  type Http2SessionOptions,
} from "@connectrpc/connect-node";
import type { Peer } from "../peer.js";

/** Options of the per-peer HTTP/2 transports; baseUrl comes from each peer. */
export type NodeHttp2TransportOptions = {
  /** Wire protocol: "grpc" (default), "connect" or "grpc-web". */
  readonly protocol?: "grpc" | "connect" | "grpc-web";
  /** Options for node:http2's connect(), e.g. a CA or client certificate for grpcs/https peers. */
  readonly nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
} & Omit<ConnectTransportOptions, "baseUrl" | "httpVersion" | "sessionManager" | "nodeOptions"> &
  Http2SessionOptions;

/**
 * A transport factory for createBalancedTransport that gives each peer one
 * HTTP/2 connection through connect-node, and aborts that connection when the
 * peer leaves the registry or the balancer is closed — so nothing is left
 * open once `transport.close()` resolves.
 */
export function nodeHttp2Transport(options: NodeHttp2TransportOptions = {}): (peer: Peer) => Transport & { close(): void } {
  const { protocol = "grpc", nodeOptions, ...transportOptions } = options;
  return (peer) => {
    const sessionManager = new Http2SessionManager(peer.url, options, nodeOptions);
    const perPeer = { ...transportOptions, baseUrl: peer.url, httpVersion: "2" as const, sessionManager };
    const transport =
      protocol === "connect"
        ? createConnectTransport(perPeer)
        : protocol === "grpc-web"
          ? createGrpcWebTransport(perPeer)
          : createGrpcTransport(perPeer);
    return { ...transport, close: () => sessionManager.abort() };
  };
}
