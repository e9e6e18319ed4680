// Throwaway certificates for the TLS (grpcs) tests: a CA, and a server
// certificate signed by it for the DNS name "echo.test" and the loopback IPs.
import { execFile } from "node:child_process";
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
