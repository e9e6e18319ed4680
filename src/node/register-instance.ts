import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3 } from "etcd3";
import { redactUrl } from "../redact.js";
import { kratosValue } from "./etcd3/kratos-value.js";
import { Registrar, type RegistrationEvent } from "./etcd3/registrar.js";
import { validateRegistration } from "./etcd3/validate-registration.js";

export type { RegistrationEvent } from "./etcd3/registrar.js";

export interface RegisterInstanceOptions {
  /**
   * Where to register: an `Etcd3` client from the `etcd3` package, configured
   * as your app already does (several hosts, TLS, auth; it stays open after
   * deregister()), or etcd client URLs such as ["http://127.0.0.1:2379"], for
   * which the registration makes its own plain client and closes it on
   * deregister().
   */
  readonly etcd: Etcd3 | readonly string[];
  /** The service name callers look up, e.g. "user-service": non-empty, without "/". */
  readonly name: string;
  /** This instance's id, the last key segment (default: a random UUID, like kratos' default): non-empty, without "/". */
  readonly id?: string;
  /** The version callers see as peer.version (default "", kratos' default). */
  readonly version?: string;
  /**
   * Free-form metadata callers see as peer.metadata; `weight` feeds the
   * weighted balancers (default: none, written as null as kratos writes it).
   */
  readonly metadata?: Readonly<Record<string, string>>;
  /**
   * Where callers reach this instance, as kratos writes them:
   * ["grpc://10.0.0.7:9000"], "grpcs://" with TLS, "http(s)://" for
   * Connect/gRPC-web over fetch. Register an address callers can dial, not
   * 0.0.0.0 or localhost.
   */
  readonly endpoints: readonly string[];
  /** Key namespace (default "/microservices", kratos' default); the key is `<namespace>/<name>/<id>`. */
  readonly namespace?: string;
  /**
   * Lease TTL in whole seconds (default 15, kratos' default): how long a
   * crashed instance stays listed. The lease is renewed every third of it.
   */
  readonly ttlSeconds?: number;
  /**
   * Hears what happens after registerInstance() resolved: a lost lease, failed
   * and successful re-registrations (default: nothing is reported). Errors
   * carry etcd's messages, never credentials.
   */
  readonly onEvent?: (event: RegistrationEvent) => void;
}

/** A live registration: the key stays in etcd, re-written whenever its lease is lost, until deregister(). */
export interface Registration {
  /** The etcd key, `<namespace>/<name>/<id>`. */
  readonly key: string;
  /** The instance id (the generated UUID when none was given). */
  readonly id: string;
  /**
   * Deletes the key, revokes the lease and stops every timer and stream it
   * holds (and closes the client it made from URLs), so the process can
   * exit. Safe to call more than once.
   */
  deregister(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const defaultNamespace = "/microservices";
const defaultTtlSeconds = 15;

/**
 * Registers a TypeScript server in etcd exactly as go-kratos'
 * contrib/registry/etcd does, so kratos clients, etcdDiscovery() and
 * etcd3Discovery() all find it. Resolves once the key is written; rejects
 * (and leaves nothing behind that keeps the process running) when the options
 * are invalid or etcd cannot be written within 5 s.
 *
 * One limit, of @grpc/grpc-js under etcd3 rather than of ours: against an etcd
 * that accepts connections but never answers, a connection still waiting for
 * the server's HTTP/2 handshake outlives the closed client. grpc-js has no
 * handshake timeout and does not cancel a connection attempt when its channel
 * closes, and etcd3 does not expose the socket. That socket is unref'd, so the
 * process can still exit (about a second after the rejection, when etcd3's
 * close() is done); it goes when the server closes it.
 */
export async function registerInstance(options: RegisterInstanceOptions): Promise<Registration> {
  const valid = validateRegistration(options);
  const id = options.id ?? randomUUID();
  const namespace = options.namespace ?? defaultNamespace;
  const key = `${namespace}/${options.name}/${id}`;
  const value = kratosValue({ id, name: options.name, version: options.version ?? "", metadata: options.metadata, endpoints: options.endpoints });
  const owned = Array.isArray(valid.etcd) ? await clientFor(valid.etcd) : undefined;
  const registrar = new Registrar({
    client: owned ?? (options.etcd as Etcd3),
    key,
    value,
    ttlSeconds: options.ttlSeconds ?? defaultTtlSeconds,
    onEvent: options.onEvent ?? (() => {}),
  });
  try {
    await registrar.register();
  } catch (error) {
    owned?.close();
    throw new ConnectError(`cannot register ${key}: ${error instanceof Error ? error.message : String(error)}`, Code.Unavailable, undefined, undefined, error);
  }
  const deregister = async () => {
    try {
      await registrar.stop();
    } finally {
      owned?.close();
    }
  };
  return { key, id, deregister, [Symbol.asyncDispose]: deregister };
}

/** A client of our own for plain URLs; etcd3 is an optional peer dependency, so it is loaded only here. */
async function clientFor(endpoints: readonly string[]): Promise<Etcd3> {
  let etcd3: typeof import("etcd3");
  try {
    etcd3 = await import("etcd3");
  } catch (error) {
    throw new ConnectError(
      'registerInstance needs the "etcd3" package to talk to etcd: npm install etcd3',
      Code.FailedPrecondition,
      undefined,
      undefined,
      error,
    );
  }
  try {
    // Deadlines for unary calls: etcd3 ignores dialTimeout.
    return new etcd3.Etcd3({ hosts: [...endpoints], defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + 5_000 }) });
  } catch (error) {
    const shown = endpoints.map(redactUrl).join(", ");
    throw new ConnectError(`registerInstance cannot use etcd ${shown}: ${error instanceof Error ? error.message : String(error)}`, Code.InvalidArgument);
  }
}
