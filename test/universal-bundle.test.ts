// The universal entries must run where there is no Node: bundled for a
// neutral platform, they may import nothing but the Connect and protobuf peers.
import { builtinModules } from "node:module";
import { describe, expect, it } from "vitest";
import { bundleUniversalEntry } from "../support/bundle.js";

const nodeBuiltins = new Set(builtinModules.flatMap((name) => [name, `node:${name}`]));

describe("the universal entries", () => {
  for (const entry of ["src/index.ts", "src/fetch/index.ts"]) {
    it(`${entry} bundles without any Node builtin`, async () => {
      const bundle = await bundleUniversalEntry(entry);
      expect(bundle.imports.filter((path) => nodeBuiltins.has(path) || path.startsWith("node:"))).toEqual([]);
      expect(bundle.imports.every((path) => /^@(connectrpc|bufbuild)\//.test(path))).toBe(true);
      expect(bundle.code).not.toMatch(/\brequire\(|process\.env|\bBuffer\b/);
    });
  }

});
