import type { Snapshot } from "../../discovery/discovery.js";
import type { CommandContext } from "../command.js";
import { noInstances, reportSkipped } from "../snapshot.js";
import { formatTable, instanceHeader, instanceJson, instanceRows } from "../table.js";

/** Prints the instances of the service and the etcd revision read. */
export async function ls({ discovery, service, flags, signal }: CommandContext): Promise<void> {
  const snapshot = await discovery.load(service, signal);
  // --json carries the skipped entries itself, unless there is nothing to print.
  if (!flags.json || snapshot.instances.length === 0) {
    reportSkipped(snapshot.skipped);
  }
  if (snapshot.instances.length === 0) {
    throw noInstances(snapshot, discovery);
  }
  console.log(flags.json ? JSON.stringify(asJson(snapshot), null, 2) : asText(snapshot));
}

function asJson({ service, revision, instances, skipped }: Snapshot) {
  return { service, revision, instances: instances.map(instanceJson), skipped };
}

function asText({ service, revision, instances }: Snapshot): string {
  const summary = `${instances.length} ${instances.length === 1 ? "instance" : "instances"} of "${service}" at etcd revision ${revision}`;
  return `${summary}\n\n${formatTable(instanceHeader, instances.flatMap(instanceRows))}`;
}
