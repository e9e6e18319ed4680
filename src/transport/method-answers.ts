import type { DescMethod } from "@bufbuild/protobuf";
import type { Peer } from "../peer.js";

interface LastAnswer {
  readonly url: string;
  /** performance.now() when the answer came. */
  readonly at: number;
  readonly latencyMs: number;
}

/** How recent another peer's answer must be to say that the deadline was not too tight. */
const recentMs = 10_000;

/**
 * Tells a black hole from a deadline that is too tight. A call that ends by
 * its deadline says nothing about its peer when no peer could have answered
 * in that time; but when another peer answered the same method recently
 * (within 10 s, A50's interval), in less time than this call waited, this
 * peer is the one that failed — a server that accepts calls and never
 * finishes them. Keeps two answers per method (the last, and the last from
 * another peer than that), so the memory is bounded by the methods called.
 */
export class MethodAnswers {
  private readonly byMethod = new WeakMap<DescMethod, { last: LastAnswer; other: LastAnswer | undefined }>();

  answered(method: DescMethod, peer: Peer, at: number, latencyMs: number): void {
    const answer = { url: peer.url, at, latencyMs };
    const seen = this.byMethod.get(method);
    if (seen === undefined) {
      this.byMethod.set(method, { last: answer, other: undefined });
    } else {
      if (seen.last.url !== peer.url) {
        seen.other = seen.last;
      }
      seen.last = answer;
    }
  }

  /** Whether a peer other than this one answered the method in less than `waitedMs`, recently. */
  answeredElsewhere(method: DescMethod, peer: Peer, now: number, waitedMs: number): boolean {
    const seen = this.byMethod.get(method);
    if (seen === undefined) {
      return false;
    }
    const answer = seen.last.url !== peer.url ? seen.last : seen.other;
    return answer !== undefined && answer.at >= now - recentMs && answer.latencyMs < waitedMs;
  }
}
