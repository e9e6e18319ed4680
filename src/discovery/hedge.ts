import { Code, ConnectError } from "@connectrpc/connect";

export interface HedgeOptions {
  /** Aborts every attempt; the result rejects with its reason. */
  readonly signal: AbortSignal;
  /** How long an attempt may go unanswered before the next candidate is asked too. */
  readonly hedgeAfterMs: number;
  /** A failure that the next candidate would repeat (wrong password): ends everything at once. */
  readonly isFinal: (error: unknown) => boolean;
}

/** Every candidate failed; the failures in the order the candidates were asked. */
export class HedgeFailure extends Error {
  constructor(readonly failures: readonly { readonly index: number; readonly error: unknown }[]) {
    super("every attempt failed");
  }
}

/**
 * Asks candidates 0, 1, … in turn without letting a hung one eat the caller's
 * deadline: the next is asked as soon as the one before failed, or when it has
 * not answered within hedgeAfterMs. The first answer wins; the attempts still
 * running are aborted, so no timer or socket outlives the result.
 */
export function hedged<T>(
  count: number,
  attempt: (index: number, signal: AbortSignal) => Promise<T>,
  { signal, hedgeAfterMs, isFinal }: HedgeOptions,
): Promise<{ value: T; index: number }> {
  return new Promise((resolve, reject) => {
    const running = new Set<AbortController>();
    const failures: { index: number; error: unknown }[] = [];
    let next = 0;
    let settled = false;
    let hedgeTimer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => finish(() => reject(signal.reason));

    function finish(settle: () => void) {
      if (settled) {
        return;
      }
      settled = true;
      clearTimeout(hedgeTimer);
      signal.removeEventListener("abort", onAbort);
      for (const controller of running) {
        controller.abort(new ConnectError("another etcd endpoint answered first", Code.Canceled));
      }
      settle();
    }

    function launch() {
      clearTimeout(hedgeTimer);
      if (settled || next >= count) {
        return;
      }
      const index = next++;
      const controller = new AbortController();
      running.add(controller);
      attempt(index, controller.signal).then(
        (value) => finish(() => resolve({ value, index })),
        (error: unknown) => {
          running.delete(controller);
          if (settled) {
            return;
          }
          if (isFinal(error)) {
            finish(() => reject(error));
            return;
          }
          failures.push({ index, error });
          if (next < count) {
            launch();
          } else if (running.size === 0) {
            finish(() => reject(new HedgeFailure(failures.sort((a, b) => a.index - b.index))));
          }
        },
      );
      if (next < count) {
        hedgeTimer = setTimeout(launch, hedgeAfterMs);
      }
    }

    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener("abort", onAbort);
    launch();
  });
}
