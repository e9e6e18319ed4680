// A fleet of UserService servers in a process of its own, registered in etcd
// as kratos registers them, replaced one at a time on command: the servers of
// a rolling deploy. Started by support/rolling-deploy.ts.
//   argv: <etcd endpoint> <service> <instances>
//   stdin: one "replace" per line: a new instance starts and registers, then
//          the oldest deregisters and stops (its connections dropped, as a
//          process that exits); answered with "replaced <old> <new>".
//   stdout: "ready <address>…" once the first instances are registered.
// Closing stdin deregisters and stops every instance, then the process exits.
import { createInterface } from "node:readline";
import { registerKratos, type Registration } from "./registry.js";
import { startUserServer, type UserServer } from "./user-server.js";

const [endpoint, service, count] = process.argv.slice(2);
let started = 0;
const live: { server: UserServer; registration: Registration }[] = [];

async function startInstance(): Promise<string> {
  const server = await startUserServer();
  const registration = await registerKratos(endpoint!, {
    id: `${service}-${++started}`,
    name: service!,
    version: "v1.0.0",
    metadata: null,
    endpoints: [`grpc://${server.address}`],
  });
  live.push({ server, registration });
  return server.address;
}

async function stopOldest(): Promise<string> {
  const oldest = live.shift()!;
  await oldest.registration.deregister();
  await oldest.server.stop();
  return oldest.server.address;
}

for (let i = 0; i < Number(count); i++) {
  await startInstance();
}
console.log(`ready ${live.map((i) => i.server.address).join(" ")}`);

// Commands run one after another, in order.
let queue = Promise.resolve();
createInterface({ input: process.stdin })
  .on("line", (line) => {
    if (line.trim() !== "replace") {
      return;
    }
    queue = queue.then(async () => {
      const added = await startInstance();
      const removed = await stopOldest();
      console.log(`replaced ${removed} ${added}`);
    });
  })
  .on("close", () => {
    queue = queue.then(async () => {
      while (live.length > 0) {
        await stopOldest().catch(() => {});
      }
      process.exit(0);
    });
  });
