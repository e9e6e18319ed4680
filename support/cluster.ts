// An etcd plus example servers registered as kratos registers them: the
// environment of the demo and of the integration tests.
import { startEtcd, type EtcdServer } from "./etcd.js";
import { registerKratos, type Registration } from "./registry.js";
import { startUserServer, type UserServer } from "./user-server.js";

export interface Cluster {
  readonly etcd: EtcdServer;
  readonly servers: UserServer[];
  readonly registrations: Registration[];
  /** Starts one more server and registers it under `service`. */
  addServer(service: string, options?: { id?: string; metadata?: Record<string, string> | null }): Promise<{ server: UserServer; registration: Registration }>;
  stop(): Promise<void>;
}

export async function startCluster({ service = "user-service", instances = 3 } = {}): Promise<Cluster> {
  const etcd = await startEtcd();
  const servers: UserServer[] = [];
  const registrations: Registration[] = [];
  let started = 0;
  const cluster: Cluster = {
    etcd,
    servers,
    registrations,
    async addServer(name, { id = `${name}-${++started}`, metadata = null } = {}) {
      const server = await startUserServer();
      servers.push(server);
      const registration = await registerKratos(etcd.endpoint, {
        id,
        name,
        version: "v1.0.0",
        metadata,
        endpoints: [`grpc://${server.address}`],
      });
      registrations.push(registration);
      return { server, registration };
    },
    async stop() {
      await Promise.allSettled(registrations.map((r) => r.deregister()));
      await Promise.allSettled(servers.map((s) => s.stop()));
      await etcd.stop();
    },
  };
  try {
    for (let i = 0; i < instances; i++) {
      await cluster.addServer(service);
    }
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}
