import { Code, ConnectError } from "@connectrpc/connect";
import type { Balancer } from "./balancer.js";
import { leastRequest } from "./least-request.js";
import { p2c } from "./p2c.js";
import { random } from "./random.js";
import { ringHash } from "./ring-hash.js";
import { roundRobin } from "./round-robin.js";
import { weightedRoundRobin } from "./weighted-round-robin.js";

/** The built-in policies, by the names used in the options. */
const builtIn = {
  round_robin: roundRobin,
  random,
  weighted_round_robin: weightedRoundRobin,
  least_request: leastRequest,
  p2c: () => p2c(),
  ring_hash: () => ringHash(),
} satisfies Record<string, () => Balancer>;

export type BalancerName = keyof typeof builtIn;

/** A fresh policy for one transport: built-in ones keep per-transport state. */
export function resolveBalancer(balancer: BalancerName | Balancer = "round_robin"): Balancer {
  if (typeof balancer === "object") {
    return balancer;
  }
  const create = Object.hasOwn(builtIn, balancer) ? builtIn[balancer] : undefined;
  if (create === undefined) {
    throw new ConnectError(
      `unknown balancer "${String(balancer)}": use one of ${Object.keys(builtIn).join(", ")} or a Balancer object`,
      Code.InvalidArgument,
    );
  }
  return create();
}
