// The pure parts of the balanced transport's call path: the retry loop's
// decisions and re-picks that pass over the peers a call already tried.
import { describe, expect, it } from "vitest";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { UserService } from "../gen/demo/user/v1/user_pb.js";
import type { Peer, Picker } from "../src/index.js";
import type { Attempt, AttemptFailure } from "../src/transport/attempt.js";
import { pickUntried } from "../src/pick/untried.js";
import { untilResponse, type RetriedCall, type RetryPolicy } from "../src/transport/retry.js";
import { RetryBudget } from "../src/transport/retry-budget.js";

const peers = [1, 2, 3].map((n) => ({ url: `http://10.0.0.${n}:9000`, address: `10.0.0.${n}:9000` }) as Peer);

/** A policy over the three peers whose attempts fail with the given kinds, in turn. */
function policyFailing(
  kinds: { unreachable: boolean; retryable: boolean; refused?: boolean; notConnected?: boolean }[],
  budget = new RetryBudget(),
  { maxAttempts = 3, fleet = peers } = {},
) {
  const peers = fleet;
  const sentTo: string[] = [];
  let n = 0;
  const policy: RetryPolicy = {
    maxAttempts,
    budget,
    async begin(_call, _headers, _remainingMs, tried) {
      const peer = peers.find((p) => !tried.has(p.url)) ?? peers[0]!;
      sentTo.push(peer.address);
      return { method: UserService.method.getUser, signal: undefined, pick: { peer }, entry: {} as never, started: 0 } as Attempt;
    },
    finish(attempt): AttemptFailure {
      const kind = { refused: false, notConnected: false, ...kinds[Math.min(n++, kinds.length - 1)]! };
      return { error: new ConnectError(`failed on ${attempt.pick.peer.address}`, Code.Unavailable, undefined, undefined, new ConnectError("down", Code.Unavailable)), kind };
    },
    awaitFreshRead: async () => {},
    hasUntried: (tried) => peers.some((p) => !tried.has(p.url)),
  };
  return { policy, sentTo };
}

function call(resendable = true): RetriedCall<string> {
  return {
    method: UserService.method.getUser,
    signal: undefined,
    timeoutMs: undefined,
    header: undefined,
    contextValues: createContextValues(),
    resendable,
    send: () => Promise.reject(new Error("down")),
  };
}

describe("untilResponse", () => {
  it("tries each peer once, up to maxAttempts, and says how each earlier attempt failed", async () => {
    const { policy, sentTo } = policyFailing([{ unreachable: true, retryable: true }]);
    const error = await untilResponse(policy, call()).then(() => undefined, (e: ConnectError) => e);
    expect(sentTo).toEqual(["10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"]);
    expect(error?.message).toMatch(/failed on 10\.0\.0\.3:9000; 3 peers tried, earlier: 10\.0\.0\.1:9000: \[unavailable\] down; 10\.0\.0\.2:9000/);
  });

  it("never resends what is not retryable, nor a call whose input cannot be read again", async () => {
    expect((await run(policyFailing([{ unreachable: true, retryable: false }]), call())).sentTo).toHaveLength(1);
    expect((await run(policyFailing([{ unreachable: true, retryable: true }]), call(false))).sentTo).toHaveLength(1);
  });

  it("takes resends of answered failures from the budget, but not resends after connection failures", async () => {
    const empty = new RetryBudget(0, 0);
    expect((await run(policyFailing([{ unreachable: false, retryable: true }], empty), call())).sentTo).toHaveLength(1);
    expect((await run(policyFailing([{ unreachable: true, retryable: true }], empty), call())).sentTo).toHaveLength(3);
    expect((await run(policyFailing([{ unreachable: false, retryable: true, refused: true }], empty), call())).sentTo).toHaveLength(3);
  });

  it("does not count attempts on peers that could not be reached toward maxAttempts, up to four of them", async () => {
    const refused = { unreachable: true, retryable: true, notConnected: true };
    const answered = { unreachable: false, retryable: true };
    // two departed peers met first, then one that answers Unavailable: maxAttempts 2 still allows one resend after it
    const fleet = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => ({ url: `http://10.0.1.${n}:9000`, address: `10.0.1.${n}:9000` }) as Peer);
    expect((await run(policyFailing([refused, refused, answered], undefined, { maxAttempts: 2, fleet }), call())).sentTo).toHaveLength(4);
    // a whole fleet refusing: 4 free attempts, then maxAttempts counts
    expect((await run(policyFailing([refused], undefined, { maxAttempts: 2, fleet }), call())).sentTo).toHaveLength(6);
  });

  it("reads the registry once more when every known peer was tried and is gone, and tries a peer it brought", async () => {
    const setup = policyFailing([{ unreachable: true, retryable: true, notConnected: true }], undefined, { fleet: [peers[0]!] });
    let reads = 0;
    setup.policy.awaitFreshRead = async () => void reads++;
    await run(setup, call());
    expect({ reads, sentTo: setup.sentTo }).toEqual({ reads: 1, sentTo: ["10.0.0.1:9000"] }); // the read brought nobody new
    // a read that brings a new peer: the call goes on to it
    const grown = [peers[0]!];
    const growing = policyFailing([{ unreachable: true, retryable: true, notConnected: true }], undefined, { fleet: grown });
    growing.policy.awaitFreshRead = async () => void grown.push(peers[1]!);
    await run(growing, call());
    expect(growing.sentTo).toEqual(["10.0.0.1:9000", "10.0.0.2:9000"]);
  });

  async function run(setup: ReturnType<typeof policyFailing>, retried: RetriedCall<string>) {
    await untilResponse(setup.policy, retried).catch(() => {});
    return setup;
  }
});

describe("pickUntried", () => {
  const request = { method: UserService.method.getUser, header: new Headers(), contextValues: createContextValues() };
  const always = (peer: Peer): Picker => () => ({ peer });

  it("keeps the policy's pick when the call has not tried it", () => {
    expect(pickUntried({ peers, members: peers, pick: always(peers[0]!) }, request, new Set()).peer).toBe(peers[0]);
  });

  it("asks the policy again with a growing attempt number (ring_hash walks on)", () => {
    const asked: number[] = [];
    const walking: Picker = ({ attempt }) => (asked.push(attempt), { peer: peers[attempt % 3]! });
    expect(pickUntried({ peers, members: peers, pick: walking }, request, new Set([peers[0]!.url])).peer).toBe(peers[1]);
    expect(asked).toEqual([0, 1]);
  });

  it("takes an untried peer of the picker's when the policy keeps missing, else an untried member, and ends the passed-over picks", () => {
    let ended = 0;
    const stubborn: Picker = () => ({ peer: peers[0]!, done: () => void ended++ });
    const tried = new Set([peers[0]!.url]);
    expect(pickUntried({ peers: [peers[0]!, peers[1]!], members: peers, pick: stubborn }, request, tried).peer).toBe(peers[1]);
    expect(pickUntried({ peers: [peers[0]!], members: peers, pick: stubborn }, request, tried).peer).not.toBe(peers[0]);
    expect(ended).toBe(3); // the re-asked pick and the first one of the first call, the first of the second
  });
});
