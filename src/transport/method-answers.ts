import type { DescMethod } from "@bufbuild/protobuf";
import type { Peer } from "../peer.js";

/** The last answer to a method, and the last one before it from another peer; updated in place, so a call allocates nothing. */
interface Answers {
  lastUrl: string;
  lastAt: number;
  lastLatencyMs: number;
  otherUrl: string | undefined;
  otherAt: number;
  otherLatencyMs: number;
}


/**
 * Tells a black hole from a deadline that is too tight. A call that ends by
 * its deadline says nothing about its peer when no peer could have answered
 * in that time; but when another peer answered the same method in less time
 * than this call waited, during the wait or just before it (within one wait's
 * length), this peer is the one that failed — a server that accepts calls and never
 * finishes them. Keeps two answers per method (the last, and the last from
 * another peer than that), so the memory is bounded by the methods called.
 */
export class MethodAnswers {
  private readonly byMethod = new WeakMap<DescMethod, Answers>();

  answered(method: DescMethod, peer: Peer, at: number, latencyMs: number): void {
    const seen = this.byMethod.get(method);
    if (seen === undefined) {
      this.byMethod.set(method, { lastUrl: peer.url, lastAt: at, lastLatencyMs: latencyMs, otherUrl: undefined, otherAt: 0, otherLatencyMs: 0 });
      return;
    }
    if (seen.lastUrl !== peer.url) {
      seen.otherUrl = seen.lastUrl;
      seen.otherAt = seen.lastAt;
      seen.otherLatencyMs = seen.lastLatencyMs;
      seen.lastUrl = peer.url;
    }
    seen.lastAt = at;
    seen.lastLatencyMs = latencyMs;
  }

  /** Whether a peer other than this one answered the method in less than `waitedMs`, within the wait that ended `now` or one as long before it. */
  answeredElsewhere(method: DescMethod, peer: Peer, now: number, waitedMs: number): boolean {
    const seen = this.byMethod.get(method);
    if (seen === undefined) {
      return false;
    }
    const [url, at, latencyMs] = seen.lastUrl !== peer.url ? [seen.lastUrl, seen.lastAt, seen.lastLatencyMs] : [seen.otherUrl, seen.otherAt, seen.otherLatencyMs];
    return url !== undefined && at >= now - 2 * waitedMs && latencyMs < waitedMs;
  }
}
