import { randomUUID } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { SnapshotStore } from "../discovery/snapshot-store.js";

/**
 * A snapshot store in a directory (e.g. "/tmp/ceb" on Lambda, a volume in a
 * container), for `etcdDiscovery({ snapshotStore })`. Each key is one file;
 * a write goes to a temporary file that is then renamed over it, so a reader
 * (another process, or this one after a crash mid-write) sees the old content
 * or the new, never half of one.
 */
export function fileSnapshotStore(directory: string): SnapshotStore {
  // Keys are hashes with a service name: encoding keeps any of them one plain file name.
  const fileOf = (key: string) => join(directory, `${encodeURIComponent(key)}.json`);
  return {
    async get(key) {
      try {
        return await readFile(fileOf(key), "utf8");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") {
          return undefined; // nothing saved yet
        }
        throw error;
      }
    },
    async put(key, value) {
      await mkdir(directory, { recursive: true });
      const temporary = join(directory, `.${randomUUID()}.tmp`);
      try {
        await writeFile(temporary, value, { encoding: "utf8", mode: 0o600 });
        await rename(temporary, fileOf(key));
      } catch (error) {
        await rm(temporary, { force: true });
        throw error;
      }
    },
  };
}
