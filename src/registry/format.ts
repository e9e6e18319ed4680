import { Code, ConnectError } from "@connectrpc/connect";
import { parseEndpoint, type Endpoint } from "./endpoint.js";
import type { Instance, InstanceInit } from "./instance.js";

/**
 * A custom registry decoder: turns one etcd entry into an instance, or
 * returns undefined for an entry that describes none (it is skipped
 * silently). A thrown error skips the entry and is reported with its key.
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

/** Where a service's entries live: always read with the trailing slash. */
export function servicePrefix(namespace: string, service: string): string {
  const trimmed = namespace.replace(/\/+$/, "");
  return trimmed === "" ? `${service}/` : `${trimmed}/${service}/`;
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
      return `registered name ${JSON.stringify(name)} is not "${service}"`;
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
      return `Op is ${JSON.stringify(Op)}, not 0 (Add)`;
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
          return format(key, value);
        } catch (error) {
          return `decoder threw: ${error instanceof Error ? error.message : String(error)}`;
        }
      },
    };
  }
  throw new ConnectError(
    `unknown registry format ${JSON.stringify(format)}: use "kratos", "etcd-naming" or a decoder function`,
    Code.InvalidArgument,
  );
}

/**
 * Validates a decoded entry into an instance. Endpoints that cannot be
 * dialled are dropped; an instance with none left is unusable.
 */
export function toInstance(key: string, init: InstanceInit, service: string): Instance | string {
  const endpoints: Endpoint[] = [];
  const problems: string[] = [];
  for (const raw of init.endpoints) {
    const endpoint = parseEndpoint(raw);
    if (typeof endpoint === "string") {
      problems.push(endpoint);
    } else {
      endpoints.push(endpoint);
    }
  }
  if (endpoints.length === 0) {
    return problems.length > 0 ? `no usable endpoint: ${problems.join("; ")}` : "no endpoints";
  }
  return {
    key,
    id: init.id ?? key.slice(key.lastIndexOf("/") + 1),
    name: init.name ?? service,
    version: init.version ?? "",
    metadata: Object.freeze({ ...(init.metadata ?? {}) }),
    endpoints,
  };
}

const decoderIds = new WeakMap<RegistryDecoder, number>();
let decoders = 0;

/** Distinguishes decoders in cache keys: two functions never share a snapshot. */
function decoderId(decoder: RegistryDecoder): number {
  let id = decoderIds.get(decoder);
  if (id === undefined) {
    id = ++decoders;
    decoderIds.set(decoder, id);
  }
  return id;
}

function parseJsonObject(text: string): Record<string, unknown> | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return `value is not JSON: ${JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text)}`;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return "value is not a JSON object";
  }
  return parsed as Record<string, unknown>;
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return (
    typeof value === "object" &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === "string")
  );
}
