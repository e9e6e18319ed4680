// A fake etcd JSON gateway on 127.0.0.1 that answers however a test tells
// it to: echoing secrets, redirecting, sending endless bodies. It records
// every request it receives, password and token included.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

export interface ReceivedRequest {
  readonly path: string;
  readonly authorization: string | undefined;
  readonly body: string;
}

export type Answer = (request: ReceivedRequest, response: ServerResponse) => void;

export interface HostileEtcd {
  readonly endpoint: string;
  readonly received: ReceivedRequest[];
  /** How the server answers from now on. */
  answer: Answer;
  /** Connections open now. */
  openConnections(): number;
  stop(): Promise<void>;
}

export async function startHostileEtcd(answer: Answer): Promise<HostileEtcd> {
  const sockets = new Set<Socket>();
  const state: HostileEtcd = {
    endpoint: "",
    received: [],
    answer,
    openConnections: () => sockets.size,
    async stop() {
      sockets.forEach((socket) => socket.destroy());
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const server = createServer(async (request: IncomingMessage, response) => {
    let body = "";
    for await (const chunk of request) {
      body += String(chunk);
    }
    const received = { path: request.url ?? "", authorization: request.headers.authorization, body };
    state.received.push(received);
    state.answer(received, response);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return Object.assign(state, { endpoint: `http://127.0.0.1:${port}` });
}

export function json(response: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  response.writeHead(status, { "content-type": "application/json" }).end(text);
}

const base64 = (text: string) => Buffer.from(text).toString("base64");

/** A range answer as etcd writes it: int64s as strings, base64 keys and values. */
export function rangeBody(revision: unknown, instances: readonly { service: string; id: string; address: string }[]) {
  return {
    header: { cluster_id: "1", member_id: "2", revision, raft_term: "3" },
    kvs: instances.map(({ service, id, address }) => ({
      key: base64(`/microservices/${service}/${id}`),
      value: base64(JSON.stringify({ id, name: service, version: "v1", metadata: null, endpoints: [`grpc://${address}`] })),
      create_revision: "2",
      mod_revision: "2",
      version: "1",
    })),
    count: String(instances.length),
  };
}

/**
 * Writes `chunk` again and again, as fast as the client reads, until the
 * client goes away or `maxBytes` were sent (so a client without a limit
 * fails the test instead of taking the machine's memory). Resolves with the
 * bytes sent.
 */
export function endless(response: ServerResponse, chunk: Buffer, maxBytes = 256 * 1024 * 1024): Promise<number> {
  let sent = 0;
  return new Promise((resolve) => {
    const write = () => {
      while (!response.destroyed && sent < maxBytes) {
        sent += chunk.length;
        if (!response.write(chunk)) {
          response.once("drain", write);
          return;
        }
      }
      response.end();
      resolve(sent);
    };
    response.once("close", () => resolve(sent));
    write();
  });
}
