/** What the average reads of one peer: its latency sample and when it was taken (performance.now()). */
export interface LatencySample {
  readonly latencyMs: number | undefined;
  readonly sampledAt: number;
}

/** How far the origin may fall behind before it moves: e^32 keeps the terms far from overflow. */
const maxOriginLagDecays = 32;

/**
 * The mean of the peers' fading latency estimates, read at the same cost at
 * any number of peers. Every estimate fades by the same factor as time goes
 * on — latency × e^(-(now - sampledAt)/τ) — so their sum is
 * e^(-(now - origin)/τ) × Σ latency × e^((sampledAt - origin)/τ): a new
 * sample replaces one term of a running sum instead of a scan over the peers.
 */
export class LatencyAverage {
  private weightedSum = 0;
  private measured = 0;
  private origin: number;

  constructor(
    private readonly decayMs: number,
    now: number,
  ) {
    this.origin = now;
  }

  /** The mean estimate as of now; 1 ms while no peer is measured. */
  mean(now: number): number {
    return this.measured === 0 ? 1 : (this.weightedSum * Math.exp(-(now - this.origin) / this.decayMs)) / this.measured;
  }

  add(sample: LatencySample): void {
    if (sample.latencyMs !== undefined) {
      this.moveOrigin(sample.sampledAt);
      this.weightedSum += this.term(sample.latencyMs, sample.sampledAt);
      this.measured++;
    }
  }

  remove(sample: LatencySample): void {
    if (sample.latencyMs !== undefined) {
      this.weightedSum -= this.term(sample.latencyMs, sample.sampledAt);
      this.measured--;
      // rounding must not leave a trace once nobody is measured
      this.weightedSum = this.measured === 0 ? 0 : Math.max(0, this.weightedSum);
    }
  }

  private term(latencyMs: number, sampledAt: number): number {
    return latencyMs * Math.exp((sampledAt - this.origin) / this.decayMs);
  }

  /** Keeps the exponents small as time goes on: the sum is rescaled to a later origin. */
  private moveOrigin(now: number): void {
    if (now - this.origin > maxOriginLagDecays * this.decayMs) {
      this.weightedSum *= Math.exp(-(now - this.origin) / this.decayMs);
      this.origin = now;
    }
  }
}
