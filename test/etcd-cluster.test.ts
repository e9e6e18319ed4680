// Discovery against a real 3-member etcd cluster on loopback (issue 7, item 9):
// with the client URLs of all members as endpoints, SIGKILL the leader while
// calls run. No call may fail; reads (and the watch) go on through the
// survivors; a registration written through a survivor is seen within seconds.
import { afterEach, describe, expect, it } from "vitest";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import { createBalancedTransport, createPeerClient, etcdDiscovery, type BalancedTransport } from "../src/index.js";
import { nodeHttp2Transport } from "../src/node/index.js";
import { rangeCountAt, startEtcdCluster, watcherCountAt, type EtcdCluster } from "../support/etcd.js";
import { registerKratos, type Registration } from "../support/registry.js";
import { startUserServer, type UserServer } from "../support/user-server.js";
import { eventRecorder, sleep } from "./helpers.js";

let cluster: EtcdCluster | undefined;
let transport: BalancedTransport | undefined;
const servers: UserServer[] = [];
const registrations: Registration[] = [];

afterEach(async () => {
  await transport?.close();
  transport = undefined;
  await Promise.allSettled(registrations.splice(0).map((r) => r.deregister()));
  await Promise.allSettled(servers.splice(0).map((s) => s.stop()));
  await cluster?.stop();
  cluster = undefined;
});

/** Polls an async condition every 20 ms; fails naming `what` after `timeoutMs`. */
async function eventually(what: string, condition: () => Promise<boolean>, timeoutMs = 5_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await condition().catch(() => false)) {
      return Date.now() - started;
    }
    if (Date.now() - started > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(20);
  }
}

async function addServer(service: string, id: string, registerThrough: string): Promise<UserServer> {
  const server = await startUserServer();
  servers.push(server);
  registrations.push(
    await registerKratos(registerThrough, { id, name: service, version: "v1", metadata: null, endpoints: [`grpc://${server.address}`] }),
  );
  return server;
}

const cases = [
  { name: "ttlMs 200", ttlMs: 200, watch: false },
  { name: "ttlMs 200 and watch", ttlMs: 200, watch: true },
  // No refresh by TTL within the test: only the watch (reopened on a
  // survivor after the leader died) can bring the 4th registration.
  { name: "watch alone (ttlMs 60 s)", ttlMs: 60_000, watch: true },
];

describe.each(cases)("a 3-member etcd cluster loses its leader mid-run ($name)", ({ ttlMs, watch }) => {
  it("fails no call, reads through the survivors, and sees a registration written through a survivor", async () => {
    const service = "user-service";
    cluster = await startEtcdCluster(3);
    const leader = await cluster.leader();
    const survivors = cluster.endpoints.filter((_, i) => i !== leader);
    const leaderEndpoint = cluster.endpoints[leader]!;
    // Registrations (and their lease keep-alives) go through a member that stays up.
    const fleet = [
      await addServer(service, "user-1", survivors[0]!),
      await addServer(service, "user-2", survivors[0]!),
      await addServer(service, "user-3", survivors[1]!),
    ];

    const recorder = eventRecorder();
    // All three client URLs, the leader first: the discovery starts out reading
    // (and watching) through the member that is about to die.
    const endpoints = [leaderEndpoint, ...survivors];
    transport = createBalancedTransport({
      service,
      discovery: etcdDiscovery({ endpoints, ttlMs, watch }),
      transport: nodeHttp2Transport(),
      onEvent: recorder.onEvent,
    });
    const users = createPeerClient(UserService, transport);
    const first = await users.getUser({ id: "0" }, { timeoutMs: 2_000 });
    expect(fleet.map((s) => s.address)).toContain(first.peer.address);
    if (watch) {
      await eventually("the watch to open on the leader", async () => (await watcherCountAt(leaderEndpoint)) >= 1);
    }
    expect(await rangeCountAt(leaderEndpoint)).toBeGreaterThan(0); // the discovery reads through the leader
    const survivorReadsBefore = await Promise.all(survivors.map(rangeCountAt));

    // 4 callers, 200 calls in all, each with a 1 s deadline; the leader is
    // SIGKILLed once 50 calls have been answered.
    const callers = 4;
    const callsPerCaller = 50;
    const failures: string[] = [];
    const servedBy = new Map<string, number>();
    let answered = 0;
    let killed: Promise<void> | undefined;
    let answeredAtKill = 0;
    const caller = async (n: number) => {
      for (let i = 0; i < callsPerCaller; i++) {
        try {
          const res = await users.getUser({ id: `${n}-${i}` }, { timeoutMs: 1_000 });
          expect(res.message.servedBy).toBe(res.peer.address);
          servedBy.set(res.peer.address, (servedBy.get(res.peer.address) ?? 0) + 1);
        } catch (error) {
          failures.push(`caller ${n} call ${i}: ${String(error)}`);
        }
        if (++answered === 50) {
          answeredAtKill = answered;
          killed = cluster!.kill(leader);
        }
        // spread the calls over ~1 s, so they span the kill, the election and several TTLs
        await sleep(20);
      }
    };
    const started = Date.now();
    await Promise.all(Array.from({ length: callers }, (_, n) => caller(n)));
    const elapsed = Date.now() - started;
    await killed;

    expect(answeredAtKill).toBe(50);
    expect(cluster.members[leader]!.alive).toBe(false);
    expect(failures).toEqual([]);
    expect(answered).toBe(callers * callsPerCaller);
    expect([...servedBy.keys()].sort()).toEqual(fleet.map((s) => s.address).sort());

    // The survivors elect a new leader among themselves.
    const newLeader = await cluster.leader();
    expect(newLeader).not.toBe(leader);

    if (watch) {
      // The broken watch was opened again on a survivor.
      await eventually("the watch to reopen on a survivor", async () => (await Promise.all(survivors.map(watcherCountAt))).some((n) => n >= 1));
    }

    // A 4th server registered through a survivor gets calls within seconds.
    const grown = recorder.next("snapshot");
    const fourth = await addServer(service, "user-4", survivors[1]!);
    const waited = await eventually("the 4th server to be called", async () => {
      const res = await users.getUser({ id: "new" }, { timeoutMs: 1_000 });
      return res.peer.address === fourth.address;
    });
    expect((await grown).instances).toBe(4);
    expect(fourth.calls).toBeGreaterThanOrEqual(1);
    // Reads went through the survivors once the leader was gone.
    const survivorReadsAfter = await Promise.all(survivors.map(rangeCountAt));
    expect(survivorReadsAfter.reduce((a, b) => a + b)).toBeGreaterThan(survivorReadsBefore.reduce((a, b) => a + b));
    const discoveryFailures = recorder.events.flatMap((e) => (e.type === "discovery_failed" ? [e.error.message] : []));
    // eslint-disable-next-line no-console
    console.log(
      `[${ttlMs} ms${watch ? ", watch" : ""}] 200 calls in ${elapsed} ms, 0 failed; served ${JSON.stringify(Object.fromEntries(servedBy))}; ` +
        `4th server called after ${waited} ms; discovery_failed events: ${JSON.stringify(discoveryFailures)}`,
    );
  });
});
