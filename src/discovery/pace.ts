/**
 * Long synchronous work (decoding 20,000 registry entries) done in slices, so
 * that calls, timers and I/O of the process still run in between.
 */

/** How long one slice may run, in ms: well under what a caller would notice as a stall. */
const sliceMs = 4;
/** The clock is read once per this many steps: reading it costs more than a step of cheap work. */
const stepsPerCheck = 16;

export interface Pacer {
  /** True once the current slice has used its time: then await pause(). */
  due(): boolean;
  /** Lets the event loop run (a macrotask, so timers and I/O get their turn too), then starts a new slice. */
  pause(): Promise<void>;
}

const clock: () => number = typeof performance !== "undefined" && typeof performance.now === "function" ? () => performance.now() : Date.now;

export function createPacer(budgetMs = sliceMs): Pacer {
  let started = clock();
  let steps = 0;
  return {
    due() {
      // Workers freeze the clock while code runs: there no slice ever ends, as before.
      return ++steps % stepsPerCheck === 0 && clock() - started >= budgetMs;
    },
    async pause() {
      await new Promise<void>((resolve) => setTimeout(resolve, 0));
      started = clock();
    },
  };
}
