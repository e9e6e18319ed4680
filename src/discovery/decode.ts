import type { Instance, SkippedEntry } from "../registry/instance.js";
import { describeError } from "../registry/instance.js";
import { checkInstance, type CheckedInstance, type RegistryLayout } from "../registry/format.js";
import type { Snapshot } from "./discovery.js";

/** One key/value read from the registry, as text. */
export interface RegistryEntry {
  readonly key: string;
  readonly value: string;
}

/**
 * Decodes a service's entries; malformed ones, and those the address policy
 * refuses, are skipped with their key and reason, never thrown. An instance
 * keeps its other endpoints when some are refused, and the refusal is still
 * reported: an address someone registered and nobody dials is worth a look.
 */
export function decodeSnapshot(
  layout: RegistryLayout,
  service: string,
  revision: number,
  entries: readonly RegistryEntry[],
): Snapshot {
  const instances: Instance[] = [];
  const skipped: SkippedEntry[] = [];
  for (const { key, value } of entries) {
    const checked = decodeEntry(layout, service, key, value);
    if (typeof checked === "string") {
      skipped.push({ key, reason: checked });
    } else if (checked !== undefined) {
      instances.push(checked.instance);
      skipped.push(...checked.refused.map((reason) => ({ key, reason })));
    }
  }
  return { service, revision, instances, skipped };
}

/** One entry: undefined when it describes no instance, the reason when it is unusable. */
function decodeEntry(layout: RegistryLayout, service: string, key: string, value: string): CheckedInstance | string | undefined {
  try {
    const init = layout.decode(key, value, service);
    return init === undefined || typeof init === "string" ? init : checkInstance(key, init, service);
  } catch (error) {
    // layouts and checkInstance report problems as strings; this is the last line
    return `decoding failed: ${describeError(error)}`;
  }
}
