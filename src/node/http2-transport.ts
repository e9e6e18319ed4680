/// <reference types="node" />
import type { Transport } from "@connectrpc/connect";
import type { ConnectTransportOptions, Http2SessionOptions } from "@connectrpc/connect-node";
import type { ConnectionOptions } from "./grpc/connection.js";
import { createGrpcClientTransport, defaultReadMaxBytes } from "./grpc/grpc-transport.js";
import type { Peer } from "../peer.js";

/** Options of the per-peer HTTP/2 transports; baseUrl comes from each peer. */
export type NodeHttp2TransportOptions = {
  /** Wire protocol: "grpc" (default, the library's own client), "connect" or "grpc-web" (connect-node). */
  readonly protocol?: "grpc" | "connect" | "grpc-web";
  /** Options for node:http2's connect(), e.g. a CA, a client certificate or a servername for grpcs/https peers. */
  readonly nodeOptions?: ConnectionOptions["nodeOptions"];
  /** protocol "grpc": give up on a connection whose server sent no HTTP/2 SETTINGS within this time (default 10,000). */
  readonly connectTimeoutMs?: number;
} & Omit<ConnectTransportOptions, "baseUrl" | "httpVersion" | "sessionManager" | "nodeOptions"> &
  Http2SessionOptions;

/**
 * A transport factory for createBalancedTransport that gives each peer one
 * HTTP/2 connection, closed when the peer leaves the registry or the
 * balancer is closed.
 *
 * With protocol "grpc" (the default) each peer gets the library's own gRPC
 * client on node:http2: faster than connect-node's and @grpc/grpc-js, and
 * its failures say what became of the request (see deliveryOf()), so the
 * balancer resends exactly the calls that are safe to resend. "connect" and
 * "grpc-web" use connect-node, loaded on the first call so that importing
 * this module stays cheap for Lambda cold starts.
 */
export function nodeHttp2Transport(options: NodeHttp2TransportOptions = {}): (peer: Peer) => Transport & { close(): void } {
  const { protocol = "grpc", ...rest } = options;
  if (protocol === "grpc") {
    return (peer) => createGrpcClientTransport(peer, rest);
  }
  return (peer) => connectNodeTransport(protocol, peer, rest);
}

/** connect-node's Connect or gRPC-web transport for one peer, on its own session, loaded on first use. */
function connectNodeTransport(protocol: "connect" | "grpc-web", peer: Peer, options: Omit<NodeHttp2TransportOptions, "protocol">): Transport & { close(): void } {
  let closed = false;
  let abortSession: (() => void) | undefined;
  const loaded = import("@connectrpc/connect-node").then((connectNode) => {
    const sessionManager = new connectNode.Http2SessionManager(peer.url, options, options.nodeOptions);
    abortSession = () => sessionManager.abort();
    if (closed) {
      abortSession();
    }
    const perPeer = { ...options, readMaxBytes: options.readMaxBytes ?? defaultReadMaxBytes, baseUrl: peer.url, httpVersion: "2" as const, sessionManager };
    return protocol === "connect" ? connectNode.createConnectTransport(perPeer) : connectNode.createGrpcWebTransport(perPeer);
  });
  loaded.catch(() => {}); // reported by the calls that await it
  return {
    async unary(...args) {
      return (await loaded).unary(...args);
    },
    async stream(...args) {
      return (await loaded).stream(...args);
    },
    close() {
      closed = true;
      abortSession?.();
    },
  };
}
