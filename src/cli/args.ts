/// <reference types="node" />
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { EtcdAuth } from "../discovery/etcd-gateway.js";
import type { BalancerName } from "../balancer/index.js";
import type { EndpointScheme } from "../registry/endpoint.js";
import { parseServiceName } from "../transport/service-name.js";
import { UsageError } from "./errors.js";
import { commandHelp, overallHelp } from "./help.js";

/** Every option of every command: parsed strictly in one pass, then checked against the command. */
const options = {
  etcd: { type: "string", multiple: true },
  namespace: { type: "string" },
  format: { type: "string" },
  user: { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
  json: { type: "boolean" },
  balancer: { type: "string", short: "b" },
  count: { type: "string", short: "n" },
  key: { type: "string" },
  scheme: { type: "string", multiple: true },
  subset: { type: "string" },
  zone: { type: "string" },
  "zone-key": { type: "string" },
} as const satisfies ParseArgsConfig["options"];

type OptionName = keyof typeof options;

const globalOptions: readonly OptionName[] = ["etcd", "namespace", "format", "user", "help", "version"];
const commandOptions = {
  ls: ["json"],
  watch: ["json"],
  pick: ["balancer", "count", "key", "scheme", "subset", "zone", "zone-key"],
} as const satisfies Record<string, readonly OptionName[]>;

export type Command = keyof typeof commandOptions;

const balancers = ["round_robin", "random", "weighted_round_robin", "least_request", "p2c", "ring_hash"] as const satisfies readonly BalancerName[];
const schemes = ["grpc", "grpcs", "http", "https"] as const satisfies readonly EndpointScheme[];
const formats = ["kratos", "etcd-naming"] as const;
const maxCount = 10_000;

/** Where and how to read the registry. */
export interface EtcdFlags {
  readonly endpoints: readonly string[];
  readonly namespace: string | undefined;
  readonly format: (typeof formats)[number];
  readonly auth: EtcdAuth | undefined;
}

/** The command-specific options; each command reads its own. */
export interface CommandFlags {
  readonly json: boolean;
  readonly balancer: BalancerName;
  readonly count: number;
  readonly key: string | undefined;
  readonly schemes: readonly EndpointScheme[];
  /** Peers in the subset, undefined for all (`--subset off`, and always for ring_hash). */
  readonly subset: number | undefined;
  readonly zone: string | undefined;
  readonly zoneKey: string;
}

export type Invocation =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "version" }
  | { readonly kind: "run"; readonly command: Command; readonly service: string; readonly etcd: EtcdFlags; readonly flags: CommandFlags };

/** Reads the command line; throws UsageError for anything it cannot make sense of. */
export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv): Invocation {
  const { values, positionals, tokens } = parseStrictly(argv);
  const [command, ...rest] = positionals;
  if (values.version) {
    return { kind: "version" };
  }
  if (command === undefined) {
    if (values.help) {
      return { kind: "help", text: overallHelp };
    }
    throw new UsageError("missing command: ls, watch or pick");
  }
  if (!Object.hasOwn(commandOptions, command)) {
    throw new UsageError(`unknown command "${command}": use ls, watch or pick`);
  }
  const known = command as Command;
  if (values.help) {
    return { kind: "help", text: commandHelp[known] };
  }
  rejectOtherCommandsOptions(known, tokens);
  return { kind: "run", command: known, service: serviceOf(known, rest), etcd: etcdFlags(values, env), flags: commandFlags(known, values) };
}

type Values = ReturnType<typeof parseStrictly>["values"];

function parseStrictly(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options, allowPositionals: true, strict: true, tokens: true });
  } catch (error) {
    // Node's messages go on to explain "--" at length: the first sentence says it.
    const message = error instanceof Error ? error.message.split(". ")[0]! : String(error);
    throw new UsageError(message.charAt(0).toLowerCase() + message.slice(1));
  }
}

function rejectOtherCommandsOptions(command: Command, tokens: ReturnType<typeof parseStrictly>["tokens"]): void {
  const accepted: readonly string[] = [...globalOptions, ...commandOptions[command]];
  for (const token of tokens) {
    if (token.kind === "option" && !accepted.includes(token.name)) {
      throw new UsageError(`${command} has no option ${token.rawName}`, command);
    }
  }
}

function serviceOf(command: Command, rest: readonly string[]): string {
  const [target, extra] = rest;
  if (target === undefined) {
    throw new UsageError(`${command} needs a service name`, command);
  }
  if (extra !== undefined) {
    throw new UsageError(`unexpected argument "${extra}"`, command);
  }
  try {
    return parseServiceName(target);
  } catch {
    throw new UsageError(`bad service "${target}": use a name like user-service or discovery:///user-service`, command);
  }
}

function etcdFlags(values: Values, env: NodeJS.ProcessEnv): EtcdFlags {
  const fromEnv = (env["ETCD_ENDPOINTS"] ?? "").split(",").map((url) => url.trim()).filter((url) => url !== "");
  const endpoints = values.etcd ?? (fromEnv.length > 0 ? fromEnv : ["http://127.0.0.1:2379"]);
  return { endpoints, namespace: values.namespace, format: oneOf("--format", values.format ?? "kratos", formats), auth: authOf(values.user, env) };
}

/** The password comes only from the environment: a flag would show in `ps` and shell history. */
function authOf(username: string | undefined, env: NodeJS.ProcessEnv): EtcdAuth | undefined {
  if (username === undefined) {
    return undefined;
  }
  const password = env["ETCD_PASSWORD"];
  if (password === undefined || password === "") {
    throw new UsageError(`--user ${username} needs the password in $ETCD_PASSWORD`);
  }
  return { username, password };
}

function commandFlags(command: Command, values: Values): CommandFlags {
  const balancer = oneOf("--balancer", values.balancer ?? "round_robin", balancers);
  if (values.key !== undefined && balancer !== "ring_hash") {
    throw new UsageError(`--key is only used by --balancer ring_hash, not ${balancer}`, command);
  }
  return {
    json: values.json ?? false,
    balancer,
    count: countOf(command, values.count ?? "10"),
    key: values.key,
    schemes: (values.scheme ?? ["grpc", "grpcs"]).map((scheme) => oneOf("--scheme", scheme, schemes)),
    subset: balancer === "ring_hash" || values.subset === "off" ? undefined : subsetOf(command, values.subset ?? "25"),
    zone: nonEmpty(command, "--zone", values.zone),
    zoneKey: nonEmpty(command, "--zone-key", values["zone-key"]) ?? "zone",
  };
}

function subsetOf(command: Command, text: string): number {
  const size = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(size >= 1 && size <= maxCount)) {
    throw new UsageError(`--subset must be a whole number from 1 to ${maxCount} or "off", got "${text}"`, command);
  }
  return size;
}

function nonEmpty(command: Command, flag: string, text: string | undefined): string | undefined {
  if (text === "") {
    throw new UsageError(`${flag} must not be empty`, command);
  }
  return text;
}

function countOf(command: Command, text: string): number {
  const count = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(count >= 1 && count <= maxCount)) {
    throw new UsageError(`-n must be a whole number from 1 to ${maxCount}, got "${text}"`, command);
  }
  return count;
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`${flag} must be one of ${allowed.join(", ")}, got "${value}"`);
  }
  return value as T;
}
