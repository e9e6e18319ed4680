import { ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import type { BalancerEvent } from "../src/index.js";

/** Records a transport's events and lets a test await the next one of a kind. */
export function eventRecorder() {
  const events: BalancerEvent[] = [];
  const waiters: { type: BalancerEvent["type"]; resolve: (event: BalancerEvent) => void }[] = [];
  return {
    events,
    onEvent(event: BalancerEvent) {
      events.push(event);
      for (const waiter of waiters.filter((w) => w.type === event.type)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(event);
      }
    },
    next<T extends BalancerEvent["type"]>(type: T): Promise<Extract<BalancerEvent, { type: T }>> {
      return new Promise((resolve) => waiters.push({ type, resolve: resolve as (event: BalancerEvent) => void }));
    },
  };
}

/** The ConnectError a promise rejects with; fails the test when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    return error as ConnectError;
  }
  throw new Error("expected the call to fail, but it succeeded");
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function countBy<T>(items: readonly T[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) {
    counts[String(item)] = (counts[String(item)] ?? 0) + 1;
  }
  return counts;
}

/**
 * Resolves once `condition()` holds, checking every `intervalMs`; fails with
 * `what` (or the condition's source) after `timeoutMs`. For waiting on a
 * server-side effect that has no event of its own.
 */
export async function until(condition: () => boolean, { timeoutMs = 5_000, intervalMs = 5, what }: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what ?? condition.toString()}`);
    }
    await sleep(intervalMs);
  }
}

/** An async iterable fed by push(): the input of a client or bidi stream that a test writes step by step. */
export function pushable<T>() {
  const queue: IteratorResult<T, undefined>[] = [];
  let wake: (() => void) | undefined;
  const deliver = (result: IteratorResult<T, undefined>) => {
    queue.push(result);
    wake?.();
  };
  return {
    push: (value: T) => deliver({ value, done: false }),
    end: () => deliver({ value: undefined, done: true }),
    async *[Symbol.asyncIterator](): AsyncGenerator<T> {
      for (;;) {
        while (queue.length === 0) {
          await new Promise<void>((resolve) => (wake = resolve));
        }
        const next = queue.shift()!;
        if (next.done) return;
        yield next.value;
      }
    },
  };
}
