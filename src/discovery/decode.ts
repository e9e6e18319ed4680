import type { Instance, SkippedEntry } from "../registry/instance.js";
import { toInstance, type RegistryLayout } from "../registry/format.js";
import type { Snapshot } from "./discovery.js";

/** One key/value read from the registry, as text. */
export interface RegistryEntry {
  readonly key: string;
  readonly value: string;
}

/** Decodes a service's entries; malformed ones are skipped with their key and reason, never thrown. */
export function decodeSnapshot(
  layout: RegistryLayout,
  service: string,
  revision: number,
  entries: readonly RegistryEntry[],
): Snapshot {
  const instances: Instance[] = [];
  const skipped: SkippedEntry[] = [];
  for (const { key, value } of entries) {
    const init = layout.decode(key, value, service);
    if (init === undefined) {
      continue;
    }
    const instance = typeof init === "string" ? init : toInstance(key, init, service);
    if (typeof instance === "string") {
      skipped.push({ key, reason: instance });
    } else {
      instances.push(instance);
    }
  }
  return { service, revision, instances, skipped };
}
