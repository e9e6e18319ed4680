// Three @grpc/grpc-js servers of EchoService.Echo on 127.0.0.1, run as a
// child process of `npm run bench` so that the servers' work does not share
// the client's event loop. Prints one line `{"ports":[p1,p2,p3]}` on stdout
// once all three listen; shuts down when stdin closes (the parent exits or
// dies) or on SIGTERM/SIGINT.
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { EchoResponseSchema, type EchoRequest, type EchoResponse } from "../gen/test/echo/v1/echo_pb.js";
import { echoServiceDefinition } from "./echo-grpc-js.js";

const count = Number(process.argv[2] ?? 3);

async function startServer(): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  let servedBy = "";
  const echo: grpc.handleUnaryCall<EchoRequest, EchoResponse> = (call, callback) => {
    const request = call.request;
    const respond = () => callback(null, create(EchoResponseSchema, { payload: request.payload, servedBy }));
    if (request.delayMs > 0) setTimeout(respond, request.delayMs);
    else respond();
  };
  server.addService(echoServiceDefinition, { echo });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
  );
  servedBy = `127.0.0.1:${port}`;
  return { server, port };
}

const servers = await Promise.all(Array.from({ length: count }, startServer));
process.stdout.write(`${JSON.stringify({ ports: servers.map((s) => s.port) })}\n`);

const stop = () => {
  for (const { server } of servers) server.forceShutdown();
  process.exit(0);
};
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
