// Start-up cost: how long a fresh `node` process takes to import an entry
// point, measured side by side: spawns of each candidate interleaved, the
// median wall time of each, minus the median of a bare `node -e ""`.
// The package is measured in its built form (dist/, as published: `npm run
// build`, i.e. tsc, unbundled), imported through its own exports map from the
// repository root — `import("connect-etcd-balancer/node")` resolves exactly as
// it does for a user of the package. Entries named "bundled" are the same
// source bundled by esbuild into one file (dependencies left external), to
// show what the number of modules costs.
import { spawnSync } from "node:child_process";
import { buildSync } from "esbuild";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

export interface StartupRow {
  readonly name: string;
  /** Median wall time of the whole process, spawn to exit, in ms. */
  readonly wallMs: number;
  /** wallMs minus the baseline's. */
  readonly addedMs: number;
  /** Median time of the import() itself, measured inside the process. */
  readonly importMs: number;
  readonly minAddedMs: number;
  readonly maxAddedMs: number;
}

export interface StartupResult {
  readonly baselineMs: number;
  readonly rows: readonly StartupRow[];
  readonly spawns: number;
  readonly built: string;
}

/** Runs `npm run build` (tsc -p tsconfig.build.json); returns a problem, if any. */
function buildPackage(): string | undefined {
  const tsc = `${root}node_modules/typescript/bin/tsc`;
  const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: root, encoding: "utf8" });
  if (result.status !== 0) {
    const first = `${result.stdout}${result.stderr}`.trim().split("\n").slice(0, 3).join(" | ");
    return existsSync(`${root}dist/node/index.js`)
      ? `tsc reported errors (dist/ was still written): ${first}`
      : `tsc failed and dist/node/index.js is missing: ${first}`;
  }
  return undefined;
}

function spawnOnce(script: string): { wallMs: number; importMs: number } {
  const start = performance.now();
  const result = spawnSync(process.execPath, ["-e", script], { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const wallMs = performance.now() - start;
  if (result.status !== 0) {
    throw new Error(`node -e ${JSON.stringify(script)} exited with ${result.status}: ${result.stderr.trim().split("\n").slice(0, 4).join(" | ")}`);
  }
  return { wallMs, importMs: result.stdout === "" ? 0 : Number(result.stdout) };
}

/** Imports the specifiers one after the other and prints how long that took. */
/** An entry to import: a package specifier, several imported in turn, or a source file to bundle first. */
export type StartupEntry = string | { readonly name: string; readonly specifiers?: readonly string[]; readonly bundle?: string };

/** Bundles `entry` (relative to the repository root) into .cache/startup/; returns the specifier that imports it. */
function bundle(entry: string): string {
  const outfile = `.cache/startup/${entry.replace(/[/.]/g, "_")}.mjs`;
  buildSync({ absWorkingDir: root, entryPoints: [entry], bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", logLevel: "warning", outfile });
  return `./${outfile}`;
}

const importScript = (specifiers: readonly string[]) =>
  `const t=performance.now();${JSON.stringify(specifiers)}.reduce((p,s)=>p.then(()=>import(s)),Promise.resolve()).then(()=>process.stdout.write(String(performance.now()-t)))`;

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

/**
 * Builds dist/, checks that the self-reference resolves, then spawns each
 * candidate `spawns` times, interleaved (one of each per turn, the order
 * rotated each turn), after one discarded warm-up spawn each.
 */
export function measureStartup(entries: readonly StartupEntry[], { spawns = 15 } = {}): StartupResult {
  const problem = buildPackage();
  if (problem !== undefined) console.log(`  ! ${problem}`);
  const candidates = [{ name: 'node -e "" (baseline)', script: "" }, ...entries.map((e) =>
      typeof e === "string"
        ? { name: e, script: importScript([e]) }
        : { name: e.name, script: importScript(e.bundle !== undefined ? [bundle(e.bundle)] : (e.specifiers ?? [])) },
    ),
  ];
  for (const candidate of candidates) spawnOnce(candidate.script); // warm-up (file cache), and fails early if an import does not resolve
  const samples = candidates.map(() => ({ wall: [] as number[], imports: [] as number[] }));
  for (let turn = 0; turn < spawns; turn++) {
    for (let i = 0; i < candidates.length; i++) {
      const index = (i + turn) % candidates.length;
      const { wallMs, importMs } = spawnOnce(candidates[index]!.script);
      samples[index]!.wall.push(wallMs);
      samples[index]!.imports.push(importMs);
    }
  }
  const baselineMs = median(samples[0]!.wall);
  const rows = candidates.slice(1).map((candidate, i): StartupRow => {
    const { wall, imports } = samples[i + 1]!;
    const wallMs = median(wall);
    return {
      name: candidate.name,
      wallMs,
      addedMs: wallMs - baselineMs,
      importMs: median(imports),
      minAddedMs: Math.min(...wall) - baselineMs,
      maxAddedMs: Math.max(...wall) - baselineMs,
    };
  });
  return { baselineMs, rows, spawns, built: problem ?? "dist/ built by tsc -p tsconfig.build.json" };
}

export function printStartup(result: StartupResult): void {
  console.log(`  ${"".padEnd(42)} ${"process ms".padStart(10)} ${"added ms".padStart(9)} ${"import() ms".padStart(12)}   added, min–max`);
  console.log(`  ${'node -e "" (baseline)'.padEnd(42)} ${result.baselineMs.toFixed(1).padStart(10)}`);
  for (const row of result.rows) {
    console.log(
      `  ${row.name.padEnd(42)} ${row.wallMs.toFixed(1).padStart(10)} ${row.addedMs.toFixed(1).padStart(9)} ${row.importMs.toFixed(1).padStart(12)}   ${row.minAddedMs.toFixed(1)}–${row.maxAddedMs.toFixed(1)}`,
    );
  }
}
