import type { Discovery } from "../discovery/discovery.js";
import type { CommandFlags } from "./args.js";

/** What every command gets from main. */
export interface CommandContext {
  readonly service: string;
  readonly discovery: Discovery;
  readonly flags: CommandFlags;
  /** Aborts on Ctrl-C (SIGINT) or SIGTERM. */
  readonly signal: AbortSignal;
}
