// One @grpc/grpc-js server of EchoService.Echo on 127.0.0.1 that answers
// every call after a fixed delay: one instance of the latency fleet
// (support/latency-fleet.ts), run as a process of its own so that neither its
// timers nor its work share the client's event loop.
//   argv: <delay ms>
//   stdout: one line {"port":N} once it listens.
// Exits when stdin closes (the parent exits or dies) or on SIGTERM/SIGINT.
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { EchoResponseSchema, type EchoRequest, type EchoResponse } from "../gen/test/echo/v1/echo_pb.js";
import { echoServiceDefinition } from "../bench/echo-grpc-js.js";

const delayMs = Number(process.argv[2] ?? 0);
if (!(delayMs >= 0)) {
  throw new Error(`latency-server: bad delay ${process.argv[2]}`);
}

const server = new grpc.Server();
let servedBy = "";
const echo: grpc.handleUnaryCall<EchoRequest, EchoResponse> = (call, callback) => {
  const payload = call.request.payload;
  // The delay is the server's, whatever the request asks: the client sends the same call to every instance.
  setTimeout(() => callback(null, create(EchoResponseSchema, { payload, servedBy })), delayMs);
};
server.addService(echoServiceDefinition, { echo });
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
);
servedBy = `127.0.0.1:${port}`;
process.stdout.write(`${JSON.stringify({ port })}\n`);

const stop = () => {
  server.forceShutdown();
  process.exit(0);
};
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
