import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3 } from "etcd3";
import { redactUrl } from "../../redact.js";
import type { RegisterInstanceOptions } from "../register-instance.js";

/** Checks registerInstance's options up front, so that a mistake fails at startup naming the option, not later in etcd. */
export function validateRegistration(options: RegisterInstanceOptions): { etcd: Etcd3 | readonly string[] } {
  const etcd = checkEtcd(options.etcd);
  checkSegment("name", options.name);
  if (options.id !== undefined) {
    checkSegment("id", options.id);
  }
  check(options.version === undefined || typeof options.version === "string", "version must be a string");
  check(options.metadata === undefined || isStringRecord(options.metadata), "metadata must be an object of strings");
  checkEndpoints(options.endpoints);
  check(
    options.namespace === undefined || (typeof options.namespace === "string" && !options.namespace.endsWith("/")),
    'namespace must be a string without a trailing "/", e.g. "/microservices"',
  );
  const ttl = options.ttlSeconds;
  check(ttl === undefined || (Number.isInteger(ttl) && ttl >= 1), `ttlSeconds must be a whole number of seconds ≥ 1, got ${ttl}`);
  check(options.onEvent === undefined || typeof options.onEvent === "function", "onEvent must be a function");
  return { etcd };
}

function checkEtcd(etcd: unknown): Etcd3 | readonly string[] {
  if (Array.isArray(etcd)) {
    check(etcd.length > 0, "etcd must be an Etcd3 client or a non-empty list of etcd URLs");
    for (const url of etcd) {
      check(isUrl(url, ["http:", "https:"]), `etcd URL ${typeof url === "string" ? redactUrl(url) : String(url)} is not an http(s) URL`);
    }
    return etcd as string[];
  }
  const client = etcd as Partial<Etcd3> | null | undefined;
  check(typeof client?.lease === "function" && typeof client.delete === "function", "etcd must be an Etcd3 client (from the etcd3 package) or a list of etcd URLs");
  return client as Etcd3;
}

/** A key segment: an empty one or one with "/" would put the key where kratos and the discoveries never look. */
function checkSegment(option: "name" | "id", value: unknown): void {
  check(typeof value === "string" && value !== "" && !value.includes("/"), `${option} must be a non-empty string without "/", got ${JSON.stringify(value)}`);
}

function checkEndpoints(endpoints: unknown): void {
  check(Array.isArray(endpoints) && endpoints.length > 0, 'endpoints must list at least one URL, e.g. ["grpc://10.0.0.7:9000"]');
  (endpoints as unknown[]).forEach((endpoint, index) => {
    const shown = typeof endpoint === "string" ? redactUrl(endpoint) : String(endpoint);
    check(isUrl(endpoint), `endpoints[${index}] ${shown} is not a URL with a scheme and host, e.g. "grpc://10.0.0.7:9000"`);
  });
}

function isUrl(text: unknown, protocols?: readonly string[]): boolean {
  if (typeof text !== "string" || !text.includes("://")) {
    return false;
  }
  try {
    const url = new URL(text);
    return url.hostname !== "" && (protocols === undefined || protocols.includes(url.protocol));
  } catch {
    return false;
  }
}

function isStringRecord(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "string");
}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) {
    throw new ConnectError(`registerInstance: ${message}`, Code.InvalidArgument);
  }
}
