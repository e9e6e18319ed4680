import type { Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcWebTransport,
  type ConnectTransportOptions,
} from "@connectrpc/connect-web";
import type { Peer } from "../peer.js";
import { markDelivery } from "../transport/delivery.js";

/** Options of the per-peer fetch transports; baseUrl comes from each peer. */
export type FetchTransportOptions = {
  /** Wire protocol: "connect" (default) or "grpc-web". Both work over HTTP/1.1 and HTTP/2. */
  readonly protocol?: "connect" | "grpc-web";
} & Omit<ConnectTransportOptions, "baseUrl">;

/**
 * A transport factory for createBalancedTransport that calls each peer with
 * connect-web over fetch, adjusted to what server-side runtimes really do:
 * Cloudflare Workers reject connect-web's `redirect: "error"` option, and
 * runtimes that decompress response bodies themselves would leave connect-web
 * reading a body that no longer matches its Content-Encoding, so responses are
 * asked for uncompressed.
 */
export function fetchTransport(options: FetchTransportOptions = {}): (peer: Peer) => Transport {
  const { protocol = "connect", fetch: fetchOption, ...transportOptions } = options;
  const fetchFn = fetchOption ?? ((input: RequestInfo | URL, init?: RequestInit) => globalThis.fetch(input, init));
  const serverRuntimeFetch: typeof globalThis.fetch = (input, init) => {
    const headers = new Headers(init?.headers);
    if (!headers.has("accept-encoding")) {
      headers.set("accept-encoding", "identity");
    }
    const { redirect: _browserOnly, ...rest } = init ?? {};
    return fetchFn(input, { ...rest, headers }).catch((error: unknown) => {
      // fetch reports every network failure as a TypeError, without saying whether the request left;
      // only fetch's own TypeErrors are marked, so a bug elsewhere gets no healthy peer ejected.
      throw error instanceof TypeError ? markDelivery(error, "lost") : error;
    });
  };
  const create = protocol === "grpc-web" ? createGrpcWebTransport : createConnectTransport;
  return (peer) => create({ ...transportOptions, baseUrl: peer.url, fetch: serverRuntimeFetch });
}
