// Example UserService servers on loopback: real HTTP/2 (gRPC, Connect and
// gRPC-web over h2c) or HTTP/1.1 (Connect, gRPC-web). Every response names
// the address the server listens on, so callers can check who answered.
import * as http from "node:http";
import * as http2 from "node:http2";
import type { Socket } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { UserService } from "../gen/demo/user/v1/user_pb.js";

export interface UserServer {
  /** "127.0.0.1:41234" or "[::1]:41234". */
  readonly address: string;
  readonly port: number;
  /** How many calls this server answered. */
  readonly calls: number;
  /** Stops listening and drops open connections. */
  stop(): Promise<void>;
}

export interface UserServerOptions {
  readonly host?: string;
  readonly port?: number;
  readonly httpVersion?: "2" | "1.1";
  /** Answer every call with this error code, as an overloaded or broken instance would. */
  readonly failWith?: Code;
}

export async function startUserServer({ host = "127.0.0.1", port = 0, httpVersion = "2", failWith }: UserServerOptions = {}): Promise<UserServer> {
  let address = "";
  let calls = 0;
  const answer = () => {
    calls++;
    if (failWith !== undefined) {
      throw new ConnectError(`${address} is failing on purpose`, failWith);
    }
  };
  const handler = connectNodeAdapter({
    routes(router) {
      router.service(UserService, {
        getUser(request) {
          answer();
          return { user: { id: request.id, name: `user ${request.id}` }, servedBy: address };
        },
        updateUser(request) {
          answer();
          return { user: { id: request.id, name: request.name }, servedBy: address };
        },
        async *listUsers(request) {
          answer();
          for (let i = 0; i < request.count; i++) {
            yield { user: { id: String(i), name: `user ${i}` }, servedBy: address };
          }
        },
      });
    },
  });
  const connections = new Set<{ destroy(): void }>();
  const server =
    httpVersion === "2"
      ? http2.createServer(withBracketedAuthority(handler)).on("session", (session) => track(connections, session))
      : http.createServer(handler).on("connection", (socket: Socket) => track(connections, socket));
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, () => resolve()));
  const bound = (server.address() as { port: number }).port;
  address = host.includes(":") ? `[${host}]:${bound}` : `${host}:${bound}`;
  return {
    address,
    port: bound,
    get calls() {
      return calls;
    },
    async stop() {
      // Destroy first: on Node 24 an HTTP/2 session that server.close() already
      // began closing gracefully ignores destroy() while a stream is open.
      for (const connection of connections) {
        connection.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Node's http2 client sends an IPv6 :authority without brackets ("::1:9000"),
 * which connect-node's server cannot parse into a URL; grpc-go accepts it.
 * Put the brackets back so the IPv6 tests reach the service.
 */
export function withBracketedAuthority(handler: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void) {
  return (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    const authority = req.headers[":authority"];
    if (typeof authority === "string" && /^[0-9a-f:]+:\d+$/i.test(authority) && authority.split(":").length > 2) {
      const colon = authority.lastIndexOf(":");
      req.headers[":authority"] = `[${authority.slice(0, colon)}]${authority.slice(colon)}`;
    }
    handler(req, res);
  };
}

function track(connections: Set<{ destroy(): void }>, connection: { destroy(): void; once(event: "close", listener: () => void): unknown }) {
  connections.add(connection);
  connection.once("close", () => connections.delete(connection));
}
