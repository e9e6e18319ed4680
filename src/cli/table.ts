import type { Instance } from "../registry/instance.js";
import { createPeer } from "../peer.js";

/** Left-aligned columns two spaces apart; the last column is not padded. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? "").length)));
  return all
    .map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join("  ").trimEnd())
    .join("\n");
}

export const instanceHeader = ["ID", "ADDRESS", "SCHEME", "VERSION", "WEIGHT", "METADATA"] as const;

/**
 * One row per registered endpoint: the first names the instance, the
 * others only add an address, so an instance stays one block of lines.
 */
export function instanceRows(instance: Instance): string[][] {
  return instance.endpoints.map((endpoint, index) => {
    if (index > 0) {
      return ["", endpoint.address, endpoint.scheme, "", "", ""];
    }
    return [instance.id, endpoint.address, endpoint.scheme, instance.version, String(weightOf(instance)), formatMetadata(instance.metadata)];
  });
}

/** `zone=eu-1,weight=50`, keys sorted, so lines compare across runs. */
export function formatMetadata(metadata: Readonly<Record<string, string>>): string {
  return Object.keys(metadata)
    .sort()
    .map((key) => `${key}=${metadata[key]}`)
    .join(",");
}

/** An instance's weight as the balancers see it (metadata "weight", default 100). */
export function weightOf(instance: Instance): number {
  return createPeer(instance, instance.endpoints[0]!).weight;
}

/** An instance for --json output: as decoded, plus the weight the balancers use. */
export function instanceJson(instance: Instance): Instance & { readonly weight: number } {
  return { ...instance, weight: weightOf(instance) };
}

/** A watch line: `<time> revision 7 added a grpc://10.0.0.7:9000 http://10.0.0.7:8000 (version v1, weight 100, zone=eu-1)`. */
export function formatChange(time: Date, revision: number, change: string, instance: Instance): string {
  const endpoints = instance.endpoints.map((e) => `${e.scheme}://${e.address}`).join(" ");
  const details = [`version ${instance.version || "-"}`, `weight ${weightOf(instance)}`, formatMetadata(instance.metadata)].filter((d) => d !== "");
  return `${time.toISOString()} revision ${revision} ${change} ${instance.id || instance.key} ${endpoints} (${details.join(", ")})`;
}
