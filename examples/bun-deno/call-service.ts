// Calls UserService.GetUser through the balancer on Bun or Deno and prints one
// JSON line per call: the peer the call was sent to and the server that answered.
//
//   call-service <etcd-endpoint> <service> [calls]
//   (or ETCD_ENDPOINT, SERVICE, CALLS in the environment)
import { UserService } from "../../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery } from "../../src/index.js"; // "connect-etcd-balancer"
import { fetchTransport } from "../../src/fetch/index.js"; // "connect-etcd-balancer/fetch"

// Deno.args / Deno.env on Deno, process.argv / process.env on Bun.
const { Deno, process } = globalThis as unknown as {
  Deno?: { args: string[]; env: { get(name: string): string | undefined } };
  process?: { argv: string[]; env: Record<string, string | undefined> };
};
const args = Deno ? Deno.args : (process?.argv.slice(2) ?? []);
// The environment is read only for a missing argument (Deno then needs --allow-env).
const setting = (index: number, name: string) => args[index] ?? (Deno ? Deno.env.get(name) : process?.env[name]);

const endpoint = setting(0, "ETCD_ENDPOINT") ?? "http://127.0.0.1:2379";
const service = setting(1, "SERVICE") ?? "user-service";
const calls = Number(setting(2, "CALLS") ?? "6");

const transport = createBalancedTransport({
  service,
  discovery: etcdDiscovery({ endpoints: [endpoint] }),
  schemes: ["http"], // fetch speaks Connect over HTTP/1.1 or HTTP/2, not gRPC over HTTP/2
  transport: fetchTransport(),
});
const users = createPeerClient(UserService, transport);
try {
  for (let i = 0; i < calls; i++) {
    const res = await users.getUser({ id: String(i) }, { timeoutMs: 5_000 });
    console.log(JSON.stringify({ call: i, peer: res.peer.address, servedBy: res.message.servedBy }));
  }
} finally {
  await transport.close();
}
