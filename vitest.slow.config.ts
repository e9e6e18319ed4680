import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/slow/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 600_000,
    pool: "forks",
    // one file at a time: the tail test (p2c-noise) measures latencies, which another file's load would skew
    fileParallelism: false,
  },
});
