// Registry changes pushed by a watch reach the transport without a call:
// stats() and peers() follow at once, a departed peer's open streams are given
// drainMs to end and are then ended as Unavailable naming it, and its
// connection closes; the other peers' streams go on.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { startEtcd, type EtcdServer } from "../support/etcd.js";
import { registerKratos, type Registration } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { countBy, eventRecorder, until } from "./helpers.js";

let etcd: EtcdServer;
const servers: UserServer[] = [];
const registrations: Registration[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  servers.push(...(await Promise.all([1, 2].map(() => startUserServer()))));
  for (const [i, server] of servers.entries()) {
    registrations.push(await registerKratos(etcd.endpoint, { id: `push-${i}`, name: "push-service", version: "v1", metadata: null, endpoints: [`grpc://${server.address}`] }));
  }
});

afterAll(async () => {
  await Promise.all(registrations.map((r) => r.deregister().catch(() => {})));
  await Promise.all(servers.map((s) => s.stop()));
  await etcd?.stop();
});

/** Reads a stream on to its end: the error it ended with (or one saying it ended without). */
async function readToEnd(address: string, iterator: AsyncIterator<unknown>): Promise<ConnectError> {
  try {
    while ((await iterator.next()).done !== true);
    return new ConnectError(`stream from ${address} ended without error`);
  } catch (error) {
    return ConnectError.from(error);
  }
}

describe("a registry change pushed by the watch", () => {
  it("reaches stats() and peers() without a call, drains the departed peer's streams, then ends them as Unavailable naming it", { timeout: 30_000 }, async () => {
    const drainMs = 400;
    const recorder = eventRecorder();
    const transport = createBalancedTransport({
      service: "push-service",
      discovery: etcdDiscovery({ endpoints: [etcd.endpoint], watch: true }),
      transport: nodeHttp2Transport(),
      drainMs,
      onEvent: recorder.onEvent,
    });
    try {
      const users = createPeerClient(UserService, transport);
      // 20 long streams: each read to its first message, then left open (the server waits on flow control)
      const streams = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const stream = await users.listUsers({ count: 1_000_000_000 });
          const iterator = stream.message[Symbol.asyncIterator]();
          await iterator.next();
          return { stream, iterator };
        }),
      );
      const [leaving, staying] = servers as [UserServer, UserServer];
      expect(countBy(streams.map((s) => s.stream.peer.address))).toEqual({ [leaving.address]: 10, [staying.address]: 10 });

      const left = performance.now();
      await registrations[0]!.deregister();
      // no call is made: the watch's change must reach the transport by itself
      await until(() => transport.stats().length === 1, { what: "stats() to drop the departed peer" });
      expect(transport.stats().map((s) => s.address)).toEqual([staying.address]);
      expect((await transport.peers()).map((p) => p.address)).toEqual([staying.address]);

      const fromLeaving = await Promise.all(
        streams.filter((s) => s.stream.peer.address === leaving.address).map(async ({ iterator }) => ({ error: await readToEnd(leaving.address, iterator), atMs: performance.now() - left })),
      );
      for (const { error, atMs } of fromLeaving) {
        expect(error.code).toBe(Code.Unavailable);
        expect(error.message).toContain(`peer ${leaving.address} left the registry`);
        expect(atMs).toBeGreaterThanOrEqual(drainMs - 5); // not before the drain ran out
      }
      // the streams of the peer that stays go on
      for (const { iterator } of streams.filter((s) => s.stream.peer.address === staying.address)) {
        expect((await iterator.next()).done).toBe(false);
      }
      // new calls go to the peer that stays only
      const served = await Promise.all(Array.from({ length: 10 }, async (_, i) => (await users.getUser({ id: String(i) })).peer.address));
      expect(new Set(served)).toEqual(new Set([staying.address]));
      for (const { iterator } of streams.filter((s) => s.stream.peer.address === staying.address)) await iterator.return?.();
    } finally {
      await transport.close();
    }
  });
});
