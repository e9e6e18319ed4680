import { Code, ConnectError } from "@connectrpc/connect";
import { EtcdAnswerError } from "./etcd-errors.js";
import { postJson, smallAnswer, type RequestSettings } from "./etcd-request.js";

/** etcd credentials; the password is sent to etcd only, never logged or put in an error. */
export interface EtcdAuth {
  /** The etcd user. */
  readonly username: string;
  /** Sent to etcd's /v3/auth/authenticate only; never in an error, event or log, nor kept in module state. */
  readonly password: string;
}

/** The tokens of one gateway, one per endpoint: simple tokens are local to the etcd member that issued them. */
export interface Tokens {
  /** The endpoint's token, authenticating once for concurrent requests; undefined without auth (or when etcd has it off). */
  get(endpoint: string, signal: AbortSignal): Promise<string | undefined>;
  /** Forgets a token etcd no longer takes: the next get() authenticates again. */
  drop(endpoint: string): void;
  /** What no error may quote: the password. */
  readonly secrets: readonly string[];
}

const grpcInvalidArgument = 3;
const grpcFailedPrecondition = 9;
const grpcUnauthenticated = 16;

/** Tokens are printable ASCII (simple tokens, JWTs); anything else could not even be sent as a header. */
const tokenPattern = /^[\x21-\x7e]{1,4096}$/;

export function createTokens(auth: EtcdAuth | undefined, settings: RequestSettings): Tokens {
  const tokens = new Map<string, Promise<string | undefined>>();
  const secrets = auth === undefined ? [] : [auth.password];
  return {
    secrets,
    get(endpoint, signal) {
      if (auth === undefined) {
        return Promise.resolve(undefined);
      }
      let pending = tokens.get(endpoint);
      if (pending === undefined) {
        pending = authenticate(settings, endpoint, auth, signal);
        tokens.set(endpoint, pending);
        pending.catch(() => tokens.delete(endpoint));
      }
      return pending;
    },
    drop: (endpoint) => void tokens.delete(endpoint),
  };
}

async function authenticate(settings: RequestSettings, endpoint: string, { username, password }: EtcdAuth, signal: AbortSignal): Promise<string | undefined> {
  let answer: unknown;
  try {
    const request = { endpoint, path: "/v3/auth/authenticate", body: { name: username, password }, secrets: [password] };
    answer = await postJson(settings, request, smallAnswer, signal, (json) => json);
  } catch (error) {
    if (error instanceof EtcdAnswerError && error.grpcCode === grpcFailedPrecondition) {
      return undefined; // authentication is not enabled on this cluster: no token needed
    }
    if (error instanceof EtcdAnswerError && refusedCredentials(error)) {
      throw new ConnectError(`etcd ${endpoint} rejected user "${username}": ${error.message}`, Code.Unauthenticated);
    }
    if (error instanceof EtcdAnswerError) {
      // 5xx, "leader changed", a proxy's error page: this endpoint is unwell, the next one may log in
      throw new ConnectError(`etcd ${endpoint} could not authenticate user "${username}": ${error.message}`, Code.Unavailable);
    }
    throw error;
  }
  const token = (answer as { token?: unknown } | null)?.token;
  if (token === undefined || token === "") {
    return undefined;
  }
  if (typeof token !== "string" || !tokenPattern.test(token)) {
    throw new ConnectError(`etcd ${endpoint} answered the authentication of user "${username}" with a token that is not printable text`, Code.Internal);
  }
  return token;
}

/**
 * Whether etcd refused the user or password themselves, which every member
 * would repeat: etcd answers a wrong one with 400, code 3 (InvalidArgument)
 * "etcdserver: authentication failed, invalid user ID or password". Anything
 * else is this endpoint's trouble, not the credentials'.
 */
function refusedCredentials(error: EtcdAnswerError): boolean {
  return error.status === 401 || error.grpcCode === grpcUnauthenticated || (error.grpcCode === grpcInvalidArgument && error.known === "authFailed");
}
