/**
 * Per-peer transports over fetch, for runtimes without node:http2:
 * Cloudflare Workers, Next.js Edge, Deno, Bun, browsers. Needs @connectrpc/connect-web.
 *
 * @module connect-etcd-balancer/fetch
 */
export { fetchTransport } from "./fetch-transport.js";
export type { FetchTransportOptions } from "./fetch-transport.js";
