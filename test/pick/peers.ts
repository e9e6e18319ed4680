// Fake peers for the specs of the pick stages: only what the stages read.
import type { Peer } from "../../src/index.js";

export const peer = (n: number, zone?: string): Peer =>
  ({ url: `http://10.${n >> 8}.${n & 255}.1:9000`, address: `10.${n >> 8}.${n & 255}.1:9000`, metadata: zone === undefined ? {} : { zone }, weight: 1 }) as unknown as Peer;
export const peers = (count: number, from = 0, zone?: string) => Array.from({ length: count }, (_, i) => peer(from + i, zone));
export const urls = (list: readonly Peer[]) => list.map((p) => p.url);
/** A pick request for a unary call; the stages under test do not read it. */
export const request = { method: {} as never, header: new Headers(), contextValues: {} as never, attempt: 0 };
