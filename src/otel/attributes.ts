// Span attributes of an RPC attempt, after the OpenTelemetry semantic
// conventions v1.37.0 for RPC spans, gRPC and Connect RPC: the last release of
// the rpc.system / rpc.service / rpc.grpc.status_code names, which
// @opentelemetry/instrumentation-grpc emits and tracing backends read. v1.38
// and later rename them (rpc.system.name, rpc.response.status_code), still as
// a release candidate; the spec has v1.37 users keep the old names by default
// and offer the new ones behind OTEL_SEMCONV_STABILITY_OPT_IN=rpc.
import { Code, type ConnectError } from "@connectrpc/connect";
import type { Attributes } from "@opentelemetry/api";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Peer } from "../peer.js";

/** The `rpc.system` values this interceptor can describe. */
export type RpcSystem = "grpc" | "connect_rpc";

/** `<package.Service>/<Method>`, the span name the conventions ask for. */
export function spanName(method: DescMethod): string {
  return `${method.parent.typeName}/${method.name}`;
}

/**
 * A peer registered under grpc:// or grpcs:// is dialled with gRPC; under
 * http:// or https:// with Connect, the protocol fetchTransport() and the
 * Connect servers registered there speak.
 */
export function rpcSystemOf(peer: Peer | undefined): RpcSystem {
  return peer?.scheme === "http" || peer?.scheme === "https" ? "connect_rpc" : "grpc";
}

/** What is known when the attempt starts: the method and the peer it goes to. */
export function startAttributes(system: RpcSystem, method: DescMethod, peer: Peer | undefined): Attributes {
  const attributes: Attributes = {
    "rpc.system": system,
    "rpc.service": method.parent.typeName,
    "rpc.method": method.name,
  };
  if (peer !== undefined) {
    attributes["server.address"] = peer.host;
    attributes["server.port"] = peer.port;
    // a static or etcd-naming instance may have no id or version: leave them out rather than record ""
    if (peer.id !== "") attributes["connect_etcd_balancer.instance.id"] = peer.id;
    if (peer.version !== "") attributes["connect_etcd_balancer.instance.version"] = peer.version;
  }
  return attributes;
}

/** The status attribute of a finished attempt: gRPC's numeric code, or Connect's code name on failure only. */
export function outcomeAttributes(system: RpcSystem, error: ConnectError | undefined): Attributes {
  if (system === "grpc") {
    return { "rpc.grpc.status_code": error === undefined ? 0 : error.code };
  }
  return error === undefined ? {} : { "rpc.connect_rpc.error_code": connectCodeName(error.code) };
}

/** Code.NotFound → "not_found", as the Connect protocol spells codes. */
function connectCodeName(code: Code): string {
  return Code[code].replace(/[a-z][A-Z]/g, (pair) => `${pair[0]}_${pair[1]}`).toLowerCase();
}
