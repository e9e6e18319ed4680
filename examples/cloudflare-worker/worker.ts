// A Cloudflare Worker that calls UserService through the balancer:
// GET /users/:id → { message, peer }. The etcd v3 JSON gateway and the
// service instances are reached with fetch; instances register http(s)://
// endpoints (Connect protocol), since Workers cannot open HTTP/2 gRPC streams.
import { env, waitUntil } from "cloudflare:workers";
import { toJson } from "@bufbuild/protobuf";
import { GetUserResponseSchema, UserService } from "../../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery } from "../../src/index.js"; // "connect-etcd-balancer"
import { fetchTransport } from "../../src/fetch/index.js"; // "connect-etcd-balancer/fetch"

interface Env {
  /** Comma-separated etcd client URLs; a deployed Worker needs them on an HTTPS hostname on a standard port. */
  readonly ETCD_ENDPOINTS: string;
}

// Module scope: every request of this isolate shares the snapshot and the transports.
const transport = createBalancedTransport({
  service: "user-service",
  discovery: etcdDiscovery({ endpoints: (env as unknown as Env).ETCD_ENDPOINTS.split(",") }),
  schemes: ["https", "http"],
  transport: fetchTransport(),
  // A stale snapshot is refreshed in the background; waitUntil keeps that
  // refresh alive after the response has been sent.
  waitUntil,
});
const users = createPeerClient(UserService, transport);

export default {
  async fetch(request: Request): Promise<Response> {
    const match = /^\/users\/([^/]+)$/.exec(new URL(request.url).pathname);
    if (!match) {
      return Response.json({ error: "try GET /users/:id" }, { status: 404 });
    }
    try {
      const res = await users.getUser({ id: decodeURIComponent(match[1]!) }, { timeoutMs: 5_000 });
      return Response.json({ message: toJson(GetUserResponseSchema, res.message), peer: res.peer });
    } catch (error) {
      return Response.json({ error: String(error) }, { status: 502 });
    }
  },
};
