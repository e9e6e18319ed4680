import { Code, ConnectError } from "@connectrpc/connect";
import { redactUrl } from "../redact.js";
import { defaultRefusal } from "./address-policy.js";
import { parseEndpoint, type Endpoint } from "./endpoint.js";
import { quote } from "./host.js";
import { describeError, readInstanceInit, type Instance, type InstanceInit } from "./instance.js";
import { createObjectIds } from "../object-ids.js";

/**
 * A custom registry decoder: turns one etcd entry into an instance, or
 * returns undefined for an entry that describes none (it is skipped
 * silently). It must be synchronous. A thrown error or a result that is not
 * an instance skips the entry and is reported with its key; the other
 * entries are still used. It is called again for a key only when its value
 * changed (etcd's mod_revision moved): what it returned is kept meanwhile.
 */
export type RegistryDecoder = (key: string, value: string) => InstanceInit | undefined;

/** How service instances are laid out in etcd. */
export type RegistryFormat = "kratos" | "etcd-naming" | RegistryDecoder;

/** A registry format resolved to its key layout and decoder. */
export interface RegistryLayout {
  /** Human-readable name for messages and cache keys. */
  readonly name: string;
  /** The namespace used when the caller gives none. */
  readonly defaultNamespace: string;
  /**
   * Decodes one entry read under the service's prefix. Returns the instance
   * init, undefined to skip silently, or a string saying why it is unusable.
   */
  decode(key: string, value: string, service: string): InstanceInit | undefined | string;
}

/**
 * Where a service's entries live: always read with the trailing slash. No
 * namespace reads `<service>/` (etcd-naming); "/" reads `/<service>/`, what
 * kratos writes with an empty namespace.
 */
export function servicePrefix(namespace: string, service: string): string {
  return namespace === "" ? `${service}/` : `${namespace.replace(/\/+$/, "")}/${service}/`;
}

/** go-kratos `contrib/registry/etcd`: `/microservices/<name>/<id>` → ServiceInstance JSON. */
const kratos: RegistryLayout = {
  name: "kratos",
  defaultNamespace: "/microservices",
  decode(_key, value, service) {
    const parsed = parseJsonObject(value);
    if (typeof parsed === "string") {
      return parsed;
    }
    const { id, name, version, metadata, endpoints } = parsed;
    if (name !== service) {
      return `registered name ${showValue(name)} is not ${quote(service)}`;
    }
    if (!Array.isArray(endpoints) || !endpoints.every((e) => typeof e === "string")) {
      return "endpoints is not a list of strings";
    }
    if (metadata !== undefined && metadata !== null && !isStringRecord(metadata)) {
      return "metadata is not a map of strings";
    }
    return {
      id: typeof id === "string" ? id : undefined,
      name,
      version: typeof version === "string" ? version : undefined,
      metadata: metadata as Record<string, string> | null | undefined,
      endpoints: endpoints as string[],
    };
  },
};

/**
 * `go.etcd.io/etcd/client/v3/naming/endpoints` (grpc-go's etcd resolver):
 * `<service>/<addr>` → `{"Op":0,"Addr":"10.0.0.7:9000","Metadata":…}`.
 */
const etcdNaming: RegistryLayout = {
  name: "etcd-naming",
  defaultNamespace: "",
  decode(_key, value) {
    const parsed = parseJsonObject(value);
    if (typeof parsed === "string") {
      return parsed;
    }
    const { Op, Addr, Metadata } = parsed;
    if (Op !== undefined && Op !== 0) {
      return `Op is ${showValue(Op)}, not 0 (Add)`;
    }
    if (typeof Addr !== "string" || Addr === "") {
      return "Addr is missing";
    }
    return {
      id: Addr,
      metadata: isStringRecord(Metadata) ? Metadata : undefined,
      endpoints: [Addr.includes("://") ? Addr : `grpc://${Addr}`],
    };
  },
};

export function resolveFormat(format: RegistryFormat = "kratos"): RegistryLayout {
  if (format === "kratos") {
    return kratos;
  }
  if (format === "etcd-naming") {
    return etcdNaming;
  }
  if (typeof format === "function") {
    return {
      name: `custom decoder ${format.name || "(anonymous)"} #${decoderId(format)}`,
      defaultNamespace: kratos.defaultNamespace,
      decode(key, value) {
        try {
          const init = format(key, value);
          if (isPromise(init)) {
            return "decoder returned a Promise (decoders must be synchronous)";
          }
          // a string from a layout is a reason; from a decoder it is a wrong result
          return typeof init === "string" ? "not an instance but a string" : init;
        } catch (error) {
          return `decoder threw: ${describeError(error)}`;
        }
      },
    };
  }
  throw new ConnectError(
    `unknown registry format ${JSON.stringify(format)}: use "kratos", "etcd-naming" or a decoder function`,
    Code.InvalidArgument,
  );
}

const noMetadata: Readonly<Record<string, string>> = Object.freeze(Object.create(null) as Record<string, string>);

/** A validated instance, and the endpoints of it the address policy refused. */
export interface CheckedInstance {
  readonly instance: Instance;
  readonly refused: readonly string[];
}

/**
 * Validates a decoded entry into an instance: every field is checked (a
 * decoder may return anything), hosts are canonicalised, and endpoints that
 * cannot be dialled or that the address policy refuses are dropped. Returns
 * the reason as a string when no endpoint is left.
 */
export function checkInstance(key: string, init: InstanceInit, service: string): CheckedInstance | string {
  const checked = readInstanceInit(init);
  if (typeof checked === "string") {
    return checked;
  }
  const endpoints: Endpoint[] = [];
  const problems: string[] = [];
  const refused: string[] = [];
  for (const raw of checked.endpoints) {
    const endpoint = parseEndpoint(raw);
    const refusal = typeof endpoint === "string" ? undefined : defaultRefusal(endpoint.host);
    if (typeof endpoint === "string") {
      problems.push(endpoint);
    } else if (refusal !== undefined) {
      refused.push(`endpoint ${quote(redactUrl(raw), 120)} refused: ${refusal}`);
    } else {
      endpoints.push(endpoint);
    }
  }
  if (endpoints.length === 0) {
    const all = [...problems, ...refused];
    return all.length > 0 ? `no usable endpoint: ${listed(all)}` : "no endpoints";
  }
  const instance: Instance = {
    key,
    id: checked.id ?? key.slice(key.lastIndexOf("/") + 1),
    name: checked.name ?? service,
    version: checked.version ?? "",
    metadata: checked.metadata ?? noMetadata,
    endpoints,
  };
  return { instance, refused };
}

/** checkInstance without the refusals, for instances the caller wrote (static lists) or stored. */
export function toInstance(key: string, init: InstanceInit, service: string): Instance | string {
  const checked = checkInstance(key, init, service);
  return typeof checked === "string" ? checked : checked.instance;
}

/** A reason lists at most this many endpoint problems: an instance may have 100 endpoints. */
const maxListed = 3;

function listed(problems: readonly string[]): string {
  const shown = problems.slice(0, maxListed).join("; ");
  return problems.length > maxListed ? `${shown}; and ${problems.length - maxListed} more` : shown;
}

/**
 * Whether a decoder returned a promise (or another thenable). A rejection
 * is handled here, as nothing else will wait for it: unhandled, it would end
 * the process.
 */
function isPromise(result: unknown): boolean {
  let then: unknown;
  try {
    then = (result as { then?: unknown } | null | undefined)?.then;
  } catch {
    return false; // a Proxy that throws: readInstanceInit reports it
  }
  if (typeof then !== "function") {
    return false;
  }
  try {
    then.call(result, undefined, () => {});
  } catch {
    // a hand-made thenable whose then throws: no handler could be attached, none is needed
  }
  return true;
}

/** Distinguishes decoders in cache keys: two functions never share a snapshot. */
const decoderId = createObjectIds<RegistryDecoder>();

function parseJsonObject(text: string): Record<string, unknown> | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not shown: text that is not JSON may be anything, a password included
    return `value is not JSON (${text.length} characters)`;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return "value is not a JSON object";
  }
  return parsed as Record<string, unknown>;
}

/** A JSON value for a reason: a string quoted and cut short, an object or array by its kind. */
function showValue(value: unknown): string {
  if (typeof value === "string") {
    return quote(value);
  }
  if (typeof value === "object" && value !== null) {
    return Array.isArray(value) ? "an array" : "an object";
  }
  return String(value); // a number, boolean, null or undefined: short
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return (
    typeof value === "object" &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === "string")
  );
}
