// Secrets never leave (issue 8, item 2): the password and etcd's token appear
// in no error (message, cause chain, details, metadata), no event and no
// console line, whatever etcd — or whatever answers in its place — does, and
// however an endpoint URL with credentials is written. Also the pieces this
// rests on: redactUrl, the SHA-256 behind the Discovery key, and that key.
import { createHash } from "node:crypto";
import { inspect } from "node:util";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Code } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createBalancedTransport, etcdDiscovery, type BalancedTransport, type BalancerEvent, type EtcdDiscoveryOptions } from "../src/index.js";
import { redactUrl } from "../src/redact.js";
import { sha256Hex } from "../src/discovery/sha256.js";
import { freePort, startEtcd, type EtcdServer } from "../support/etcd.js";
import { etcdRequest, registerKratos } from "../support/registry.js";
import { json, rangeBody, startHostileEtcd, type Answer, type HostileEtcd, type ReceivedRequest } from "./hostile-etcd.js";
import { eventRecorder, rejection } from "./helpers.js";

const password = "S3CRET-pw-123";
const token = "T0KEN-abc";
const secrets = [password, token];
const auth = { username: "reader", password };
const instance = { service: "svc", id: "a", address: "127.0.0.1:9001" };

/** Every place in `value` (strings, errors with their causes, own properties enumerable or not, headers) holding a secret. */
function leaks(value: unknown, path = "", seen = new Set<unknown>()): string[] {
  if (typeof value === "string") {
    return secrets.filter((secret) => value.includes(secret)).map((secret) => `${path} contains ${secret}: ${value.slice(0, 300)}`);
  }
  if (typeof value !== "object" || value === null || seen.has(value)) {
    return [];
  }
  seen.add(value);
  if (value instanceof Headers) {
    const pairs: string[] = [];
    value.forEach((text, name) => pairs.push(name, text));
    return leaks(pairs, path, seen);
  }
  const names = new Set([...Object.getOwnPropertyNames(value), "message", "rawMessage", "cause", "details", "metadata", "stack", "reason"]);
  return [...names].flatMap((name) => leaks(read(value, name), `${path}.${name}`, seen));
}

function read(value: object, name: string): unknown {
  try {
    return (value as Record<string, unknown>)[name];
  } catch {
    return undefined;
  }
}

let printed: unknown[][] = [];
const started: HostileEtcd[] = [];
const open: BalancedTransport[] = [];

beforeEach(() => {
  printed = [];
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => void printed.push(args));
  }
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((t) => t.close()));
  await Promise.all(started.splice(0).map((s) => s.stop()));
  vi.restoreAllMocks();
});

const echo = (request: ReceivedRequest) => `echo: ${request.authorization ?? ""} ${request.body}`;

/** An etcd with auth on that takes the password and answers one instance; `overrides` replace its answer per path. */
function fakeEtcd(overrides: Partial<Record<string, Answer>> = {}): Answer {
  const defaults: Record<string, Answer> = {
    "/v3/auth/authenticate": (request, response) =>
      JSON.parse(request.body).password === password ? json(response, 200, { token }) : json(response, 400, { error: "etcdserver: authentication failed, invalid user ID or password", code: 3 }),
    "/v3/kv/range": (request, response) =>
      request.authorization === token ? json(response, 200, rangeBody("10", [instance])) : json(response, 401, { error: "invalid auth token", code: 16 }),
    "/v3/watch": (_, response) => void response.writeHead(200).write(`${JSON.stringify({ result: { created: true } })}\n`),
  };
  return (request, response) => (overrides[request.path] ?? defaults[request.path] ?? ((_, r) => json(r, 404, {})))(request, response);
}

async function hostile(answer: Answer): Promise<HostileEtcd> {
  const server = await startHostileEtcd(answer);
  started.push(server);
  return server;
}

/** Two transports sharing one cache: one reports events to a recorder, the other to the console (the default). */
function transports(endpoint: string, options: Partial<EtcdDiscoveryOptions> = {}) {
  const recorder = eventRecorder();
  const make = (onEvent?: (event: BalancerEvent) => void) => {
    const transport = createBalancedTransport({
      service: "svc",
      discovery: etcdDiscovery({ endpoints: [endpoint], auth, ...options }),
      transport: (peer) => createGrpcTransport({ baseUrl: peer.url }),
      onEvent,
    });
    open.push(transport);
    return transport;
  };
  return { recorder, observed: make(recorder.onEvent), logging: make() };
}

/** A cold read that fails: what both transports throw, every event, every console line. */
async function coldFailure(endpoint: string, options: Partial<EtcdDiscoveryOptions> = {}) {
  const { recorder, observed, logging } = transports(endpoint, options);
  const thrown = [await rejection(observed.peers()), await rejection(logging.peers())];
  return { thrown, said: { thrown, events: recorder.events, printed } };
}

/** A read that works, then a refresh or the watch that fails: the event of that failure, and all that was said. */
async function warmFailure(server: HostileEtcd, failing: Answer, options: Partial<EtcdDiscoveryOptions> = {}) {
  const { recorder, observed, logging } = transports(server.endpoint, { ttlMs: 0, ...options });
  const failed = recorder.next("discovery_failed");
  expect((await observed.peers()).map((p) => p.address)).toEqual([instance.address]);
  await logging.peers();
  server.answer = failing;
  await observed.peers(); // with ttlMs 0 the snapshot is stale at once: this starts a refresh
  const event = await failed;
  expect(event.serving).toBe(true);
  return { event, said: { events: recorder.events, printed } };
}

describe("errors from etcd quoting the password or the token", () => {
  it("a rejected password, with etcd's answer echoing it in every field and in a raw body", async () => {
    for (const body of [
      (r: ReceivedRequest) => ({ error: echo(r), message: echo(r), code: 3 }),
      (r: ReceivedRequest) => ({ error: { code: 3, message: echo(r), details: [echo(r)] } }),
      (r: ReceivedRequest) => echo(r),
    ]) {
      const server = await hostile(fakeEtcd({ "/v3/auth/authenticate": (r, response) => json(response, 401, body(r)) }));
      const { thrown, said } = await coldFailure(server.endpoint);
      expect(thrown[0]!.code).toBe(Code.Unauthenticated);
      expect(thrown[0]!.message).toContain('user "reader"');
      expect(leaks(said)).toEqual([]);
    }
  });

  it("a read refused with 4xx/5xx answers echoing the token and the request", async () => {
    for (const status of [400, 403, 500, 503]) {
      const server = await hostile(fakeEtcd({ "/v3/kv/range": (r, response) => json(response, status, { error: echo(r), message: echo(r), code: 2 }) }));
      const { thrown, said } = await coldFailure(server.endpoint);
      expect(thrown[0]!.message).toContain(server.endpoint);
      expect(leaks(said)).toEqual([]);
    }
  });

  it("a read answered with garbage that quotes the token (a JSON SyntaxError would quote it again)", async () => {
    const server = await hostile(fakeEtcd({ "/v3/kv/range": (r, response) => json(response, 200, `${token} ${password} ${echo(r)}`) }));
    const { thrown, said } = await coldFailure(server.endpoint);
    expect(thrown[0]!.code).toBe(Code.Internal);
    expect(thrown[0]!.message).toContain("not JSON");
    expect(leaks(said)).toEqual([]);
  });

  it("a huge answer full of the token", async () => {
    const server = await hostile(fakeEtcd({ "/v3/kv/range": (_, response) => json(response, 200, `{"x":"${token.repeat(10_000)}"}`) }));
    const { thrown, said } = await coldFailure(server.endpoint, { maxResponseBytes: 1024 });
    expect(thrown[0]!.code).toBe(Code.ResourceExhausted);
    expect(leaks(said)).toEqual([]);
  });

  it("a redirect to a URL holding the password", async () => {
    const server = await hostile((_, response) => response.writeHead(307, { location: `http://reader:${password}@127.0.0.1:1/${token}` }).end());
    const { thrown, said } = await coldFailure(server.endpoint);
    expect(thrown[0]!.message).toContain("redirect");
    expect(leaks(said)).toEqual([]);
  });

  it("a token that is not printable text (a fetch TypeError would quote the header value)", async () => {
    const server = await hostile(fakeEtcd({ "/v3/auth/authenticate": (_, response) => json(response, 200, { token: `${token}\n${password}` }) }));
    const { thrown, said } = await coldFailure(server.endpoint);
    expect(thrown[0]!.message).toContain("not printable");
    expect(leaks(said)).toEqual([]);
  });

  it("an expired token: authenticates again once, and the refusal quoting the token leaks nowhere", async () => {
    const server = await hostile(fakeEtcd({ "/v3/kv/range": (r, response) => json(response, 401, { message: `invalid auth token ${r.authorization}`, code: 16 }) }));
    const direct = await rejection(etcdDiscovery({ endpoints: [server.endpoint], auth }).load("svc", new AbortController().signal));
    expect(server.received.map((r) => r.path)).toEqual(["/v3/auth/authenticate", "/v3/kv/range", "/v3/auth/authenticate", "/v3/kv/range"]);
    const { said } = await coldFailure(server.endpoint);
    expect(leaks({ direct, said })).toEqual([]);
  });

  it("a refresh that fails after a good read (reported as an event and on the console)", async () => {
    const server = await hostile(fakeEtcd());
    const { event, said } = await warmFailure(server, fakeEtcd({ "/v3/kv/range": (r, response) => json(response, 500, { message: echo(r), code: 14 }) }));
    expect(event.error.message).toContain(server.endpoint);
    expect(leaks(said)).toEqual([]);
  });
});

describe("errors from an echo that encodes or cuts what it quotes", () => {
  /** Every 8-character piece of the secret, and all of it when shorter: none may show. */
  const pieces = (secret: string) => Array.from({ length: Math.max(1, secret.length - 7) }, (_, i) => secret.slice(i, i + 8));
  const shown = (error: unknown) => `${inspect(error, { depth: 10 })} ${JSON.stringify(error)}`;

  const echoes: [string, (body: string) => string][] = [
    ["as a JSON string", (body) => body],
    ["JSON in JSON", (body) => JSON.stringify(body)],
    ["with \\u escapes for all but letters and digits", (body) => body.replace(/[^A-Za-z0-9]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)],
    ["URL-encoded", (body) => new URLSearchParams(JSON.parse(body)).toString()],
    ["base64", (body) => `body=${Buffer.from(body).toString("base64")}`],
    ["cut by the proxy after 8 characters of the password", (body) => body.slice(0, body.indexOf("password") + 24)],
  ];
  for (const secret of ['pa"ss\\word-XYZ', "pw\ttab-XYZ1", "pw\u0001ctl-XYZ", "L".repeat(300)]) {
    for (const [how, encode] of echoes) {
      it(`withholds a password like ${JSON.stringify(secret).slice(0, 20)} echoed ${how}`, async () => {
        const server = await hostile((r, response) => json(response, 400, { message: encode(r.body), code: 3 }));
        const error = await rejection(etcdDiscovery({ endpoints: [server.endpoint], auth: { username: "reader", password: secret } }).load("svc", new AbortController().signal));
        expect(error.message).toContain("withheld");
        const text = shown(error);
        expect(pieces(secret).filter((piece) => text.includes(piece) || text.includes(JSON.stringify(piece).slice(1, -1)))).toEqual([]);
      });
    }
  }
});

describe("watch failures quoting the password or the token", () => {
  const failures: [string, Answer][] = [
    ["an error answer", (r, response) => json(response, 401, { message: echo(r), code: 16 })],
    ["an error line", (r, response) => response.writeHead(200).end(`${JSON.stringify({ error: { code: 2, message: echo(r) } })}\n`)],
    ["a cancel reason", (r, response) => response.writeHead(200).end(`${JSON.stringify({ result: { canceled: true, cancel_reason: echo(r) } })}\n`)],
    ["a line that is not JSON", (r, response) => response.writeHead(200).end(`${echo(r)}\n`)],
    ["a redirect", (_, response) => response.writeHead(308, { location: `http://reader:${password}@127.0.0.1:1/` }).end()],
  ];
  for (const [what, answer] of failures) {
    it(`${what}`, async () => {
      const server = await hostile(fakeEtcd({ "/v3/watch": answer }));
      const { event, said } = await warmFailure(server, server.answer, { watch: true, ttlMs: 60_000 });
      expect(event.error.message).toContain(server.endpoint);
      expect(leaks(said)).toEqual([]);
    });
  }
});

describe("failures below HTTP", () => {
  it("an unreachable endpoint", async () => {
    const { thrown, said } = await coldFailure(`http://127.0.0.1:${await freePort()}`);
    expect(thrown[0]!.message).toContain("ECONNREFUSED");
    expect(leaks(said)).toEqual([]);
  });

  it("an etcd that never answers (the abort reason is the cause)", async () => {
    const server = await hostile(() => {});
    const { thrown, said } = await coldFailure(server.endpoint, { requestTimeoutMs: 100 });
    expect(thrown[0]!.code).toBe(Code.DeadlineExceeded);
    expect(leaks(said)).toEqual([]);
  });

  it("a fetch whose TypeError quotes the request's header and body", async () => {
    const quoting: typeof fetch = async (_, init) => {
      const detail = new Error(`bad header ${JSON.stringify(init?.headers)} for ${String(init?.body)}`);
      throw new TypeError(`fetch failed: ${String(init?.body)}`, { cause: detail });
    };
    const server = await hostile(fakeEtcd());
    const { thrown, said } = await coldFailure(server.endpoint, { fetch: quoting });
    expect(thrown[0]!.code).toBe(Code.Unavailable);
    expect(leaks(said)).toEqual([]);
  });
});

describe("a custom fetch whose error carries the request (ky, ofetch)", () => {
  it("keeps as cause only a copy with name, message and code: no Request, no Headers, no token", async () => {
    const wrapped: typeof fetch = async (input, init) => {
      if (!String(input).endsWith("/v3/kv/range")) {
        return fetch(input, init);
      }
      const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET", headers: init?.headers });
      throw Object.assign(new TypeError("fetch failed", { cause: reset }), {
        request: new Request(input as string, init),
        options: { headers: new Headers(init?.headers) },
      });
    };
    const server = await hostile(fakeEtcd());
    const { thrown, said } = await coldFailure(server.endpoint, { fetch: wrapped });
    expect(thrown[0]!.message).toContain("ECONNRESET");
    expect(inspect(said, { depth: 20, showHidden: true })).not.toContain(token);
    expect(leaks(said)).toEqual([]);
    let cause = thrown[0]!.cause as Error & { cause: Error & { code: string } };
    while (cause.name === "ConnectError") {
      cause = cause.cause as typeof cause; // the balancer's and the gateway's errors, then fetch's
    }
    expect(cause).toMatchObject({ name: "TypeError", message: "fetch failed" });
    expect(cause.cause).toMatchObject({ message: "read ECONNRESET", code: "ECONNRESET" });
    expect(Object.getOwnPropertyNames(cause).sort()).toEqual(["cause", "message", "name", "stack"]);
  });
});

describe("registry entries quoting the password or the token", () => {
  it("fail the read: only an echo of the request could hold them, and entries reach events and the console", async () => {
    const b64 = (text: string) => Buffer.from(text).toString("base64");
    const echoing = (key: (r: ReceivedRequest) => string, value: (r: ReceivedRequest) => string): Answer => (r, response) =>
      json(response, 200, { header: { revision: "5" }, kvs: [{ key: b64(key(r)), value: b64(value(r)) }] });
    for (const answer of [
      echoing((r) => `/microservices/svc/${r.authorization}`, () => "{}"),
      echoing(() => "/microservices/svc/a", (r) => `not json ${r.authorization}`),
      echoing(() => "/microservices/svc/a", () => JSON.stringify({ id: "a", name: "svc", metadata: { p: `${password}"` }, endpoints: [] })),
    ]) {
      const server = await hostile(fakeEtcd({ "/v3/kv/range": answer }));
      const { thrown, said } = await coldFailure(server.endpoint);
      expect(thrown[0]!.code).toBe(Code.Internal);
      expect(thrown[0]!.message).toContain("quote the credentials");
      expect(leaks(said)).toEqual([]);
    }
  });
});

describe("endpoint URLs with credentials", () => {
  const shapes = [
    `http://reader:${password}@127.0.0.1:2379`,
    `http://reader:${password}#x@127.0.0.1:2379`,
    `http://reader:${password}/x@127.0.0.1:2379`,
    `http://reader:${password}?x@127.0.0.1:2379`,
    `http://reader:123#${password}@127.0.0.1:2379`,
    `http://reader:123/${password}@127.0.0.1:2379/v3`,
    `https://reader:${password}@[::1]:2379/`,
    `reader:${password}@127.0.0.1:2379`,
    `127.0.0.1:2379?password=${password}`,
    `http://${token}:${password}@@127.0.0.1:2379`,
  ];

  it("are refused by etcdDiscovery with a message that names the endpoint but not the password", () => {
    for (const endpoint of shapes) {
      let error: unknown;
      try {
        etcdDiscovery({ endpoints: [endpoint] });
      } catch (caught) {
        error = caught;
      }
      expect(error, endpoint).toMatchObject({ code: Code.InvalidArgument });
      expect(String((error as Error).message)).toContain("etcd endpoint 1");
      expect(leaks(error), endpoint).toEqual([]);
    }
  });

  it("are shown by redactUrl without user info, query or fragment", () => {
    for (const url of shapes) {
      expect(leaks(redactUrl(url)), url).toEqual([]);
    }
    expect(redactUrl(`http://reader:${password}#x@127.0.0.1:2379/v3`)).toBe("http://***@127.0.0.1:2379/v3");
    expect(redactUrl(`http://reader:123?${password}@host`)).toBe("http://***@host");
    expect(redactUrl(`reader:${password}@127.0.0.1:2379`)).toBe("(unparsable URL)");
    expect(redactUrl("grpc://10.0.0.7:9000?isSecure=true#x")).toBe("grpc://10.0.0.7:9000");
    expect(redactUrl("http://[::1]:2379/")).toBe("http://[::1]:2379");
  });
});

describe("a real etcd with authentication", () => {
  let etcd: EtcdServer | undefined;
  afterAll(async () => etcd?.stop());

  it("fails a wrong password while the right one has filled the cache, and the password leaks nowhere", async () => {
    etcd = await startEtcd();
    await registerKratos(etcd.endpoint, { id: "a", name: "svc", version: "v1", metadata: null, endpoints: [`grpc://${instance.address}`] });
    await etcdRequest(etcd.endpoint, "/v3/auth/user/add", { name: "root", password: "root-pw" });
    await etcdRequest(etcd.endpoint, "/v3/auth/user/grant", { user: "root", role: "root" });
    await etcdRequest(etcd.endpoint, "/v3/auth/user/add", { name: "reader", password });
    await etcdRequest(etcd.endpoint, "/v3/auth/user/grant", { user: "reader", role: "root" });
    await etcdRequest(etcd.endpoint, "/v3/auth/enable", {});

    const right = transports(etcd.endpoint);
    expect((await right.observed.peers()).map((p) => p.address)).toEqual([instance.address]);
    const wrong = await coldFailure(etcd.endpoint, { auth: { username: "reader", password: `${password}-wrong` } });
    expect(wrong.thrown[0]!.code).toBe(Code.Unauthenticated);
    expect(leaks({ ...wrong.said, right: right.recorder.events })).toEqual([]);
  });
});

describe("the Discovery key", () => {
  const key = (credentials: { username: string; password: string }) => etcdDiscovery({ endpoints: ["http://127.0.0.1:1"], auth: credentials }).key;

  it("is equal for equal credentials, differs for another password or user, and holds no password", () => {
    expect(key({ username: "reader", password })).toBe(key({ username: "reader", password }));
    expect(key({ username: "reader", password })).not.toBe(key({ username: "reader", password: `${password}!` }));
    expect(key({ username: "reader:x", password: "y" })).not.toBe(key({ username: "reader", password: "x:y" }));
    expect(leaks(key({ username: "reader", password }))).toEqual([]);
  });
});

describe("sha256Hex", () => {
  const hex = (text: string) => sha256Hex(new TextEncoder().encode(text));

  it("matches the FIPS 180-4 test vectors", () => {
    expect(hex("")).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect(hex("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")).toBe("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    expect(hex("a".repeat(1_000_000))).toBe("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  });

  it("matches node:crypto at every length around the block boundaries", () => {
    for (let length = 0; length <= 130; length++) {
      const data = new Uint8Array(length).map((_, i) => (i * 31 + length) & 0xff);
      expect(sha256Hex(data), `length ${length}`).toBe(createHash("sha256").update(data).digest("hex"));
    }
  });
});

describe("in a Cloudflare Worker (workerd via miniflare)", () => {
  it("computes the key in global scope, where getRandomValues is refused, and refuses redirects", async () => {
    const target = await hostile(fakeEtcd());
    const redirecting = await hostile((_, response) => response.writeHead(307, { location: `${target.endpoint}/v3/kv/range` }).end());
    const source = `
      import { etcdDiscovery } from "./src/index.js";
      const options = { endpoints: [${JSON.stringify(redirecting.endpoint)}], auth: { username: "reader", password: ${JSON.stringify(password)} } };
      const discovery = etcdDiscovery(options);
      export default {
        async fetch() {
          const error = await discovery.load("svc", new AbortController().signal).then(() => undefined, (e) => e);
          return Response.json({ sameKey: etcdDiscovery(options).key === discovery.key, code: error?.code, message: error?.message });
        },
      };`;
    const bundle = await build({
      stdin: { contents: source, resolveDir: fileURLToPath(new URL("..", import.meta.url)), loader: "ts" },
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      conditions: ["workerd", "worker", "browser"],
      logLevel: "silent",
    });
    const worker = new Miniflare({ modules: true, script: bundle.outputFiles[0]!.text, compatibilityDate: "2026-04-01" });
    try {
      const answer = (await (await worker.dispatchFetch("http://worker.local/")).json()) as { sameKey: boolean; code: Code; message: string };
      expect(answer.sameKey).toBe(true);
      expect(answer.code).toBe(Code.Unavailable);
      expect(answer.message).toMatch(/redirect .*refused/);
      expect(leaks(answer)).toEqual([]);
      expect(target.received).toEqual([]);
    } finally {
      await worker.dispose();
    }
  });
});
