// The connect-etcd-balancer command, run as a real process against a real etcd.
import { spawn, type ChildProcess } from "node:child_process";
import { copyFile, mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort, startEtcd, stopProcess, type EtcdServer } from "../support/etcd.js";
import { deleteKey, etcdRequest, putKey, registerKratos, type KratosInstance, type Registration } from "../support/registry.js";
import { formatChange, formatTable, instanceRows } from "../src/cli/table.js";
import type { Instance } from "../src/index.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const mainTs = join(root, "src/cli/main.ts");

let etcd: EtcdServer;
const registrations: Registration[] = [];
const children = new Set<ChildProcess>();

beforeAll(async () => {
  etcd = await startEtcd();
});

afterEach(async () => {
  await Promise.all([...children].map(stopProcess));
  await Promise.all(registrations.splice(0).map((r) => r.deregister()));
});

afterAll(async () => {
  await etcd?.stop();
});

function instance(name: string, id: string, port: number, metadata: Record<string, string> | null = null): KratosInstance {
  return { id, name, version: "v1", metadata, endpoints: [`grpc://127.0.0.1:${port}`] };
}

async function register(endpoint: string, ...instances: KratosInstance[]): Promise<Registration[]> {
  const added = await Promise.all(instances.map((i) => registerKratos(endpoint, i)));
  registrations.push(...added);
  return added;
}

async function currentRevision(endpoint: string): Promise<number> {
  const answer = await etcdRequest<{ header: { revision: string } }>(endpoint, "/v3/kv/range", { key: btoa("revision-probe") });
  return Number(answer.header.revision);
}

/** The test runner's environment without etcd settings that would leak into the CLI. */
const { ETCD_ENDPOINTS: _endpoints, ETCD_PASSWORD: _password, ...inheritedEnv } = process.env;

/** Starts the CLI from source; the test's afterEach stops it if the test does not. */
function spawnCli(args: readonly string[], env: Record<string, string> = {}, script = mainTs): ChildProcess & { stdout: Readable; stderr: Readable } {
  const child = spawn(process.execPath, [...(script === mainTs ? ["--import", "tsx"] : []), script, ...args], {
    cwd: root,
    env: { ...inheritedEnv, ETCD_ENDPOINTS: etcd.endpoint, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child as ChildProcess & { stdout: Readable; stderr: Readable };
}

interface Result {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Runs the CLI to its end. */
async function cli(args: readonly string[], env: Record<string, string> = {}, script = mainTs): Promise<Result> {
  const started = Date.now();
  const child = spawnCli(args, env, script);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { code, stdout, stderr, ms: Date.now() - started };
}

/** The lines a stream has written, awaited one match at a time. */
function lineReader(stream: Readable) {
  const lines: string[] = [];
  let read = 0;
  let wake = () => {};
  createInterface({ input: stream }).on("line", (line) => {
    lines.push(line);
    wake();
  });
  return {
    lines,
    /** The next unread line matching, waiting up to timeoutMs for it. */
    async next(pattern: RegExp, timeoutMs = 20_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const at = lines.findIndex((line, index) => index >= read && pattern.test(line));
        if (at >= 0) {
          read = at + 1;
          return lines[at]!;
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(`no line matching ${pattern} within ${timeoutMs} ms; got:\n${lines.join("\n")}`);
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => (clearTimeout(timer), resolve());
        });
      }
    },
  };
}

/** The ids in a pick table (first column "#", then ID). */
const pickedIds = (stdout: string) => stdout.trim().split("\n").slice(1).map((line) => line.split(/\s+/)[1]);

describe("table formatting", () => {
  const a: Instance = {
    key: "/microservices/user/a",
    id: "a",
    name: "user",
    version: "v2",
    metadata: { zone: "eu-1", weight: "300" },
    endpoints: [
      { scheme: "grpc", host: "10.0.0.7", port: 9000, address: "10.0.0.7:9000", url: "http://10.0.0.7:9000" },
      { scheme: "https", host: "::1", port: 8443, address: "[::1]:8443", url: "https://[::1]:8443" },
    ],
  };

  it("aligns columns and leaves no trailing spaces", () => {
    expect(formatTable(["ID", "ADDRESS", "NOTE"], [["a-long-id", "1:2", ""], ["b", "10.0.0.7:9000", "x"]])).toBe(
      ["ID         ADDRESS        NOTE", "a-long-id  1:2", "b          10.0.0.7:9000  x"].join("\n"),
    );
  });

  it("shows an instance with two endpoints as one block: the second row only adds the address", () => {
    expect(instanceRows(a)).toEqual([
      ["a", "10.0.0.7:9000", "grpc", "v2", "300", "weight=300,zone=eu-1"],
      ["", "[::1]:8443", "https", "", "", ""],
    ]);
  });

  it("writes a watch line with time, revision, change, id, endpoints and details", () => {
    expect(formatChange(new Date(0), 7, "added", a)).toBe(
      "1970-01-01T00:00:00.000Z revision 7 added a grpc://10.0.0.7:9000 https://[::1]:8443 (version v2, weight 300, weight=300,zone=eu-1)",
    );
  });
});

describe("ls", () => {
  it("prints a table of the instances and the etcd revision; malformed entries go to stderr with key and reason", async () => {
    await register(etcd.endpoint, instance("ls-svc", "a", 9001, { zone: "eu-1" }), instance("ls-svc", "b", 9002, { weight: "50" }));
    await putKey(etcd.endpoint, "/microservices/ls-svc/broken", "{not json");
    const revision = await currentRevision(etcd.endpoint);

    const { code, stdout, stderr } = await cli(["ls", "ls-svc"]);

    expect(code).toBe(0);
    const [summary, blank, header, ...rows] = stdout.trimEnd().split("\n");
    expect(summary).toBe(`2 instances of "ls-svc" at etcd revision ${revision}`);
    expect(blank).toBe("");
    expect(header!.split(/\s+/)).toEqual(["ID", "ADDRESS", "SCHEME", "VERSION", "WEIGHT", "METADATA"]);
    expect(rows.map((row) => row.split(/\s+/)).sort()).toEqual([
      ["a", "127.0.0.1:9001", "grpc", "v1", "100", "zone=eu-1"],
      ["b", "127.0.0.1:9002", "grpc", "v1", "50", "weight=50"],
    ]);
    expect(stderr).toMatch(/^skipped \/microservices\/ls-svc\/broken: value is not JSON/m);
  });

  it("--json prints { revision, instances, skipped } with the revision etcd reports", async () => {
    await register(etcd.endpoint, instance("json-svc", "a", 9001));
    await putKey(etcd.endpoint, "/microservices/json-svc/broken", "[]");
    const revision = await currentRevision(etcd.endpoint);

    const { code, stdout, stderr } = await cli(["ls", "json-svc", "--json"]);

    expect(code).toBe(0);
    expect(stderr).toBe("");
    const listed = JSON.parse(stdout) as { revision: number; instances: (Instance & { weight: number })[]; skipped: { key: string }[] };
    expect(listed.revision).toBe(revision);
    expect(listed.instances.map((i) => [i.id, i.endpoints[0]!.address, i.weight])).toEqual([["a", "127.0.0.1:9001", 100]]);
    expect(listed.skipped.map((s) => s.key)).toEqual(["/microservices/json-svc/broken"]);
  });

  it("reads the etcd-naming layout with --format and --namespace", async () => {
    await putKey(etcd.endpoint, "/grpc/naming-svc/127.0.0.1:9005", JSON.stringify({ Op: 0, Addr: "127.0.0.1:9005" }));
    const { code, stdout } = await cli(["ls", "naming-svc", "--format", "etcd-naming", "--namespace", "/grpc", "--json"]);
    expect(code).toBe(0);
    expect((JSON.parse(stdout) as { instances: Instance[] }).instances.map((i) => i.endpoints[0]!.address)).toEqual(["127.0.0.1:9005"]);
  });
});

describe("watch", () => {
  it("prints a line per instance added, changed or removed, and exits 0 on Ctrl-C", async () => {
    const [a] = await register(etcd.endpoint, instance("watch-svc", "a", 9001));
    const child = spawnCli(["watch", "watch-svc"]);
    const out = lineReader(child.stdout);
    const err = lineReader(child.stderr);
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));

    expect(await out.next(/ added a /)).toMatch(/^\S+Z revision \d+ added a grpc:\/\/127\.0\.0\.1:9001 \(version v1, weight 100\)$/);
    await err.next(/^watching "watch-svc" in etcd /);
    await register(etcd.endpoint, instance("watch-svc", "b", 9002));
    await out.next(/ added b grpc:\/\/127\.0\.0\.1:9002 /);
    await putKey(etcd.endpoint, "/microservices/watch-svc/b", JSON.stringify({ ...instance("watch-svc", "b", 9002), version: "v2" }));
    await out.next(/ changed b .*\(version v2,/);
    await deleteKey(etcd.endpoint, a!.key);
    await out.next(/ removed a grpc:\/\/127\.0\.0\.1:9001 /);

    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(err.lines.join("\n")).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("--json writes one object per change", async () => {
    await register(etcd.endpoint, instance("watch-json-svc", "a", 9001));
    const child = spawnCli(["watch", "watch-json-svc", "--json"]);
    const out = lineReader(child.stdout);
    const first = JSON.parse(await out.next(/"added"/)) as { revision: number; change: string; instance: Instance };
    expect(first.change).toBe("added");
    expect(first.instance.id).toBe("a");
    expect(first.revision).toBeGreaterThan(0);
  });

  it("keeps following through an etcd restart, saying on stderr while etcd is unreachable", { timeout: 60_000 }, async () => {
    const own = await startEtcd();
    try {
      await putKey(own.endpoint, "/microservices/restart-svc/a", JSON.stringify(instance("restart-svc", "a", 9001)));
      const child = spawnCli(["watch", "restart-svc"], { ETCD_ENDPOINTS: own.endpoint });
      const out = lineReader(child.stdout);
      const err = lineReader(child.stderr);
      await out.next(/ added a /);
      await err.next(/^watching /);

      await own.restart();
      await err.next(/still watching, retrying/);
      await putKey(own.endpoint, "/microservices/restart-svc/b", JSON.stringify(instance("restart-svc", "b", 9002)));
      await out.next(/ added b /, 40_000);
      await err.next(/etcd answers again/);
      expect(out.lines.filter((line) => / added a /.test(line))).toHaveLength(1);

      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      await Promise.all([...children].map(stopProcess));
      await own.stop();
    }
  });
});

describe("pick", () => {
  beforeAll(async () => {
    for (const i of [instance("pick-svc", "a", 9001, { weight: "300" }), instance("pick-svc", "b", 9002), instance("pick-svc", "c", 9003)]) {
      await putKey(etcd.endpoint, `/microservices/pick-svc/${i.id}`, JSON.stringify(i));
    }
  });

  it("round_robin cycles through every peer in a fixed order", async () => {
    const { code, stdout } = await cli(["pick", "pick-svc", "--balancer", "round_robin", "-n", "9"]);
    expect(code).toBe(0);
    const ids = pickedIds(stdout);
    expect(ids).toHaveLength(9);
    expect(new Set(ids.slice(0, 3))).toEqual(new Set(["a", "b", "c"]));
    expect(ids.slice(3, 6)).toEqual(ids.slice(0, 3));
    expect(ids.slice(6, 9)).toEqual(ids.slice(0, 3));
  });

  it("weighted_round_robin follows the weights", async () => {
    const { code, stdout } = await cli(["pick", "pick-svc", "-b", "weighted_round_robin", "-n", "500"]);
    expect(code).toBe(0);
    const ids = pickedIds(stdout);
    // weights 300 : 100 : 100; the cycle starts at a random point, which moves a count by a pick or two
    expect(Math.abs(ids.filter((id) => id === "a").length - 300)).toBeLessThanOrEqual(3);
    expect(Math.abs(ids.filter((id) => id === "b").length - 100)).toBeLessThanOrEqual(3);
  });

  it("ends quietly when its reader goes away (| head -1)", async () => {
    const child = spawnCli(["pick", "pick-svc", "-n", "10000"]);
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    await new Promise((resolve) => child.stdout.once("data", resolve));
    child.stdout.destroy(); // the pipe's reader is gone: the next writes fail with EPIPE
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("ring_hash with a key picks the same peer every time; without one it says the picks are random", async () => {
    const first = await cli(["pick", "pick-svc", "-b", "ring_hash", "--key", "user-42", "-n", "5"]);
    const again = await cli(["pick", "pick-svc", "-b", "ring_hash", "--key", "user-42", "-n", "5"]);
    expect(first.code).toBe(0);
    expect(new Set(pickedIds(first.stdout)).size).toBe(1);
    expect(pickedIds(again.stdout)).toEqual(pickedIds(first.stdout));

    const unkeyed = await cli(["pick", "pick-svc", "-b", "ring_hash", "-n", "3"]);
    expect(unkeyed.code).toBe(0);
    expect(unkeyed.stderr).toContain("no --key: ring_hash sends calls without a hash key to a random peer");
  });

  it("spreads over a subset of 25 by default, --subset N or off, and keeps to --zone while it is healthy", async () => {
    for (let i = 0; i < 40; i++) {
      const zoned = instance("fleet-svc", `i${i}`, 10_000 + i, { zone: i < 4 ? "az1" : "az2" });
      await putKey(etcd.endpoint, `/microservices/fleet-svc/${zoned.id}`, JSON.stringify(zoned));
    }
    const distinct = async (...flags: string[]) => {
      const { code, stdout } = await cli(["pick", "fleet-svc", "-n", "400", ...flags]);
      expect(code).toBe(0);
      return new Set(pickedIds(stdout));
    };
    expect((await distinct()).size).toBe(25);
    expect((await distinct("--subset", "5")).size).toBe(5);
    expect((await distinct("--subset", "off")).size).toBe(40);
    expect(await distinct("--zone", "az1")).toEqual(new Set(["i0", "i1", "i2", "i3"]));
    expect(await distinct("--zone", "eu-9", "--zone-key", "zone", "--subset", "off")).toHaveProperty("size", 40); // no local instance: all spill

    const bad = await cli(["pick", "fleet-svc", "--subset", "0"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--subset must be a whole number from 1 to');
  });

  it("fails when no instance has an endpoint of the wanted scheme", async () => {
    const { code, stderr } = await cli(["pick", "pick-svc", "--scheme", "https"]);
    expect(code).toBe(1);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("none registers an endpoint with scheme https");
  });
});

describe("help", () => {
  for (const command of ["ls", "watch", "pick"]) {
    it(`${command} --help prints the command's usage and exits 0`, async () => {
      const { code, stdout } = await cli([command, "--help"]);
      expect(code).toBe(0);
      expect(stdout).toMatch(new RegExp(`^Usage: connect-etcd-balancer ${command} <service>`));
    });
  }

  it("--help lists the commands, the global flags and the exit codes", async () => {
    const { code, stdout } = await cli(["--help"]);
    expect(code).toBe(0);
    for (const text of ["ls <service>", "watch <service>", "pick <service>", "--etcd URL", "$ETCD_PASSWORD", "Exit codes"]) {
      expect(stdout).toContain(text);
    }
  });
});

describe("errors: one line on stderr and an exit code", () => {
  it("exits 1 within seconds when etcd is unreachable", async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const result = await cli(["ls", "user-service", "--etcd", closed]);
    expect(result.code).toBe(1);
    expectOneLine(result, "ECONNREFUSED");
    expect(result.ms).toBeLessThan(10_000);
  });

  it("exits 1 for a service with no instances (ls and pick)", async () => {
    for (const command of ["ls", "pick"]) {
      const result = await cli([command, "nobody-here"]);
      expect(result.code).toBe(1);
      expectOneLine(result, 'no instances of "nobody-here" in etcd');
    }
  });

  it("exits 2 for an unknown command, an unknown flag, a flag of another command or a bad value", async () => {
    const cases: [string[], string][] = [
      [["frobnicate", "svc"], 'unknown command "frobnicate"'],
      [["ls", "svc", "--verbose"], "unknown option '--verbose'"],
      [["ls", "svc", "--balancer", "p2c"], "ls has no option --balancer"],
      [["pick", "svc", "-n", "zero"], '-n must be a whole number from 1 to 10000, got "zero"'],
      [["pick", "svc", "--balancer", "fastest"], '--balancer must be one of .* got "fastest"'],
      [["ls", "svc", "--format", "consul"], '--format must be one of kratos, etcd-naming, got "consul"'],
      [["ls"], "ls needs a service name"],
      [[], "missing command"],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((result, index) => {
      const [args, text] = cases[index]!;
      expect(result.code, args.join(" ")).toBe(2);
      expectOneLine(result, text);
    });
  });
});

describe("--user against an etcd with authentication", () => {
  it("reads with $ETCD_PASSWORD and never prints the password", { timeout: 60_000 }, async () => {
    const own = await startEtcd();
    try {
      await putKey(own.endpoint, "/microservices/secure-svc/a", JSON.stringify(instance("secure-svc", "a", 9001)));
      await etcdRequest(own.endpoint, "/v3/auth/user/add", { name: "root", password: "root-pw" });
      await etcdRequest(own.endpoint, "/v3/auth/user/grant", { user: "root", role: "root" });
      await etcdRequest(own.endpoint, "/v3/auth/enable", {});
      const env = { ETCD_ENDPOINTS: own.endpoint };

      const ok = await cli(["ls", "secure-svc", "--user", "root", "--json"], { ...env, ETCD_PASSWORD: "root-pw" });
      expect(ok.code).toBe(0);
      expect((JSON.parse(ok.stdout) as { instances: Instance[] }).instances.map((i) => i.id)).toEqual(["a"]);

      const wrong = await cli(["ls", "secure-svc", "--user", "root"], { ...env, ETCD_PASSWORD: "wrong-secret-pw" });
      expect(wrong.code).toBe(1);
      expectOneLine(wrong, 'user "root"');
      expect(wrong.stdout + wrong.stderr).not.toContain("wrong-secret-pw");

      const anonymous = await cli(["ls", "secure-svc"], env);
      expect(anonymous.code).toBe(1);

      const missing = await cli(["ls", "secure-svc", "--user", "root"], env);
      expect(missing.code).toBe(2);
      expectOneLine(missing, "--user root needs the password in \\$ETCD_PASSWORD");
    } finally {
      await own.stop();
    }
  });
});

/** The error is one line naming the program, matching `pattern`. */
function expectOneLine({ stderr }: Result, pattern: string): void {
  expect(stderr.trim().split("\n")).toHaveLength(1);
  expect(stderr).toMatch(new RegExp(`^connect-etcd-balancer: .*${pattern}`));
}

describe("the built bin", () => {
  const packageRoot = join(root, ".cache", `cli-package-${process.pid}`);

  afterAll(async () => {
    await rm(packageRoot, { recursive: true, force: true });
  });

  it("is what package.json's bin names, keeps its shebang and runs with node", { timeout: 120_000 }, async () => {
    // A package root as npm installs it: package.json next to dist/ (node_modules are found further up).
    await mkdir(packageRoot, { recursive: true });
    await copyFile(join(root, "package.json"), join(packageRoot, "package.json"));
    const tsc = spawn(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json", "--outDir", join(packageRoot, "dist")], {
      cwd: root,
      stdio: "ignore",
    });
    // Type errors are the typecheck's to report; this test needs the emitted files only.
    await new Promise((resolve) => tsc.once("exit", resolve));

    const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as { version: string; bin: Record<string, string> };
    const bin = join(packageRoot, manifest.bin["connect-etcd-balancer"]!);
    expect((await readFile(bin, "utf8")).split("\n")[0]).toBe("#!/usr/bin/env node");

    const help = await cli(["--help"], {}, bin);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: connect-etcd-balancer <command>/);
    expect((await cli(["--version"], {}, bin)).stdout.trim()).toBe(manifest.version);
  });
});
