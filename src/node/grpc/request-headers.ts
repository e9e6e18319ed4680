import type { OutgoingHttpHeaders } from "node:http2";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Compression } from "@connectrpc/connect/protocol";
import { requestHeader } from "../../request-header.js";

export interface RequestHeaderOptions {
  /** "host:port" of the peer; IPv6 bracketed, which Node's client would otherwise leave out. */
  readonly authority: string;
  /** Path prefix of the peer's base URL ("" for none). */
  readonly pathPrefix: string;
  readonly useBinaryFormat: boolean;
  readonly acceptCompression: readonly Compression[];
  readonly sendCompression: Compression | null;
}

/**
 * Builds the HTTP/2 request headers of a call: what connect's
 * requestHeaderWithCompression() sets, as a plain object that node:http2
 * takes without conversion. The protocol fields are computed once per
 * transport and the path once per method; per call only the caller's
 * headers and the timeout are added.
 */
export function createRequestHeaders(options: RequestHeaderOptions) {
  const fixed: OutgoingHttpHeaders = {
    ":method": "POST",
    ":authority": options.authority,
    "content-type": options.useBinaryFormat ? "application/grpc+proto" : "application/grpc+json",
    te: "trailers",
    "user-agent": "connect-etcd-balancer (node:http2)",
  };
  if (options.sendCompression !== null) {
    fixed["grpc-encoding"] = options.sendCompression.name;
  }
  if (options.acceptCompression.length > 0) {
    fixed["grpc-accept-encoding"] = options.acceptCompression.map((c) => c.name).join(",");
  }
  const paths = new Map<DescMethod, string>();
  return (method: DescMethod, timeoutMs: number | undefined, callerHeader: HeadersInit | undefined): OutgoingHttpHeaders => {
    let path = paths.get(method);
    if (path === undefined) {
      path = `${options.pathPrefix}/${method.parent.typeName}/${method.name}`;
      paths.set(method, path);
    }
    const headers: OutgoingHttpHeaders = {};
    if (callerHeader !== undefined) {
      (callerHeader instanceof Headers ? callerHeader : requestHeader(callerHeader)).forEach((value, name) => {
        headers[name] = value;
      });
      delete headers["host"]; // :authority names the peer
    }
    const userAgent = headers["user-agent"];
    Object.assign(headers, fixed); // the protocol's fields win over the caller's, as in connect
    if (userAgent !== undefined) {
      headers["user-agent"] = userAgent;
    }
    headers[":path"] = path;
    if (timeoutMs !== undefined) {
      // grpc-timeout allows 8 digits: beyond ~27 hours, whole seconds
      headers["grpc-timeout"] = timeoutMs <= 99_999_999 ? `${Math.ceil(timeoutMs)}m` : `${Math.min(99_999_999, Math.ceil(timeoutMs / 1000))}S`;
    }
    return headers;
  };
}
