import { watchLoop } from "../../cache/watch-loop.js";
import type { CommandContext } from "../command.js";
import { diffInstances, newlySkipped, type Change } from "../diff.js";
import { errorLine } from "../errors.js";
import { reportSkipped } from "../snapshot.js";
import { formatChange, instanceJson } from "../table.js";

/**
 * Prints the instances, then every change, until the signal aborts (a clean
 * end). A watch that breaks is opened again with backoff, and each re-open
 * reads the service, so changes made while etcd was away are printed too.
 */
export async function watch(context: CommandContext): Promise<void> {
  try {
    await follow(context);
  } catch (error) {
    if (!context.signal.aborted) {
      throw error; // the first read failed: nothing to follow
    }
  }
}

async function follow({ discovery, service, flags, signal }: CommandContext): Promise<void> {
  const print = flags.json ? printJson : printText;
  let shown = await discovery.load(service, signal);
  const none = shown.instances.length === 0 ? ", no instances yet" : "";
  console.error(`watching "${service}" in ${discovery.describe(service)} from revision ${shown.revision}${none}; Ctrl-C to stop`);
  reportSkipped(shown.skipped);
  print(diffInstances([], shown.instances), shown.revision);
  const outage = outageReporter();
  const refresh = oneAtATime(async () => {
    try {
      const next = await discovery.load(service, signal);
      outage.over(next.revision);
      if (next.revision > shown.revision) {
        reportSkipped(newlySkipped(shown, next));
        print(diffInstances(shown.instances, next.instances), next.revision);
        shown = next;
      }
    } catch (error) {
      if (!signal.aborted) {
        outage.failed(error);
      }
    }
  });
  // etcdDiscovery({ watch: true }) always has watch().
  await watchLoop(discovery.watch!, service, signal, { revision: () => shown.revision, changed: refresh, failed: outage.failed });
}

function printText(changes: readonly Change[], revision: number): void {
  const now = new Date();
  for (const { change, instance } of changes) {
    console.log(formatChange(now, revision, change, instance));
  }
}

function printJson(changes: readonly Change[], revision: number): void {
  const time = new Date().toISOString();
  for (const { change, instance } of changes) {
    console.log(JSON.stringify({ time, revision, change, instance: instanceJson(instance) }));
  }
}

/** One stderr line when etcd starts failing and one when it answers again: retries in between stay quiet. */
function outageReporter() {
  let failing = false;
  return {
    failed(error: unknown): void {
      if (!failing) {
        console.error(`${errorLine(error)} (still watching, retrying)`);
      }
      failing = true;
    },
    over(revision: number): void {
      if (failing) {
        console.error(`connect-etcd-balancer: etcd answers again (revision ${revision})`);
      }
      failing = false;
    },
  };
}

/** Runs `task` one at a time; asked while it runs, it runs once more afterwards, so no change is missed. */
function oneAtATime(task: () => Promise<void>): () => void {
  let running = false;
  let again = false;
  const run = (): void => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    void task().finally(() => {
      running = false;
      if (again) {
        again = false;
        run();
      }
    });
  };
  return run;
}
