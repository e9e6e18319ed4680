import { Code, ConnectError } from "@connectrpc/connect";
import type { Etcd3, Lease } from "etcd3";

/** What happens to a registration after registerInstance() resolved, for logs and metrics. */
export type RegistrationEvent =
  /** The key was written under a new lease; `again` is false for the first time. */
  | { readonly type: "registered"; readonly key: string; readonly leaseId: string; readonly again: boolean }
  /** The lease is gone (revoked, expired, etcd wiped, a long partition): the key is being written again. */
  | { readonly type: "lease_lost"; readonly key: string; readonly error: Error }
  /** Writing the key again failed; the next try is in `retryInMs`. Tries never stop before deregister(). */
  | { readonly type: "register_failed"; readonly key: string; readonly error: Error; readonly retryInMs: number };

export interface RegistrarOptions {
  readonly client: Etcd3;
  readonly key: string;
  readonly value: string;
  readonly ttlSeconds: number;
  readonly onEvent: (event: RegistrationEvent) => void;
}

/** Deadline of each etcd call: etcd3 ignores dialTimeout, so an unreachable etcd would hang a call forever. */
const callTimeoutMs = 5_000;
const firstRetryMs = 500;
const maxRetryMs = 30_000;

const deadline = () => ({ deadline: Date.now() + callTimeoutMs });

/**
 * Keeps one key in etcd under a lease kept alive by etcd3, and writes it again
 * under a new lease whenever that lease is lost, with capped, jittered backoff
 * and without ever giving up (kratos stops after 5 tries: kratos #3883).
 */
export class Registrar {
  /** The lease the key is attached to now; undefined while it is being written again. */
  private lease: Lease | undefined;
  /** When etcd last confirmed the lease. */
  private aliveAt = 0;
  /** How many times the key was written. */
  private writes = 0;
  private attempt: Promise<void> | undefined;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private failures = 0;
  private stopping: Promise<void> | undefined;

  constructor(private readonly options: RegistrarOptions) {}

  /** Writes the key under a new lease; rejects when that fails. */
  async register(): Promise<void> {
    const { client, key, value, ttlSeconds } = this.options;
    const lease = client.lease(ttlSeconds, deadline());
    lease.on("lost", (error: Error) => this.lost(lease, error));
    lease.on("keepaliveSucceeded", () => lease === this.lease && (this.aliveAt = Date.now()));
    try {
      await lease.put(key).value(value).options(deadline()).exec();
      if (lease.revoked()) {
        throw new Error("the lease was lost while the key was written");
      }
    } catch (error) {
      lease.release(); // nothing is attached to it: let it expire
      throw error;
    }
    this.lease = lease;
    this.aliveAt = Date.now();
    this.failures = 0;
    this.watchdog ??= setInterval(() => this.checkAlive(), ttlSeconds * 1_000);
    this.emit({ type: "registered", key, leaseId: await lease.grant(), again: this.writes++ > 0 });
  }

  /** Stops keeping the key, deletes it and revokes its lease; rejects when etcd could not be told. */
  stop(): Promise<void> {
    this.stopping ??= this.deleteAndRevoke();
    return this.stopping;
  }

  private async deleteAndRevoke(): Promise<void> {
    clearTimeout(this.retry);
    await this.attempt; // a write in flight must not land after the delete
    clearInterval(this.watchdog);
    const lease = this.lease;
    this.lease = undefined;
    const { client, key } = this.options;
    // Deleting first takes the instance out of callers' views at once, as kratos' Deregister does.
    const results = await Promise.allSettled([client.delete().key(key).options(deadline()).exec(), lease?.revoke(deadline())]);
    const failed = results.find((result): result is PromiseRejectedResult => result.status === "rejected");
    if (failed !== undefined) {
      const reason = failed.reason instanceof Error ? failed.reason.message : String(failed.reason);
      throw new ConnectError(
        `cannot deregister ${key} (${reason}); it disappears within ${this.options.ttlSeconds} s, when its lease expires`,
        Code.Unavailable,
        undefined,
        undefined,
        failed.reason,
      );
    }
  }

  /** etcd3 notices a lost lease by itself, unless a reconnect hangs (e.g. re-authenticating without a deadline). */
  private checkAlive(): void {
    const lease = this.lease;
    if (lease !== undefined && Date.now() - this.aliveAt > 2 * this.options.ttlSeconds * 1_000) {
      lease.release();
      this.lost(lease, new Error(`etcd confirmed no keepalive for ${2 * this.options.ttlSeconds} s`));
    }
  }

  private lost(lease: Lease, error: Error): void {
    if (lease !== this.lease || this.stopping !== undefined) {
      return; // a lease given up on, or one whose write is still failing
    }
    this.lease = undefined;
    this.emit({ type: "lease_lost", key: this.options.key, error });
    this.scheduleRetry(retryDelayMs(0));
  }

  private scheduleRetry(delayMs: number): void {
    this.retry = setTimeout(() => {
      this.attempt = this.register().catch((error: unknown) => {
        if (this.stopping !== undefined) {
          return;
        }
        const retryInMs = retryDelayMs(++this.failures);
        this.emit({ type: "register_failed", key: this.options.key, error: asError(error), retryInMs });
        this.scheduleRetry(retryInMs);
      });
    }, delayMs);
  }

  private emit(event: RegistrationEvent): void {
    try {
      this.options.onEvent(event);
    } catch {
      // a throwing listener must not stop the registration
    }
  }
}

/** 500 ms doubling per failure up to 30 s, each drawn from its upper half so that a fleet does not retry in step. */
function retryDelayMs(failures: number): number {
  const ceiling = Math.min(maxRetryMs, firstRetryMs * 2 ** failures);
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
