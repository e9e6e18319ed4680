// The pure parts of keeping unreachable peers out: gRPC's reconnect backoff,
// and telling a black hole from a deadline that is too tight.
import { describe, expect, it } from "vitest";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import type { Peer } from "../src/index.js";
import { MethodAnswers } from "../src/transport/method-answers.js";
import { Reachability } from "../src/transport/reachability.js";

const peer = (n: number) => ({ url: `http://10.0.0.${n}:9000`, address: `10.0.0.${n}:9000` }) as Peer;

describe("Reachability", () => {
  it("keeps a peer out for 1 s, then 1.6 s, 2.56 s … up to 120 s while it keeps refusing (no jitter)", () => {
    const reachability = new Reachability(() => 0.5);
    const lengths: number[] = [];
    let now = 0;
    for (let i = 0; i < 14; i++) {
      const forMs = reachability.unreached(peer(1), now)!;
      lengths.push(forMs);
      expect(reachability.isOut(peer(1))).toBe(true);
      now += forMs;
      reachability.expire(now);
      expect(reachability.isOut(peer(1))).toBe(false); // back in: its next call is the reconnect
    }
    expect(lengths.slice(0, 4)).toEqual([1_000, 1_600, 2_560, 4_096]);
    expect(lengths.at(-1)).toBe(120_000);
  });

  it("jitters each backoff by ± 20 %", () => {
    expect(new Reachability(() => 0).unreached(peer(1), 0)).toBe(800);
    expect(new Reachability(() => 0.999_999).unreached(peer(1), 0)).toBe(1_200);
  });

  it("takes any number of peers out, counts calls that failed meanwhile once, and starts over once a peer answers", () => {
    const reachability = new Reachability(() => 0.5);
    for (let n = 1; n <= 10; n++) expect(reachability.unreached(peer(n), 0)).toBe(1_000);
    expect(reachability.unreached(peer(1), 10)).toBeUndefined(); // a call sent before it went out
    const version = reachability.version;
    reachability.expire(1_000);
    expect(reachability.version).toBe(version + 10);
    expect(reachability.unreached(peer(1), 1_000)).toBe(1_600);
    reachability.reached(peer(1));
    expect(reachability.isOut(peer(1))).toBe(false);
    expect(reachability.unreached(peer(1), 2_000)).toBe(1_000);
  });

  it("forgets peers that left the registry", () => {
    const reachability = new Reachability(() => 0.5);
    reachability.unreached(peer(1), 0);
    reachability.unreached(peer(2), 0);
    reachability.retain(new Set([peer(2).url]));
    expect(reachability.isOut(peer(1))).toBe(false);
    expect(reachability.isOut(peer(2))).toBe(true);
    expect(reachability.unreached(peer(1), 0)).toBe(1_000); // a peer that comes back starts with the first backoff
  });
});

describe("MethodAnswers", () => {
  const method = UserService.method.getUser;

  it("blames a peer for a deadline only when another peer answered the method faster, recently", () => {
    const answers = new MethodAnswers();
    expect(answers.answeredElsewhere(method, peer(3), 1_000, 300)).toBe(false); // nobody answered yet
    answers.answered(method, peer(1), 900, 5);
    expect(answers.answeredElsewhere(method, peer(3), 1_000, 300)).toBe(true);
    expect(answers.answeredElsewhere(method, peer(3), 1_000, 4)).toBe(false); // too tight for the others too
    expect(answers.answeredElsewhere(method, peer(3), 20_000, 300)).toBe(false); // long ago
    expect(answers.answeredElsewhere(UserService.method.updateUser, peer(3), 1_000, 300)).toBe(false); // another method
  });

  it("does not take the peer's own answers as another peer's", () => {
    const answers = new MethodAnswers();
    answers.answered(method, peer(3), 900, 5);
    expect(answers.answeredElsewhere(method, peer(3), 1_000, 300)).toBe(false);
    answers.answered(method, peer(1), 950, 5);
    answers.answered(method, peer(3), 990, 5); // its own is the last: the other one before it counts
    expect(answers.answeredElsewhere(method, peer(3), 1_000, 300)).toBe(true);
  });
});
