import { redactUrl } from "../redact.js";
import { canonicalHost, quote } from "./host.js";

/** Endpoint schemes a peer can be dialled with. */
export type EndpointScheme = "grpc" | "grpcs" | "http" | "https";

const secureScheme = { grpc: "grpcs", http: "https" } as const;
const defaultPorts: Partial<Record<EndpointScheme, number>> = { http: 80, https: 443 };

/** One registered endpoint of an instance, parsed and validated. */
export interface Endpoint {
  readonly scheme: EndpointScheme;
  /** Canonical host without brackets: dotted-decimal IPv4, RFC 5952 IPv6, or a lowercase name. */
  readonly host: string;
  readonly port: number;
  /** "host:port", IPv6 hosts in brackets. */
  readonly address: string;
  /** "http://address" for grpc/http, "https://address" for grpcs/https. */
  readonly url: string;
}

/**
 * Parses a registered endpoint such as "grpc://10.0.0.7:9000",
 * "https://[::1]:8443" or kratos' legacy "grpc://10.0.0.7:9000?isSecure=true",
 * with its host canonicalised (see canonicalHost). Returns the reason as a
 * string when the endpoint cannot be dialled.
 */
export function parseEndpoint(endpoint: string): Endpoint | string {
  // Anywhere, not only in the authority: a password written unescaped may
  // hold "/", "?" or "#", and then the authority ends inside it and the rest
  // of the password reads as a port or a path.
  if (endpoint.includes("@")) {
    return 'credentials are not allowed in an endpoint (it has an "@", so it is not shown)';
  }
  // messages end up in logs; made only for a refusal (URL parsing and escaping cost more than the rest of a valid endpoint)
  const shown = () => quote(redactUrl(endpoint), 120);
  const match = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([/?#].*)?$/i.exec(endpoint);
  if (!match) {
    return `endpoint ${shown()} is not a URL like grpc://host:port`;
  }
  const scheme = match[1]!.toLowerCase();
  if (!isScheme(scheme)) {
    return `endpoint ${shown()} has unsupported scheme ${quote(scheme, 20)}`;
  }
  const hostPort = splitHostPort(match[2]!);
  if (typeof hostPort === "string") {
    return `endpoint ${shown()}: ${hostPort}`;
  }
  const { host, portText } = hostPort;
  const secure = /[?&]isSecure=true(&|#|$)/.test(match[3] ?? "");
  const finalScheme: EndpointScheme = secure && (scheme === "grpc" || scheme === "http") ? secureScheme[scheme] : scheme;
  const port = portText === "" ? defaultPorts[scheme] : Number(portText);
  if (port === undefined) {
    return `endpoint ${shown()} has no port`;
  }
  // text after the last ":" that is not digits may be the rest of a password: not shown
  if (!/^\d*$/.test(portText)) {
    return `endpoint ${shown()} has a port that is not a number`;
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    return `endpoint ${shown()} has bad port ${quote(portText, 12)}`;
  }
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const url = `${finalScheme === "grpcs" || finalScheme === "https" ? "https" : "http"}://${address}`;
  return { scheme: finalScheme, host, port, address, url };
}

function isScheme(scheme: string): scheme is EndpointScheme {
  return scheme === "grpc" || scheme === "grpcs" || scheme === "http" || scheme === "https";
}

function splitHostPort(authority: string): { host: string; portText: string } | string {
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(authority);
  const colon = authority.lastIndexOf(":");
  const raw = bracketed ? bracketed[1]! : colon < 0 ? authority : authority.slice(0, colon);
  if (!bracketed && raw.includes(":")) {
    return "IPv6 hosts must be in brackets";
  }
  const host = canonicalHost(raw, bracketed !== null);
  if (typeof host === "string") {
    return host;
  }
  const portText = bracketed ? (bracketed[2] ?? "") : colon < 0 ? "" : authority.slice(colon + 1);
  return { host: host.text, portText };
}
