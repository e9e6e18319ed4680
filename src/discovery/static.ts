import { Code, ConnectError } from "@connectrpc/connect";
import { toInstance } from "../registry/format.js";
import type { Instance, InstanceInit } from "../registry/instance.js";
import type { Discovery } from "./discovery.js";

let staticLists = 0;

/**
 * A fixed list of instances, for local development, tests, or a fleet that
 * is not registered anywhere. Entries are endpoint URLs ("grpc://127.0.0.1:9000")
 * or whole instances; the same list serves every service name.
 */
export function staticDiscovery(entries: readonly (string | InstanceInit)[]): Discovery {
  const instances: Instance[] = entries.map((entry, index) => {
    const init = typeof entry === "string" ? { endpoints: [entry] } : entry;
    const instance = toInstance(`static/${index}`, init, "");
    if (typeof instance === "string") {
      throw new ConnectError(`staticDiscovery entry ${index}: ${instance}`, Code.InvalidArgument);
    }
    return instance;
  });
  const id = ++staticLists;
  return {
    key: `static#${id}`,
    ttlMs: Number.POSITIVE_INFINITY,
    describe: () => `the static list of ${instances.length} instances`,
    load: (service) =>
      Promise.resolve({
        service,
        revision: 0,
        instances: instances.map((instance) => (instance.name === "" ? { ...instance, name: service } : instance)),
        skipped: [],
      }),
  };
}
