// Throwaway certificates for the TLS (grpcs) tests: a CA, and a server
// certificate signed by it for the DNS name "echo.test" and the loopback IPs.
import { execFile } from "node:child_process";
import * as https from "node:https";
import { Readable } from "node:stream";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TestCertificates {
  /** PEM of the CA that signed `cert`; give it to the client as `ca`. */
  readonly ca: string;
  /** PEM of the server's private key. */
  readonly key: string;
  /** PEM of the server certificate: DNS echo.test, IP 127.0.0.1 and ::1. */
  readonly cert: string;
}

/** Generates a CA and a server certificate with the openssl CLI, in a temporary directory removed afterwards. */
export async function makeTestCertificates(): Promise<TestCertificates> {
  const dir = await mkdtemp(join(tmpdir(), "echo-tls-"));
  const path = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => run("openssl", args, { cwd: dir });
  try {
    await openssl(
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", path("ca.key"), "-out", path("ca.pem"), "-days", "2", "-subj", "/CN=echo test CA",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    );
    await openssl(
      "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", path("server.key"), "-out", path("server.csr"), "-subj", "/CN=echo.test",
    );
    await writeFile(
      path("server.ext"),
      [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth",
        "subjectAltName=DNS:echo.test,IP:127.0.0.1,IP:::1",
      ].join("\n"),
    );
    await openssl(
      "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
      "-CAcreateserial", "-out", path("server.pem"), "-days", "2", "-extfile", path("server.ext"),
    );
    const [ca, key, cert] = await Promise.all(["ca.pem", "server.key", "server.pem"].map((name) => readFile(path(name), "utf8")));
    return { ca: ca!, key: key!, cert: cert! };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A fetch that trusts `ca` (PEM), built on node:https: what etcdDiscovery's
 * `fetch` option needs to reach an etcd whose certificate a private CA signed.
 * Node's global fetch takes no `ca`; this is the dependency-free alternative
 * to undici's `Agent({ connect: { ca } })` as a `dispatcher`. Supports what the
 * library uses: method, headers, a string body, signal, and a streamed response.
 */
export function httpsFetch(options: { ca: string | Buffer; cert?: string; key?: string }): typeof globalThis.fetch {
  const agent = new https.Agent({ ca: options.ca, cert: options.cert, key: options.key, keepAlive: true });
  return ((input: RequestInfo | URL, init: RequestInit = {}) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const signal = init.signal ?? undefined;
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const headers: Record<string, string> = {};
      new Headers(init.headers).forEach((value, name) => (headers[name] = value));
      const body = init.body ?? undefined;
      if (body !== undefined && typeof body !== "string") {
        reject(new TypeError("httpsFetch sends string bodies only"));
        return;
      }
      const request = https.request(url, { method: init.method ?? "GET", headers, agent }, (response) => {
        const responseHeaders = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          for (const item of Array.isArray(value) ? value : value === undefined ? [] : [value]) {
            responseHeaders.append(name, item);
          }
        }
        const status = response.statusCode ?? 0;
        const stream = status === 204 || status === 304 ? null : (Readable.toWeb(response) as ReadableStream<Uint8Array>);
        resolve(new Response(stream, { status, statusText: response.statusMessage, headers: responseHeaders }));
      });
      const onAbort = () => request.destroy(signal?.reason instanceof Error ? signal.reason : new Error("aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      request.once("close", () => signal?.removeEventListener("abort", onAbort));
      // Network failures reject like fetch does: a TypeError with the cause.
      request.once("error", (error) => reject(signal?.aborted ? signal.reason : new TypeError("fetch failed", { cause: error })));
      request.end(body);
    })) as typeof globalThis.fetch;
}
