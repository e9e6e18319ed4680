#!/usr/bin/env node
/// <reference types="node" />
// The connect-etcd-balancer command (package bin): ls, watch and pick over etcd.
import { readFileSync } from "node:fs";
import { parseCommandLine, type Invocation } from "./args.js";
import type { CommandContext } from "./command.js";
import { ls } from "./commands/ls.js";
import { pick } from "./commands/pick.js";
import { watch } from "./commands/watch.js";
import { openDiscovery } from "./etcd.js";
import { errorLine, exitCode, UsageError } from "./errors.js";

const commands = { ls, watch, pick } satisfies Record<string, (context: CommandContext) => Promise<void>>;

/** Runs the command line; every failure becomes one line on stderr and an exit code. */
async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const controller = new AbortController();
  const interrupt = () => controller.abort();
  process.once("SIGINT", interrupt).once("SIGTERM", interrupt);
  try {
    const invocation = parseCommandLine(argv, env);
    await run(invocation, controller.signal);
    return exitCode.ok;
  } catch (error) {
    if (controller.signal.aborted) {
      return exitCode.interrupted; // Ctrl-C during ls or pick: nothing to report
    }
    console.error(errorLine(error));
    return error instanceof UsageError ? exitCode.usage : exitCode.failure;
  } finally {
    process.off("SIGINT", interrupt).off("SIGTERM", interrupt);
    controller.abort(); // a hedged etcd read still running must not keep the process alive
  }
}

async function run(invocation: Invocation, signal: AbortSignal): Promise<void> {
  switch (invocation.kind) {
    case "help":
      process.stdout.write(invocation.text);
      return;
    case "version":
      console.log(packageVersion());
      return;
    case "run": {
      const discovery = openDiscovery(invocation.etcd, { watch: invocation.command === "watch" });
      await commands[invocation.command]({ service: invocation.service, discovery, flags: invocation.flags, signal });
    }
  }
}

/** Same relative path from src/cli/main.ts and dist/cli/main.js. */
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return manifest.version;
}

// A reader that went away (`watch … | head -1`) ends the command quietly, as for other Unix tools.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code !== "EPIPE") {
    throw error;
  }
  process.exit(exitCode.ok);
});

process.exitCode = await main(process.argv.slice(2), process.env);
