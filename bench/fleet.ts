// Subsetting, zone priority and slow start at fleet scale (issue 16),
// simulated over the real pick path: each client is a PickPath as
// createBalancedTransport builds it (round_robin, its own OutlierDetection
// and Reachability, the subset's seed left to the ranking, so each client
// draws its own as in production), and a client's connections are the peers
// its picks touched. No network: the figures are about where calls go, not
// how fast.
import type { Balancer, Peer, PickRequest } from "../src/index.js";
import { p2c, random, roundRobin } from "../src/index.js";
import { createPeer } from "../src/peer.js";
import { PickPath } from "../src/pick/pick-path.js";
import { SlowStart } from "../src/pick/slow-start.js";
import type { ZoneOptions } from "../src/pick/zones.js";
import { parseEndpoint, type Endpoint } from "../src/registry/endpoint.js";
import { OutlierDetection } from "../src/transport/outlier-detection.js";
import { Reachability } from "../src/transport/reachability.js";

/** The SRE book's fleet (chapter 20): 300 clients, 300 instances. */
const clients = 300;
const instances = 300;
/**
 * A multiple of every subset size below and of 300: round robin then gives
 * each peer of a client the same count whatever its offset, so the calls that
 * move on a departure are the departure's, not the rounding's; without
 * subsetting, a client touches every instance.
 */
const callsPerClient = 900;
const fleets = 5;
/** undefined: no subsetting; 25: the default (kratos'); 90: the SRE book's case, whose spread it gives as 63–121 % of the mean. */
const subsetSizes = [undefined, 25, 90] as const;

function peerOf(i: number, metadata: Record<string, string> = {}): Peer {
  return createPeer(
    { key: `/microservices/svc/${i}`, id: `${i}`, name: "svc", version: "v1", metadata, endpoints: [] },
    parseEndpoint(`grpc://10.${i >> 16}.${(i >> 8) & 255}.${i & 255}:9000`) as Endpoint,
  );
}

function clientOf(subsetSize: number | undefined, zones?: ZoneOptions, detection = new OutlierDetection()): PickPath {
  return new PickPath({ balancer: roundRobin(), subsetSize, zones }, detection, new Reachability());
}

/** Calls per peer url for `calls` picks over `all`. */
function callsOf(path: PickPath, all: readonly Peer[], calls: number, request: PickRequest, now = 0): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < calls; i++) {
    const url = path.over(all, now).pick(request).peer.url;
    counts.set(url, (counts.get(url) ?? 0) + 1);
  }
  return counts;
}

/** Max and min over instances, each ÷ the mean; instances with nothing count as 0. */
export interface Spread {
  readonly maxOverMean: number;
  readonly minOverMean: number;
}

function spreadOf(perInstance: Map<string, number>, all: readonly Peer[]): Spread {
  const values = all.map((peer) => perInstance.get(peer.url) ?? 0);
  const mean = values.reduce((sum, v) => sum + v, 0) / values.length;
  return { maxOverMean: Math.max(...values) / mean, minOverMean: Math.min(...values) / mean };
}

/** What one instance leaving does to a fleet. */
export interface Departure {
  /** Clients whose peers (the subset, or all peers) are not the same as before. */
  readonly clientsChanged: number;
  /** The most peers one client gained, and lost. */
  readonly mostAdded: number;
  readonly mostRemoved: number;
  /** Peers clients call now and did not before: connections to open. */
  readonly newConnections: number;
  /** Measured from the picks: Σ over clients and instances of max(0, calls before − calls after), ÷ all calls. */
  readonly movedShare: number;
  /** The departed instance's share of all calls before it left: what has to move. */
  readonly departedShare: number;
  /** movedShare over the calls of the clients that changed only: how hard the change hits a client it hits. */
  readonly movedPerChanged: number;
  /** Each client's share of its peers that left it, weighted by its calls. */
  readonly peersChangedShare: number;
  /** The most calls one remaining instance gained, ÷ the mean calls per instance before. */
  readonly largestGain: number;
}

export interface FleetRun {
  readonly minConnections: number;
  readonly maxConnections: number;
  readonly totalConnections: number;
  readonly clientsPerInstance: Spread;
  readonly callsPerInstance: Spread;
  readonly departure: Departure;
}

export interface SubsettingResult {
  readonly runs: ReadonlyMap<number | undefined, readonly FleetRun[]>;
}

/** One fleet: every client calls, then a random instance leaves and every client calls again over the other 299. */
function runFleet(subsetSize: number | undefined, request: PickRequest): FleetRun {
  const all = Array.from({ length: instances }, (_, i) => peerOf(i));
  const paths = Array.from({ length: clients }, () => clientOf(subsetSize));
  const before = paths.map((path) => callsOf(path, all, callsPerClient, request));
  const membersBefore = paths.map((path) => new Set(path.over(all, 0).peers.map((p) => p.url)));
  const clientsPerInstance = new Map<string, number>();
  const callsPerInstance = new Map<string, number>();
  for (const counts of before) {
    for (const [url, n] of counts) {
      clientsPerInstance.set(url, (clientsPerInstance.get(url) ?? 0) + 1);
      callsPerInstance.set(url, (callsPerInstance.get(url) ?? 0) + n);
    }
  }
  const connections = before.map((counts) => counts.size);

  // A new array, as a registry change hands the path.
  const leaving = all[Math.floor(Math.random() * all.length)]!;
  const rest = all.filter((peer) => peer !== leaving);
  const after = paths.map((path) => callsOf(path, rest, callsPerClient, request));
  let clientsChanged = 0;
  let mostAdded = 0;
  let mostRemoved = 0;
  let newConnections = 0;
  let moved = 0;
  let peersChanged = 0;
  const gain = new Map<string, number>();
  paths.forEach((path, c) => {
    const was = membersBefore[c]!;
    const now = new Set(path.over(rest, 0).peers.map((p) => p.url));
    const added = [...now].filter((url) => !was.has(url)).length;
    const removed = [...was].filter((url) => !now.has(url)).length;
    clientsChanged += added + removed > 0 ? 1 : 0;
    mostAdded = Math.max(mostAdded, added);
    mostRemoved = Math.max(mostRemoved, removed);
    peersChanged += removed / was.size; // every client makes the same number of calls: the weights are equal
    const [b, a] = [before[c]!, after[c]!];
    newConnections += [...a.keys()].filter((url) => !b.has(url)).length;
    for (const url of new Set([...b.keys(), ...a.keys()])) {
      const delta = (a.get(url) ?? 0) - (b.get(url) ?? 0);
      moved += Math.max(0, -delta);
      gain.set(url, (gain.get(url) ?? 0) + delta);
    }
  });
  gain.delete(leaving.url);
  const totalCalls = clients * callsPerClient;
  return {
    minConnections: Math.min(...connections),
    maxConnections: Math.max(...connections),
    totalConnections: connections.reduce((sum, n) => sum + n, 0),
    clientsPerInstance: spreadOf(clientsPerInstance, all),
    callsPerInstance: spreadOf(callsPerInstance, all),
    departure: {
      clientsChanged,
      mostAdded,
      mostRemoved,
      newConnections,
      departedShare: (callsPerInstance.get(leaving.url) ?? 0) / totalCalls,
      movedShare: moved / totalCalls,
      movedPerChanged: clientsChanged === 0 ? 0 : moved / (clientsChanged * callsPerClient),
      peersChangedShare: peersChanged / clients,
      largestGain: Math.max(...gain.values()) / (totalCalls / instances),
    },
  };
}

/** `fleets` independent fleets per subset size, the sizes alternated: each fleet draws fresh seeds. */
export function measureSubsetting(request: PickRequest): SubsettingResult {
  const runs = new Map<number | undefined, FleetRun[]>(subsetSizes.map((size) => [size, []]));
  for (let fleet = 0; fleet < fleets; fleet++) {
    for (const size of subsetSizes) runs.get(size)!.push(runFleet(size, request));
  }
  return { runs };
}

const sizeName = (size: number | undefined) => (size === undefined ? "none" : `${size}`);
/** One figure per fleet. */
const each = (values: readonly number[], format: (n: number) => string = (n) => n.toFixed(2)) => values.map(format).join(" ");
/** min–max, or the one value when they agree. */
const range = (values: readonly number[], format: (n: number) => string = String) => {
  const [min, max] = [format(Math.min(...values)), format(Math.max(...values))];
  return min === max ? min : `${min}–${max}`;
};
const percent = (share: number) => `${(100 * share).toFixed(2)}`;

export function printSubsetting({ runs }: SubsettingResult): void {
  console.log(`\nsubsetting: ${clients} clients × ${instances} instances, each client a PickPath (round_robin, its own random seed) making ${callsPerClient} calls; ${fleets} fleets, one figure per fleet`);
  console.log(`  connections = distinct instances a client's picks touched; load spread = max ÷ mean over the ${instances} instances (and min ÷ mean)`);
  console.log(`  ${"subset".padEnd(8)}${"per client".padStart(10)}${"total".padStart(8)}   ${"clients per instance, max ÷ mean".padEnd(35)}${"min ÷ mean".padEnd(27)}calls per instance, max ÷ mean`);
  for (const [size, list] of runs) {
    const thousands = (n: number) => n.toLocaleString("en-US");
    console.log(
      `  ${sizeName(size).padEnd(8)}${range(list.flatMap((run) => [run.minConnections, run.maxConnections])).padStart(10)}${range(list.map((run) => run.totalConnections), thousands).padStart(8)}   ` +
        `${each(list.map((run) => run.clientsPerInstance.maxOverMean)).padEnd(35)}${each(list.map((run) => run.clientsPerInstance.minOverMean)).padEnd(27)}${each(list.map((run) => run.callsPerInstance.maxOverMean))}`,
    );
  }
  console.log(`  (round robin gives each peer of a client the same count, so calls per instance follow clients per instance; the SRE book's subset 90: 0.63–1.21)`);

  console.log(`\none instance of ${instances} leaves (a random one; each client's path is handed the other ${instances - 1}, and each client makes ${callsPerClient} calls again); one figure per fleet`);
  console.log(`  changed: clients whose peers (subset, or all) differ; added / removed: the most peers one client gained / lost; new conn.: instances clients call now and did not before;`);
  console.log(`  moved: share of all calls that now go to another instance than before, Σ over clients and instances of max(0, calls before − calls after) ÷ all calls;`);
  console.log(`  departed had: the departed instance's share of all calls before, all that should move; per changed: moved over the changed clients' calls only;`);
  console.log(`  peers lost: each client's peers lost ÷ its peers before, weighted by its calls (all equal); gain: the most calls one remaining instance gained ÷ the mean per instance`);
  console.log(`  ${"subset".padEnd(8)}${"changed".padEnd(22)}${"added/removed".padEnd(15)}${"new conn.".padEnd(22)}${"moved".padEnd(15)}${"departed had".padEnd(15)}${"per changed".padEnd(14)}${"peers lost".padEnd(15)}gain`);
  for (const [size, list] of runs) {
    const d = list.map((run) => run.departure);
    const added = `${Math.max(...d.map((x) => x.mostAdded))} / ${Math.max(...d.map((x) => x.mostRemoved))}`;
    console.log(
      `  ${sizeName(size).padEnd(8)}${each(d.map((x) => x.clientsChanged), String).padEnd(22)}${added.padEnd(15)}${each(d.map((x) => x.newConnections), String).padEnd(22)}` +
        `${`${range(d.map((x) => x.movedShare), percent)} %`.padEnd(15)}${`${range(d.map((x) => x.departedShare), percent)} %`.padEnd(15)}${`${range(d.map((x) => x.movedPerChanged), percent)} %`.padEnd(14)}` +
        `${`${range(d.map((x) => x.peersChangedShare), percent)} %`.padEnd(15)}${each(d.map((x) => x.largestGain))}`,
    );
  }
  console.log(`  (without subsetting the departed instance's calls spread over all ${instances - 1} others; with a subset, each client that had it moves them to one new instance)`);
}

/** Where calls go with `failed` of the caller's zone's 3 instances ejected. */
export interface ZoneRun {
  readonly failed: number;
  readonly picks: number;
  /** Shares of all picks. */
  readonly local: number;
  readonly expected: number;
  readonly byZone: ReadonlyMap<string, number>;
  /** Picks that went to an ejected (local) instance. */
  readonly toEjected: number;
}

const zoneNames = ["az1", "az2", "az3"] as const;

/** 3 zones × 3 instances, the caller in az1; 0–3 of az1's instances ejected by outlier detection, `picks` picks each. */
export function measureZones(request: PickRequest, picks = 30_000): ZoneRun[] {
  const all = zoneNames.flatMap((zone, z) => [0, 1, 2].map((i) => peerOf(z * 3 + i, { zone })));
  const zoneOf = new Map(all.map((peer) => [peer.url, peer.metadata["zone"]!]));
  const runs: ZoneRun[] = [];
  for (let failed = 0; failed <= 3; failed++) {
    const detection = new OutlierDetection({ consecutiveFailures: 1, maxEjectionPercent: 100 });
    const path = clientOf(25, { zone: "az1", zoneKey: "zone" }, detection);
    const ejected = all.slice(0, failed);
    for (const peer of ejected) detection.record(peer, "failed", 0, all.length);
    const counts = callsOf(path, all, picks, request);
    const byZone = new Map<string, number>(zoneNames.map((zone) => [zone, 0]));
    for (const [url, n] of counts) byZone.set(zoneOf.get(url)!, byZone.get(zoneOf.get(url)!)! + n / picks);
    // Envoy's priority rule, written out here rather than taken from src/pick/zones.ts, so that the bench checks it
    const healthy = 3 - failed;
    runs.push({
      failed,
      picks,
      local: byZone.get("az1")!,
      expected: healthy === 0 ? 0 : Math.min(1, (1.4 * healthy) / 3),
      byZone,
      toEjected: ejected.reduce((sum, peer) => sum + (counts.get(peer.url) ?? 0), 0) / picks,
    });
  }
  return runs;
}

export function printZones(runs: readonly ZoneRun[]): void {
  console.log(`\nzone priority: 3 zones × 3 instances, the caller in az1 (zone "az1", zoneKey "zone"), round_robin, subset 25; az1's instances ejected by outlier detection (1 failure, max ejection 100 %); ${runs[0]?.picks.toLocaleString("en-US")} picks each`);
  console.log(`  expected local share: min(1, 1.4 × healthy ÷ 3), 0 with none healthy (Envoy's overprovisioning factor); shares of all picks`);
  console.log(`  ${"az1 failed".padEnd(12)}${"local".padStart(8)}${"expected".padStart(10)}${"spilled".padStart(10)}${"to az2".padStart(9)}${"to az3".padStart(9)}   to ejected az1 instances`);
  const pct = (share: number) => `${(100 * share).toFixed(1)} %`;
  for (const run of runs) {
    console.log(
      `  ${`${run.failed} of 3`.padEnd(12)}${pct(run.local).padStart(8)}${pct(run.expected).padStart(10)}${pct(1 - run.local).padStart(10)}${pct(run.byZone.get("az2")!).padStart(9)}${pct(run.byZone.get("az3")!).padStart(9)}   ${pct(run.toEjected)}`,
    );
  }
  console.log(`  (to ejected: picks that reached an ejected az1 instance; with 1 of 3 healthy az1 is below the panic threshold, 50 %, but keeps its share off its ejected instances while the other zones can take the calls, as Envoy)`);
}

/** The policies slow start is measured over (ring_hash refuses it). */
const rampPolicies: Record<string, () => Balancer> = { round_robin: roundRobin, random, p2c: () => p2c() };
/** Points of the ramp, as shares of the window. */
const rampPoints = [0, 0.1, 0.25, 0.5, 0.75, 1] as const;
const aggressions = [1, 2] as const;
/** SlowStart's default. */
const minWeightPercent = 10;
/**
 * A window so long that the real milliseconds the picks take do not move
 * the ramp: a point t of the way in is reached by building the path over the
 * 10 instances with `now` = performance.now() − t × window, the ramp starting
 * at the `now` of the build that first sees the newcomer (SlowStart.look),
 * while each pick reads performance.now() (SlowStart.wrap).
 */
const longWindowMs = 1e9;
/** Calls every instance served before the 10th joined: p2c has measured the 9. */
const warmCalls = 2_000;

/**
 * Every instance answers at once in 10 ms: p2c has nothing to tell them
 * apart by. (A spread of latencies would make its estimates the highest
 * sample seen, as they fade over seconds and these calls take milliseconds.)
 */
const latencyMs = () => 10;

/** `balancer`, counting the picks it makes (before slow start passes over any) and those of `peer`. */
function counting(balancer: Balancer, peer: Peer, count: { all: number; of: number }): Balancer {
  return {
    name: balancer.name,
    build(peers) {
      const pick = balancer.build(peers);
      return (request) => {
        const chosen = pick(request);
        count.all++;
        count.of += chosen.peer === peer ? 1 : 0;
        return chosen;
      };
    },
  };
}

/** `calls` calls over `all`, each ended with a latency (p2c learns from it); picks per peer url. */
function calledOf(path: PickPath, all: readonly Peer[], calls: number, request: PickRequest, now: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < calls; i++) {
    const pick = path.over(all, now).pick(request);
    pick.done?.({}, latencyMs());
    counts.set(pick.peer.url, (counts.get(pick.peer.url) ?? 0) + 1);
  }
  return counts;
}

export interface RampPoint {
  /** How far into the window, 0–1. */
  readonly at: number;
  /** The newcomer's share of the calls. */
  readonly share: number;
  /** f ÷ (9 + f), f = max(minWeightPercent / 100, at^(1 / aggression)). */
  readonly expected: number;
  /** The newcomer's share of the policy's own picks, those slow start passed over included. */
  readonly proposed: number;
}

export interface RampRun {
  readonly policy: string;
  readonly aggression: number;
  readonly points: readonly RampPoint[];
}

export interface SlowStartResult {
  readonly calls: number;
  /**
   * The 9 instances of the first snapshot: the least and most calls one of
   * them had, ÷ all calls, and the policy's picks per call (1: slow start
   * passed none over). Equal shares alone would not tell, as 9 peers ramping
   * alike share the calls equally too.
   */
  readonly firstSnapshot: ReadonlyMap<string, { readonly min: number; readonly max: number; readonly picksPerCall: number }>;
  readonly ramps: readonly RampRun[];
}

/** The weight slow start should give the newcomer, written out from Envoy's formula rather than taken from src/pick/slow-start.ts. */
function expectedShare(at: number, aggression: number): number {
  const f = Math.max(minWeightPercent / 100, Math.pow(at, 1 / aggression));
  return f / (9 + f);
}

/** 9 instances in rotation, then a 10th joins; its share of `calls` calls at each point of the ramp, for each policy and aggression. */
export function measureSlowStart(request: PickRequest, calls = 90_000): SlowStartResult {
  const all = Array.from({ length: 10 }, (_, i) => peerOf(i));
  const first = all.slice(0, 9);
  const newcomer = all[9]!;
  const firstSnapshot = new Map<string, { min: number; max: number; picksPerCall: number }>();
  for (const [policy, balancer] of Object.entries(rampPolicies)) {
    const count = { all: 0, of: 0 };
    const path = new PickPath({ balancer: counting(balancer(), newcomer, count), subsetSize: undefined, zones: undefined, slowStart: new SlowStart({ windowMs: longWindowMs }) }, new OutlierDetection(), new Reachability());
    const counts = calledOf(path, first, calls, request, performance.now());
    const shares = first.map((peer) => (counts.get(peer.url) ?? 0) / calls);
    firstSnapshot.set(policy, { min: Math.min(...shares), max: Math.max(...shares), picksPerCall: count.all / calls });
  }
  const ramps: RampRun[] = [];
  for (const aggression of aggressions) {
    for (const [policy, balancer] of Object.entries(rampPolicies)) {
      const points = rampPoints.map((at) => {
        const count = { all: 0, of: 0 };
        const slowStart = new SlowStart({ windowMs: longWindowMs, aggression, minWeightPercent });
        const path = new PickPath({ balancer: counting(balancer(), newcomer, count), subsetSize: undefined, zones: undefined, slowStart }, new OutlierDetection(), new Reachability());
        calledOf(path, first, warmCalls, request, performance.now());
        // a new array, as a registry change hands the path; the build over it starts the ramp, `at` of the window ago
        const joined = [...all];
        const since = performance.now() - at * longWindowMs;
        path.over(joined, since);
        count.all = count.of = 0;
        const counts = calledOf(path, joined, calls, request, since);
        return { at, share: (counts.get(newcomer.url) ?? 0) / calls, expected: expectedShare(at, aggression), proposed: count.of / count.all };
      });
      ramps.push({ policy, aggression, points });
    }
  }
  return { calls, firstSnapshot, ramps };
}

export function printSlowStart({ calls, firstSnapshot, ramps }: SlowStartResult): void {
  const pct = (share: number) => (100 * share).toFixed(2);
  const thousands = calls.toLocaleString("en-US");
  console.log(`
slow start: 9 instances in rotation, then a 10th joins; a PickPath with slowStart { windowMs, aggression, minWeightPercent ${minWeightPercent} } over the real policy, ${thousands} calls per point`);
  // were the 9 ramping from 10 %, a call would take 1 + 0.9 + … + 0.9^8 picks (slow start passes over at most 8)
  const rampingPicks = (1 - Math.pow(1 - minWeightPercent / 100, 9)) / (minWeightPercent / 100);
  console.log(`  the first snapshot's instances are not ramped: each one's share of ${thousands} calls over the 9 at once (1/9 = 11.11 %), and the policy's picks per call`);
  console.log(`  (1: slow start passed none over; ${rampingPicks.toFixed(2)} were the 9 ramping from ${minWeightPercent} %, whose shares would be equal too):`);
  console.log(`  ${[...firstSnapshot].map(([policy, { min, max, picksPerCall }]) => `${policy} ${pct(min)}–${pct(max)} %, ${picksPerCall.toFixed(2)} picks per call`).join("   ")}`);
  console.log(`  the newcomer's share of the calls, in %, t of the way into the window; expected f ÷ (9 + f), f = max(${minWeightPercent / 100}, (t ÷ window)^(1 ÷ aggression));`);
  console.log(`  p2c's calls end at once, in 10 ms on every instance; "p2c proposes": the newcomer's share of p2c's own picks, those slow start passed over included;`);
  console.log(`  the sampling error (1 sd) of a share p over ${thousands} calls is √(p(1 − p) ÷ ${thousands}): ${pct(Math.sqrt((0.011 * 0.989) / calls))} points at 1.1 %, ${pct(Math.sqrt((0.1 * 0.9) / calls))} at 10 %`);
  for (const aggression of aggressions) {
    const runs = ramps.filter((run) => run.aggression === aggression);
    const row = (label: string, values: readonly number[]) => console.log(`    ${label.padEnd(16)}${values.map((v) => pct(v).padStart(8)).join("")}`);
    console.log(`  aggression ${aggression}   ${rampPoints.map((at) => `${Math.round(100 * at)} %`.padStart(8)).join("")}`);
    row("expected", runs[0]!.points.map((point) => point.expected));
    for (const run of runs) row(run.policy, run.points.map((point) => point.share));
    const p2cRun = runs.find((run) => run.policy === "p2c");
    if (p2cRun !== undefined) row("p2c proposes", p2cRun.points.map((point) => point.proposed));
  }
  console.log(`  (passing over a ramping peer's pick weighs round_robin and random exactly; p2c proposes the newcomer more than 1 in 10 while it ramps — passed over, it`);
  console.log(`   is called less, so its latency estimate is older and lower than the others' — and rejection sampling starts from that larger share)`);
}

export interface FleetResult {
  readonly subsetting: SubsettingResult;
  readonly zones: readonly ZoneRun[];
  readonly slowStart: SlowStartResult;
}

/** Section 9 of `npm run bench`: subsetting, an instance leaving, zone priority, then the ramp of a new instance under slow start. */
export function measureFleet(request: PickRequest): FleetResult {
  return { subsetting: measureSubsetting(request), zones: measureZones(request), slowStart: measureSlowStart(request) };
}

export function printFleet(result: FleetResult): void {
  printSubsetting(result.subsetting);
  printZones(result.zones);
  printSlowStart(result.slowStart);
}
