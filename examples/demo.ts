// `npm run demo`: the library's main job on a throwaway local setup.
// Starts etcd on free loopback ports and three UserService servers that
// register themselves with registerInstance (the bytes go-kratos writes, under
// a lease kept alive), then calls the service through a generated typed client
// and prints which instance served each call.
import { createClient, createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, etcdDiscovery, peerKey } from "../src/index.js";
import { nodeHttp2Transport, registerInstance, type Registration } from "../src/node/index.js";
import { startEtcd } from "../support/etcd.js";
import { startUserServer, type UserServer } from "../support/user-server.js";

const etcd = await startEtcd();
const servers: UserServer[] = [];
const registrations: Registration[] = [];
const transport = createBalancedTransport({
  service: "discovery:///user-service",
  discovery: etcdDiscovery({ endpoints: [etcd.endpoint] }),
  balancer: "round_robin",
  transport: nodeHttp2Transport(),
});

try {
  for (let i = 1; i <= 3; i++) {
    const server = await startUserServer();
    servers.push(server);
    // etcd given as URLs: the registration makes its own etcd3 client and closes it at deregister()
    registrations.push(
      await registerInstance({ etcd: [etcd.endpoint], name: "user-service", id: `user-service-${i}`, version: "v1.0.0", endpoints: [`grpc://${server.address}`] }),
    );
  }
  console.log(`etcd ${etcd.endpoint} holds, as kratos writes them:`);
  for (const registration of registrations) {
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
  await Promise.all(registrations.map((registration) => registration.deregister()));
  await Promise.all(servers.map((server) => server.stop()));
  await etcd.stop();
}
