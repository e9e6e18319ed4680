import { toInstance } from "../registry/format.js";
import type { Instance } from "../registry/instance.js";
import type { Snapshot, SnapshotPersistence } from "./discovery.js";

/**
 * Where snapshots are kept between processes, for cold starts with etcd down.
 * A Cloudflare KV namespace fits as it is; `fileSnapshotStore()` from
 * `connect-etcd-balancer/node` keeps them in a directory.
 */
export interface SnapshotStore {
  get(key: string): Promise<string | null | undefined>;
  put(key: string, value: string): Promise<unknown>;
}

/** Default for the snapshotMaxAgeMs option: a day-old fleet is likelier gone than not. */
export const defaultSnapshotMaxAgeMs = 24 * 60 * 60 * 1000;
/** A snapshot unchanged since the last put is put again after this share of the maximum age, so it does not age out. */
const rewriteAfterShare = 0.25;
const format = "connect-etcd-balancer/snapshot/v1";

/** What is kept: the revision and time of the read, and the instances as their registrations. */
interface StoredSnapshot {
  readonly format: string;
  readonly service: string;
  readonly revision: number;
  readonly savedAt: number;
  readonly instances: readonly StoredInstance[];
}

interface StoredInstance {
  readonly key: string;
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly endpoints: readonly string[];
}

/**
 * The store key of a service read from one registry the same way: endpoints,
 * namespace and format, hashed. Never credentials, and nothing process-local,
 * so every process (and every Worker isolate) finds what another one saved.
 */
export async function snapshotStoreKey(registry: readonly unknown[], service: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(registry)));
  const hex = [...new Uint8Array(digest).slice(0, 16)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `connect-etcd-balancer/${encodeURIComponent(service)}/${hex}`;
}

export function serializeSnapshot(snapshot: Snapshot, savedAt: number): string {
  const stored: StoredSnapshot = {
    format,
    service: snapshot.service,
    revision: snapshot.revision,
    savedAt,
    instances: snapshot.instances.map(({ key, id, name, version, metadata, endpoints }) => ({
      key, id, name, version, metadata,
      endpoints: endpoints.map((endpoint) => `${endpoint.scheme}://${endpoint.address}`),
    })),
  };
  return JSON.stringify(stored);
}

/**
 * Reads a stored snapshot back, checking every field: the store is outside the
 * process and may hold anything. Returns the reason as a string when unusable.
 */
export function parseStoredSnapshot(text: string, service: string, now: number, maxAgeMs: number): { snapshot: Snapshot; savedAt: number } | string {
  let stored: Partial<StoredSnapshot>;
  try {
    stored = JSON.parse(text) as Partial<StoredSnapshot>;
  } catch {
    return "corrupt: not JSON";
  }
  if (typeof stored !== "object" || stored === null || stored.format !== format || stored.service !== service) {
    return `corrupt: not a snapshot of "${service}"`;
  }
  const { revision, savedAt, instances } = stored;
  if (typeof revision !== "number" || typeof savedAt !== "number" || !Number.isFinite(savedAt) || !Array.isArray(instances)) {
    return "corrupt: revision, time or instances missing";
  }
  if (now - savedAt > maxAgeMs) {
    return `saved ${new Date(savedAt).toISOString()}, older than the maximum age of ${maxAgeMs} ms`;
  }
  const decoded: Instance[] = [];
  for (const entry of instances as unknown[]) {
    const instance = isStoredInstance(entry) ? toInstance(entry.key, entry, service) : "not an instance";
    if (typeof instance === "string") {
      return `corrupt: ${instance}`;
    }
    decoded.push(instance);
  }
  return { snapshot: { service, revision, instances: decoded, skipped: [] }, savedAt };
}

function isStoredInstance(value: unknown): value is StoredInstance {
  const entry = value as Partial<StoredInstance> | null;
  return (
    typeof entry === "object" && entry !== null &&
    typeof entry.key === "string" && typeof entry.id === "string" && typeof entry.name === "string" && typeof entry.version === "string" &&
    typeof entry.metadata === "object" && entry.metadata !== null &&
    Object.values(entry.metadata).every((v) => typeof v === "string") &&
    Array.isArray(entry.endpoints) && entry.endpoints.every((e) => typeof e === "string")
  );
}

/**
 * Saves and restores the snapshots of one registry. A save is skipped when
 * nothing changed since this process last saved, unless that save is getting
 * old: stores such as KV limit and bill writes, and a warm process reads etcd
 * every ttlMs.
 */
export function snapshotPersistence(store: SnapshotStore, registry: readonly unknown[], maxAgeMs: number): SnapshotPersistence {
  const lastSaved = new Map<string, { snapshot: Snapshot; at: number }>();
  return {
    async save(snapshot) {
      const now = Date.now();
      const last = lastSaved.get(snapshot.service);
      if (snapshot.instances.length === 0 || (last?.snapshot === snapshot && now - last.at < maxAgeMs * rewriteAfterShare)) {
        return; // an empty list would only ever replace a useful one
      }
      lastSaved.set(snapshot.service, { snapshot, at: now });
      try {
        await store.put(await snapshotStoreKey(registry, snapshot.service), serializeSnapshot(snapshot, now));
      } catch (error) {
        lastSaved.delete(snapshot.service);
        throw error;
      }
    },
    async restore(service) {
      const text = await store.get(await snapshotStoreKey(registry, service));
      if (text === null || text === undefined) {
        return undefined;
      }
      const restored = parseStoredSnapshot(String(text), service, Date.now(), maxAgeMs);
      if (typeof restored === "string") {
        throw new Error(restored);
      }
      return restored;
    },
  };
}
