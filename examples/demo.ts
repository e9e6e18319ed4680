// `npm run demo`: the library's main job on a throwaway local setup.
// Starts etcd on free loopback ports and three UserService servers registered
// exactly as go-kratos registers them, then calls the service through a
// generated typed client and prints which instance served each call.
import { createClient, createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, etcdDiscovery, peerKey } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startCluster } from "../support/cluster.js";

const cluster = await startCluster({ service: "user-service", instances: 3 });
const transport = createBalancedTransport({
  service: "discovery:///user-service",
  discovery: etcdDiscovery({ endpoints: [cluster.etcd.endpoint] }),
  balancer: "round_robin",
  transport: nodeHttp2Transport(),
});

try {
  console.log(`etcd ${cluster.etcd.endpoint} holds, as kratos writes them:`);
  for (const registration of cluster.registrations) {
    console.log(`  ${registration.key}`);
  }
  console.log();

  const users = createClient(UserService, transport);
  const perPeer = new Map<string, number>();
  for (let call = 1; call <= 12; call++) {
    const contextValues = createContextValues();
    const response = await users.getUser({ id: String(call) }, { contextValues });
    const peer = contextValues.get(peerKey)!;
    perPeer.set(peer.address, (perPeer.get(peer.address) ?? 0) + 1);
    console.log(`call ${String(call).padStart(2)}  GetUser(${call})  peer ${peer.address} (${peer.id})  answered by ${response.servedBy}`);
  }

  console.log("\ncalls per peer:");
  for (const [address, count] of [...perPeer].sort()) {
    console.log(`  ${address}  ${count}`);
  }
} finally {
  await transport.close();
  await cluster.stop();
}
