// GET /api/node/users/:id on the Node.js runtime (the default): gRPC over one
// HTTP/2 connection per instance, at the registered grpc:// endpoints.
import { toJson } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { createBalancedTransport, createPeerClient, etcdDiscovery } from "connect-etcd-balancer";
import { nodeHttp2Transport } from "connect-etcd-balancer/node";
import { after } from "next/server";
import { GetUserResponseSchema, UserService } from "@gen/demo/user/v1/user_pb";

// Module scope: warm requests reuse the registry snapshot and the HTTP/2 connections.
// (`next build` imports this module too; nothing is read from etcd before the first call.)
const transport = createBalancedTransport({
  service: "user-service",
  discovery: etcdDiscovery({ endpoints: (process.env.ETCD_ENDPOINTS ?? "http://127.0.0.1:2379").split(",") }),
  transport: nodeHttp2Transport(),
  waitUntil: after,
});
const users = createPeerClient(UserService, transport);

export async function GET(_request: Request, { params }: { params: Promise<{ id: string }> }) {
  try {
    const res = await users.getUser({ id: (await params).id }, { timeoutMs: 5_000 });
    return Response.json({ message: toJson(GetUserResponseSchema, res.message), peer: res.peer });
  } catch (error) {
    return Response.json({ error: ConnectError.from(error).message }, { status: 502 });
  }
}
