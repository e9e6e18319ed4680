/**
 * Envoy's retry budget: retries in flight may be at most 20 % of the calls in
 * flight (and always at least 3), so a fleet that fails everything is not
 * sent twice its load by retries.
 */
export class RetryBudget {
  private calls = 0;
  private retries = 0;

  constructor(
    private readonly ratio = 0.2,
    private readonly minRetries = 3,
  ) {}

  callStarted(): void {
    this.calls++;
  }

  /** `retriesTaken`: how many of this call's attempts were retries. */
  callEnded(retriesTaken: number): void {
    this.calls--;
    this.retries -= retriesTaken;
  }

  /** Takes a retry from the budget if one is left. */
  tryRetry(): boolean {
    if (this.retries >= Math.max(this.minRetries, this.ratio * this.calls)) {
      return false;
    }
    this.retries++;
    return true;
  }
}
