// GET /api/edge/users/:id on the Edge runtime: fetch only, so instances are
// called with the Connect protocol at their registered http(s):// endpoints.
import { toJson } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { createBalancedTransport, createPeerClient, etcdDiscovery } from "connect-etcd-balancer";
import { fetchTransport } from "connect-etcd-balancer/fetch";
import { after } from "next/server";
import { GetUserResponseSchema, UserService } from "@gen/demo/user/v1/user_pb";

export const runtime = "edge";

// Module scope: warm requests reuse the registry snapshot and the per-peer transports.
// (`next build` imports this module too; nothing is read from etcd before the first call.)
const transport = createBalancedTransport({
  service: "user-service",
  discovery: etcdDiscovery({ endpoints: (process.env.ETCD_ENDPOINTS ?? "http://127.0.0.1:2379").split(",") }),
  schemes: ["http", "https"],
  transport: fetchTransport(),
  waitUntil: after, // lets a background registry refresh finish after the response
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
