import { createContextValues } from "@connectrpc/connect";
import { create, createFileRegistry, type DescMethod } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { PickRequest, Picker } from "../../balancer/balancer.js";
import { resolveBalancer } from "../../balancer/index.js";
import { hashKey } from "../../balancer/ring-hash.js";
import { PickPath } from "../../pick/pick-path.js";
import { buildPeerSet } from "../../transport/peer-set.js";
import { Reachability } from "../../transport/reachability.js";
import type { CommandContext } from "../command.js";
import { noInstances, reportSkipped } from "../snapshot.js";
import { formatTable } from "../table.js";

/** Prints the peers the balancer would choose for the next calls, in order. */
export async function pick({ discovery, service, flags, signal }: CommandContext): Promise<void> {
  const snapshot = await discovery.load(service, signal);
  reportSkipped(snapshot.skipped);
  if (snapshot.instances.length === 0) {
    throw noInstances(snapshot, discovery);
  }
  // The same peers and picker a transport with these schemes, balancer, subset and zone builds.
  const peerSet = buildPeerSet(snapshot, flags.schemes, undefined, discovery.describe(service));
  if (peerSet.unavailable !== undefined) {
    throw new Error(peerSet.unavailable);
  }
  const zones = flags.zone === undefined ? undefined : { zone: flags.zone, zoneKey: flags.zoneKey };
  const path = new PickPath({ balancer: resolveBalancer(flags.balancer), subsetSize: flags.subset, zones }, undefined, new Reachability());
  if (flags.balancer === "ring_hash" && flags.key === undefined) {
    console.error("connect-etcd-balancer: no --key: ring_hash sends calls without a hash key to a random peer");
  }
  const rows = picks(path.over(peerSet.peers, performance.now()).pick, flags.count, flags.key).map(({ peer }, index) => [
    String(index + 1),
    peer.id,
    peer.address,
    peer.scheme,
    peer.version,
    String(peer.weight),
  ]);
  console.log(formatTable(["#", "ID", "ADDRESS", "SCHEME", "VERSION", "WEIGHT"], rows));
}

/** `count` picks for unary calls that are all still in flight (their done() is never called). */
function picks(picker: Picker, count: number, key: string | undefined) {
  const contextValues = createContextValues();
  if (key !== undefined) {
    contextValues.set(hashKey, key);
  }
  const request: PickRequest = { method: unaryMethod(), header: new Headers(), contextValues, attempt: 0 };
  return Array.from({ length: count }, () => picker(request));
}

/** p2c looks at the method's kind: a real descriptor of a unary method stands in for the calls. */
function unaryMethod(): DescMethod {
  const file = create(FileDescriptorProtoSchema, {
    name: "connect_etcd_balancer/cli.proto",
    package: "connect_etcd_balancer.cli",
    syntax: "proto3",
    messageType: [{ name: "Empty" }],
    service: [{ name: "Cli", method: [{ name: "Pick", inputType: ".connect_etcd_balancer.cli.Empty", outputType: ".connect_etcd_balancer.cli.Empty" }] }],
  });
  return createFileRegistry(file, () => undefined).getService("connect_etcd_balancer.cli.Cli")!.method["pick"]!;
}
