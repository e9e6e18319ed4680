import path from "node:path";
import type { NextConfig } from "next";

// The repository root: this example imports the library's source (../../src)
// and the generated client (../../gen), which lie outside the app directory.
// An app that installs connect-etcd-balancer from npm needs none of this.
const repoRoot = path.join(__dirname, "../..");

const nextConfig: NextConfig = {
  turbopack: { root: repoRoot },
  outputFileTracingRoot: repoRoot,
};

export default nextConfig;
