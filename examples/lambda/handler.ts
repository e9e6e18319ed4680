// An AWS Lambda handler for an API Gateway HTTP API (payload v2) event:
// GET /users/{id} → the user, and the instance (ip:port) that served it.
// The balanced transport lives at module scope, so warm invocations reuse its
// snapshot (no etcd request within ttlMs) and its HTTP/2 connections.
import { Code, ConnectError } from "@connectrpc/connect";
import { UserService } from "../../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery } from "../../src/index.js"; // "connect-etcd-balancer"
import { nodeHttp2Transport } from "../../src/node/index.js"; // "connect-etcd-balancer/node"

const transport = createBalancedTransport({
  service: "user-service",
  discovery: etcdDiscovery({ endpoints: (process.env["ETCD_ENDPOINTS"] ?? "http://127.0.0.1:2379").split(",") }),
  transport: nodeHttp2Transport(), // one HTTP/2 connection per peer, unref'd between invocations
});
const users = createPeerClient(UserService, transport);

interface HttpApiEvent {
  readonly pathParameters?: Record<string, string | undefined>;
}

export async function handler(event: HttpApiEvent) {
  try {
    const res = await users.getUser({ id: event.pathParameters?.["id"] ?? "" }, { timeoutMs: 3_000 });
    return json(200, { user: res.message.user, servedBy: res.message.servedBy, peer: { address: res.peer.address, id: res.peer.id } });
  } catch (error) {
    const failure = ConnectError.from(error);
    return json(failure.code === Code.Unavailable ? 503 : 502, { error: failure.message });
  }
}

function json(statusCode: number, body: unknown) {
  return { statusCode, headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
}
