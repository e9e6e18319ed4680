// Bundles the universal entry as an edge runtime would, for the bundle test
// and the size report of `npm run bench`.
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

export interface UniversalBundle {
  readonly code: string;
  /** Every module the bundle still imports: only the peer dependencies may remain. */
  readonly imports: readonly string[];
  readonly minifiedBytes: number;
  readonly gzipBytes: number;
}

const root = fileURLToPath(new URL("..", import.meta.url));

/** `entry` relative to the repository root, e.g. "src/index.ts". */
export async function bundleUniversalEntry(entry: string): Promise<UniversalBundle> {
  const result = await build({
    absWorkingDir: root,
    entryPoints: [entry],
    bundle: true,
    minify: true,
    write: false,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    external: ["@connectrpc/*", "@bufbuild/*"],
    metafile: true,
    logLevel: "silent",
  });
  const code = result.outputFiles[0]!.text;
  const imports = Object.values(result.metafile.outputs).flatMap((output) => output.imports.map((i) => i.path));
  return { code, imports, minifiedBytes: Buffer.byteLength(code), gzipBytes: gzipSync(code).length };
}
