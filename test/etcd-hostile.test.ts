// etcdDiscovery against something that answers in etcd's place (issue 8):
// it may redirect, send endless bodies or lines, or malformed answers. The
// client follows no redirect, keeps its memory bounded, checks revisions and
// entries before use, and the last good snapshot keeps serving meanwhile.
import { afterEach, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createBalancedTransport, etcdDiscovery, type BalancedTransport, type EtcdDiscoveryOptions } from "../src/index.js";
import { endless, json, rangeBody, startHostileEtcd, type Answer, type HostileEtcd } from "./hostile-etcd.js";
import { eventRecorder, rejection } from "./helpers.js";

const started: HostileEtcd[] = [];
const open: BalancedTransport[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((t) => t.close()));
  await Promise.all(started.splice(0).map((s) => s.stop()));
});

async function hostile(answer: Answer): Promise<HostileEtcd> {
  const server = await startHostileEtcd(answer);
  started.push(server);
  return server;
}

const instance = { service: "svc", id: "a", address: "127.0.0.1:9001" };
const goodRange: Answer = (_, response) => json(response, 200, rangeBody("10", [instance]));

function load(endpoint: string, options: Partial<EtcdDiscoveryOptions> = {}) {
  return etcdDiscovery({ endpoints: [endpoint], ...options }).load("svc", new AbortController().signal);
}

function balanced(endpoint: string, discovery: Partial<EtcdDiscoveryOptions>, onEvent: ReturnType<typeof eventRecorder>["onEvent"]) {
  const transport = createBalancedTransport({
    service: "svc",
    discovery: etcdDiscovery({ endpoints: [endpoint], ...discovery }),
    transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
    onEvent,
  });
  open.push(transport);
  return transport;
}

/** The highest growth of the process' resident memory while `work` runs, in bytes. */
async function peakGrowth(work: () => Promise<unknown>): Promise<number> {
  const before = process.memoryUsage.rss();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 2);
  try {
    await work();
  } finally {
    clearInterval(sampler);
  }
  return Math.max(peak, process.memoryUsage.rss()) - before;
}

describe("redirects", () => {
  for (const status of [307, 308]) {
    it(`are refused (HTTP ${status}): the target receives nothing, not even the password`, async () => {
      const target = await hostile(goodRange);
      const redirecting = await hostile((_, response) => {
        response.writeHead(status, { location: `http://user:S3CRET-pw-123@127.0.0.1:${new URL(target.endpoint).port}/v3/kv/range` }).end();
      });
      const auth = { username: "reader", password: "S3CRET-pw-123" };
      const error = await rejection(load(redirecting.endpoint, { auth }));
      expect(error.message).toContain(redirecting.endpoint);
      expect(error.message).toMatch(/redirect .*refused/);
      expect(error.message).not.toContain("S3CRET-pw-123");
      expect(error.message).not.toContain(target.endpoint);
      expect(redirecting.received.map((r) => r.path)).toEqual(["/v3/auth/authenticate"]);
      expect(target.received).toEqual([]);
    });
  }

  it("are refused when fetch hides them as an opaque redirect, without a status 0", async () => {
    // what a browser's fetch resolves with for redirect: "manual"
    const opaque: typeof fetch = async () => ({ type: "opaqueredirect", status: 0, ok: false, body: null, headers: new Headers() }) as Response;
    const error = await rejection(load("http://127.0.0.1:1", { fetch: opaque }));
    expect(error.message).toMatch(/with a redirect; redirects are refused/);
    expect(error.message).not.toContain("HTTP 0");
  });

  it("are refused on the watch too", async () => {
    const target = await hostile(goodRange);
    const server = await hostile((request, response) =>
      request.path === "/v3/watch" ? response.writeHead(307, { location: `${target.endpoint}/v3/watch` }).end() : goodRange(request, response),
    );
    const recorder = eventRecorder();
    const failed = recorder.next("discovery_failed");
    const transport = balanced(server.endpoint, { watch: true }, recorder.onEvent);
    expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]);
    expect((await failed).error.message).toMatch(/redirect .*refused/);
    expect(target.received).toEqual([]);
  });
});

describe("authentication failures", () => {
  const auth = { username: "u", password: "pw-123456" };
  const healthy: Answer = (request, response) =>
    request.path === "/v3/auth/authenticate" ? json(response, 200, { token: "tok" }) : goodRange(request, response);

  it("of one endpoint (5xx, leader changed, a proxy's page) make the read ask the next one", async () => {
    const failures: [string, Answer][] = [
      ["503 text", (_, response) => response.writeHead(503).end("Service Unavailable")],
      ["502 proxy JSON", (_, response) => json(response, 502, { message: "upstream connect error" })],
      ["leader changed", (_, response) => json(response, 500, { error: "etcdserver: leader changed", code: 14 })],
      ["404", (_, response) => json(response, 404, {})],
    ];
    for (const [what, answer] of failures) {
      const failing = await hostile(answer);
      const good = await hostile(healthy);
      const snapshot = await etcdDiscovery({ endpoints: [failing.endpoint, good.endpoint], auth }).load("svc", new AbortController().signal);
      expect(snapshot.instances.map((i) => i.id), what).toEqual([instance.id]);
    }
  });

  it("that is Unavailable on every endpoint says so, naming each", async () => {
    const failing = await hostile((_, response) => json(response, 500, { error: "etcdserver: leader changed", code: 14 }));
    const error = await rejection(etcdDiscovery({ endpoints: [failing.endpoint], auth }).load("svc", new AbortController().signal));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.message).toContain(`could not authenticate user "u": etcdserver: leader changed`);
  });

  it("refusing the password, as etcd does, is final: the next endpoint is not asked", async () => {
    const refusing = await hostile((_, response) =>
      json(response, 400, { error: "etcdserver: authentication failed, invalid user ID or password", code: 3 }),
    );
    const good = await hostile(healthy);
    const error = await rejection(etcdDiscovery({ endpoints: [refusing.endpoint, good.endpoint], auth, hedgeAfterMs: 5_000 }).load("svc", new AbortController().signal));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.message).toContain('rejected user "u"');
    expect(good.received).toEqual([]);
  });
});

describe("bounded memory", () => {
  // The client stops reading near the limit: the server gets to send only
  // what fetch reads ahead. Peak memory is a few times what was received
  // (fetch copies each chunk, and garbage waits for the next GC) but far
  // below the 256 MiB the server sends to a client without a limit.
  const limit = 16 * 1024 * 1024;
  const maxSent = 2 * limit;
  const maxGrowth = 6 * limit;

  it("refuses an answer whose content-length is over maxResponseBytes before reading it", async () => {
    const server = await hostile((_, response) => {
      response.writeHead(200, { "content-type": "application/json", "content-length": String(limit + 1) });
      response.write("{");
    });
    const error = await rejection(load(server.endpoint, { maxResponseBytes: limit }));
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(error.message).toContain(server.endpoint);
    expect(error.message).toContain(`more than ${limit} bytes`);
    expect(error.message).toContain("maxResponseBytes");
  });

  it("stops reading a never-ending answer at maxResponseBytes: the server sends little more, memory stays bounded", async () => {
    let sent: Promise<number> | undefined;
    const server = await hostile((_, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      sent = endless(response, Buffer.alloc(64 * 1024, "x"));
    });
    await load((await hostile(goodRange)).endpoint); // fetch's first use loads and compiles undici: not what is measured
    let error: unknown;
    const growth = await peakGrowth(async () => (error = await rejection(load(server.endpoint, { maxResponseBytes: limit }))));
    expect((error as { code: Code }).code).toBe(Code.ResourceExhausted);
    expect(growth).toBeLessThan(maxGrowth);
    expect(await sent).toBeLessThan(maxSent);
  });

  it("keeps serving the last good snapshot when a later answer never ends", async () => {
    const server = await hostile(goodRange);
    const recorder = eventRecorder();
    const transport = balanced(server.endpoint, { ttlMs: 0, maxResponseBytes: limit }, recorder.onEvent); // every call refreshes
    expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]);
    server.answer = (_, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      void endless(response, Buffer.alloc(64 * 1024, " "));
    };
    const failed = recorder.next("discovery_failed");
    expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]); // served while the refresh runs
    const event = await failed;
    expect(event.serving).toBe(true);
    expect(event.error.code).toBe(Code.ResourceExhausted);
    expect(event.error.message).toContain("maxResponseBytes");
    expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]);
  });

  it("breaks a watch whose line never ends at maxWatchLineBytes, and keeps serving", async () => {
    let sent: Promise<number> | undefined;
    const server = await hostile((request, response) => {
      if (request.path !== "/v3/watch") {
        return goodRange(request, response);
      }
      response.writeHead(200, { "content-type": "application/json" });
      response.write(`${JSON.stringify({ result: { header: { revision: "10" }, created: true } })}\n`);
      sent = endless(response, Buffer.alloc(64 * 1024, "x"));
    });
    const recorder = eventRecorder();
    const failed = recorder.next("discovery_failed");
    const transport = balanced(server.endpoint, { watch: true, maxWatchLineBytes: limit }, recorder.onEvent);
    let event: Awaited<typeof failed> | undefined;
    const growth = await peakGrowth(async () => {
      expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]);
      event = await failed;
    });
    expect(event!.error.code).toBe(Code.ResourceExhausted);
    expect(event!.error.message).toContain("maxWatchLineBytes");
    expect(event!.serving).toBe(true);
    expect(growth).toBeLessThan(maxGrowth);
    expect(await sent).toBeLessThan(maxSent);
    expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]);
  });

  it("refuses answers within the limit that would parse into far more memory: deep nesting, countless objects or values", async () => {
    const maxResponseBytes = 64 * 1024;
    const bodies: [string, string][] = [
      ["[".repeat(30_000) + "]".repeat(30_000), "nests deeper than 64 levels"],
      [`{"header":{"revision":"1"},"x":[${Array(10_000).fill("{}").join(",")}]}`, "more objects and lists"],
      [`{"header":{"revision":"1"},"x":[${Array(30_000).fill("0").join(",")}]}`, "more values"],
    ];
    for (const [body, reason] of bodies) {
      const server = await hostile((_, response) => json(response, 200, body));
      const error = await rejection(load(server.endpoint, { maxResponseBytes }));
      expect(error.code).toBe(Code.Internal);
      expect(error.message).toContain(server.endpoint);
      expect(error.message).toContain(reason);
    }
    // brackets and commas inside strings are text, not structure
    const kvs = Array.from({ length: 50 }, (_, i) => ({ key: btoa(`/microservices/svc/${"[{,".repeat(100)}${i}`), value: btoa("{}") }));
    const server = await hostile((_, response) => json(response, 200, { header: { revision: "4" }, kvs }));
    expect((await load(server.endpoint, { maxResponseBytes })).skipped).toHaveLength(50);
  });

  it("breaks a watch whose line nests too deep", async () => {
    const server = await hostile((request, response) => {
      if (request.path !== "/v3/watch") {
        return goodRange(request, response);
      }
      response.writeHead(200, { "content-type": "application/json" }).end(`${"[".repeat(10_000)}\n`);
    });
    const recorder = eventRecorder();
    const failed = recorder.next("discovery_failed");
    balanced(server.endpoint, { watch: true, maxWatchLineBytes: 64 * 1024 }, recorder.onEvent).peers();
    const event = await failed;
    expect(event.error.code).toBe(Code.Internal);
    expect(event.error.message).toContain("nests deeper than 64 levels");
  });

  it("rejects limits that are not whole positive numbers", () => {
    for (const maxResponseBytes of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => etcdDiscovery({ endpoints: ["http://127.0.0.1:1"], maxResponseBytes })).toThrow(/maxResponseBytes/);
    }
    expect(() => etcdDiscovery({ endpoints: ["http://127.0.0.1:1"], maxWatchLineBytes: 0 })).toThrow(/maxWatchLineBytes/);
  });
});

describe("malformed answers", () => {
  it("accepts revisions as decimal strings and as numbers", async () => {
    for (const revision of ["0", "42", 42, "9007199254740991"]) {
      const server = await hostile((_, response) => json(response, 200, rangeBody(revision, [instance])));
      expect((await load(server.endpoint)).revision).toBe(Number(revision));
    }
  });

  it("fails a read whose revision is not a non-negative safe integer, naming the endpoint", async () => {
    for (const revision of ["abc", "NaN", "-1", "1e3", " 7", "", 1.5, -3, null, true, "9007199254740993", "99999999999999999999", {}]) {
      const server = await hostile((_, response) => json(response, 200, rangeBody(revision, [instance])));
      const error = await rejection(load(server.endpoint));
      expect(error.code, String(revision)).toBe(Code.Internal);
      expect(error.message).toContain(server.endpoint);
      expect(error.message).toContain("header.revision");
    }
  });

  it("fails a read whose entries are not etcd's, and one that is not JSON", async () => {
    const key = btoa("/microservices/svc/a");
    const bodies: [unknown, string][] = [
      [{ kvs: [] }, "no header"],
      [{ header: { revision: "1" }, kvs: { key, value: "" } }, "kvs that is not a list"],
      [{ header: { revision: "1" }, kvs: ["x"] }, "kvs[0] that is not an object"],
      [{ header: { revision: "1" }, kvs: [{ key: 5, value: "" }] }, "kvs[0] without a text key"],
      [{ header: { revision: "1" }, kvs: [{ key, value: { a: 1 } }] }, "kvs[0] without a text key and value"],
      [{ header: { revision: "1" }, kvs: [{ key: "!!not base64!!", value: "" }] }, "kvs[0].key that is not base64"],
      ["[1,2", "not JSON"],
      [[1, 2], "not a JSON object"],
    ];
    for (const [body, reason] of bodies) {
      const server = await hostile((_, response) => json(response, 200, body));
      const error = await rejection(load(server.endpoint));
      expect(error.code).toBe(Code.Internal);
      expect(error.message).toContain(server.endpoint);
      expect(error.message).toContain(reason);
    }
  });

  it("reads an entry without a value (etcd leaves out empty values) as a skipped entry", async () => {
    const server = await hostile((_, response) => json(response, 200, { header: { revision: "3" }, kvs: [{ key: btoa("/microservices/svc/a") }] }));
    const snapshot = await load(server.endpoint);
    expect(snapshot.instances).toEqual([]);
    expect(snapshot.skipped.map((s) => s.key)).toEqual(["/microservices/svc/a"]);
  });

  it("never lets an invalid revision replace a snapshot: the last good one keeps serving", async () => {
    const server = await hostile(goodRange);
    const recorder = eventRecorder();
    const transport = balanced(server.endpoint, { ttlMs: 0 }, recorder.onEvent); // every call refreshes
    expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]);
    server.answer = (_, response) => json(response, 200, rangeBody("NaN", [{ ...instance, id: "b", address: "127.0.0.1:9002" }]));
    const failed = recorder.next("discovery_failed");
    await transport.peers();
    expect((await failed).error.code).toBe(Code.Internal);
    expect((await transport.peers()).map((p) => p.address)).toEqual([instance.address]);
  });

  it("ends a watch whose compact_revision is not a revision", async () => {
    const server = await hostile((request, response) => {
      if (request.path !== "/v3/watch") {
        return goodRange(request, response);
      }
      response.writeHead(200, { "content-type": "application/json" });
      response.end(`${JSON.stringify({ result: { canceled: true, compact_revision: "soon" } })}\n`);
    });
    const recorder = eventRecorder();
    const failed = recorder.next("discovery_failed");
    balanced(server.endpoint, { watch: true }, recorder.onEvent).peers();
    const event = await failed;
    expect(event.error.code).toBe(Code.Internal);
    expect(event.error.message).toContain("compact_revision");
  });
});
