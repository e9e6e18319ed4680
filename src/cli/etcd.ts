import { Code, ConnectError } from "@connectrpc/connect";
import type { Discovery } from "../discovery/discovery.js";
import { etcdDiscovery } from "../discovery/etcd.js";
import type { EtcdFlags } from "./args.js";
import { UsageError } from "./errors.js";

/** The discovery the flags describe; a bad --etcd URL is a usage error, not a failure of etcd. */
export function openDiscovery(flags: EtcdFlags, { watch }: { watch: boolean }): Discovery {
  try {
    return etcdDiscovery({ endpoints: flags.endpoints, namespace: flags.namespace, format: flags.format, auth: flags.auth, watch });
  } catch (error) {
    if (error instanceof ConnectError && error.code === Code.InvalidArgument) {
      throw new UsageError(error.rawMessage);
    }
    throw error;
  }
}
