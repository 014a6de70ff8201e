// `npm run bench:delivery`: webhook delivery on the real server, to a local receiver.
//   1. Throughput per DELIVERY_WORKERS: N events of `--orgs` enterprise orgs, each org with an
//      endpoint on its own port of a receiver in a worker thread (native-bench/delivery-receiver.ts,
//      node:http, answers 200 at once). Deliveries/s = (N − 1) / (N-th delivery − 1st delivery),
//      both stamped by the receiver. Two methods (see the README and the results section):
//        due   the N events are made due all at once after they are in Postgres, so nothing but
//              delivery runs in the timed span;
//        live  the N events are preloaded with the endpoints active and delivered as they drain:
//              the accept rate, the drain and the delivery rate are reported side by side.
//   2. Accept → delivered latency at a steady rate: a paced client sends single events (payload
//      with its send time); the receiver stamps arrival on the same clock (process.hrtime).
// Prints a markdown table per measurement and rewrites the "Delivery (issue 5)" section of
// native-bench/RESULTS.md (content outside the marker comments is kept).
// Usage: npm run bench:delivery [-- --workers 1,2 --events 20000 --rate 1000 --duration 20 ...]
//        npm run bench:delivery -- --help
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, type EventLoopUtilization } from 'node:perf_hooks';
import { connect, type Sql } from '../src/db/postgres.ts';
import {
  publishSection, runBench,
  backlogOf, benchClock, cleanupMark, commandLine, countRows, cpuUse, createDatabase, createKeys, describeFailure, EVENT,
  filesystemOf, fmt, int, interrupted, isLocalHost, log, machineBusyCores, machineCpu, machineFacts, nonDefaults, onCleanup,
  PacedClient, parseBenchArgs, positive, positiveList, postgresBaseUrl, postgresVersion, preload, readMetrics, runCleanups,
  sampleCpu, sleep, startServer, stats, StatusCounter, stopServer, waitForBacklog, warmKeys,
  type CpuUse, type RunningServer, type Stats, tempDataDir, defaultOf,
} from './lib.ts';
import type { Collected } from './delivery-receiver.ts';
import { configureEndpoints, ReceiverThread } from './receiver-thread.ts';

const SECTION_BEGIN = '<!-- BEGIN delivery-bench (issue 5): written by `npm run bench:delivery`, edits inside are overwritten -->';
const SECTION_END = '<!-- END delivery-bench -->';
const PHASES = ['throughput', 'latency'] as const;
const METHODS = ['due', 'live'] as const;
type Method = (typeof METHODS)[number];
/** The event of the throughput phase (the shared bench event) and of the warm-ups. */
const EVENT_BODY = JSON.stringify(EVENT);
const WARMUP_BODY = JSON.stringify({ ...EVENT, type: 'bench.warmup' });
/** Warm-up deliveries per org before each measurement (undici connections, JIT, Postgres plans). */
const WARMUP_PER_ORG = 50;
/** An enterprise org may send 100,000 events in a burst (then 100,000/min): stay below per key. */
const EVENTS_PER_KEY = 90_000;
/** How often the timed span polls the receiver's counter (shared memory: free) and /metrics (live: the drain). */
const RECEIVER_POLL_MS = 5;
const METRICS_POLL_MS = 50;

const USAGE = `npm run bench:delivery -- [options]
  --phases <list>         throughput,latency (default both)
 throughput:
  --workers <list>        DELIVERY_WORKERS values (default 1,2,3,4)
  --methods <list>        due,live (default both; see native-bench/README.md)
  --events <n>            events per setting (default 50000)
  --preload-batches <list> events per POST /api/events/batch (one org each), 1..1000 (default 1000,16)
  --concurrency <n>       preload requests in flight (default 8)
  --timeout <s>           give up on one setting when the deliveries take longer (default 300)
 latency:
  --rate <n>              events per second (default 1000)
  --duration <s>          seconds of paced sending (default 20)
  --connections <n>       keep-alive connections of the paced client (default 16)
  --latency-workers <n>   DELIVERY_WORKERS of the latency run (default 1, the server default)
  --warmup <n>            events sent at --rate and delivered before the measurement (default 1000)
 both:
  --orgs <n>              enterprise orgs, each with its endpoint on its own receiver port (default 8; raised when N needs more)
  --durability <mode>     DURABILITY of the server, fsync or commit (default fsync, the server default)`;

// ---------------------------------------------------------------- arguments

const { args, common } = parseBenchArgs({
  phases: { type: 'string', default: PHASES.join(',') },
  workers: { type: 'string', default: '1,2,3,4' },
  methods: { type: 'string', default: METHODS.join(',') },
  events: { type: 'string', default: '50000' },
  'preload-batches': { type: 'string', default: '1000,16' },
  concurrency: { type: 'string', default: '8' },
  timeout: { type: 'string', default: '300' },
  rate: { type: 'string', default: '1000' },
  duration: { type: 'string', default: '20' },
  connections: { type: 'string', default: '16' },
  'latency-workers': { type: 'string', default: '1' },
  warmup: { type: 'string', default: '1000' },
  orgs: { type: 'string', default: '8' },
  durability: { type: 'string', default: 'fsync' },
}, USAGE);

function oneOf<T extends string>(name: string, raw: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(raw)) {
    console.error(`--${name}: expected one of ${allowed.join(', ')}, got "${raw}"`);
    process.exit(2);
  }
  return raw as T;
}
const list = (raw: string) => raw.split(',').map((p) => p.trim()).filter(Boolean);

const opts = {
  phases: list(args.phases).map((p) => oneOf('phases', p, PHASES)),
  workers: positiveList('workers', args.workers, 1, 16),
  methods: list(args.methods).map((m) => oneOf('methods', m, METHODS)),
  events: positive('events', args.events),
  preloadBatches: positiveList('preload-batches', args['preload-batches'], 1, 1000),
  concurrency: positive('concurrency', args.concurrency),
  timeoutMs: positive('timeout', args.timeout) * 1000,
  rate: positive('rate', args.rate),
  duration: positive('duration', args.duration),
  connections: positive('connections', args.connections),
  latencyWorkers: positiveList('latency-workers', args['latency-workers'], 1, 16)[0]!,
  warmup: positive('warmup', args.warmup, true),
  orgs: positive('orgs', args.orgs),
  durability: oneOf('durability', args.durability, ['fsync', 'commit'] as const),
  ...common,
};
const DEFAULTS = {
  phases: PHASES.join(','), workers: '1,2,3,4', methods: METHODS.join(','), events: 50000, 'preload-batches': '1000,16', concurrency: 8, timeout: 300,
  rate: 1000, duration: 20, connections: 16, 'latency-workers': 1, warmup: 1000, orgs: 8, durability: 'fsync',
};

/** Every stamp is on this clock (ms, monotonic, shared with the receiver thread). */
const now = benchClock;

/** Enough orgs that none passes its burst. */
function orgsFor(events: number): number {
  return Math.max(opts.orgs, Math.ceil(events / EVENTS_PER_KEY));
}

// ---------------------------------------------------------------- small helpers

const OUTCOMES = ['delivered', 'retry', 'failed', 'deferred'] as const;
type Outcomes = Record<(typeof OUTCOMES)[number], number>;

/** triggers_webhook_deliveries_total by outcome. */
async function deliveryOutcomes(port: number): Promise<Outcomes> {
  const metrics = await readMetrics(port);
  const read = (outcome: string) => metrics.get(`triggers_webhook_deliveries_total{outcome="${outcome}"}`) ?? Number.NaN;
  return { delivered: read('delivered'), retry: read('retry'), failed: read('failed'), deferred: read('deferred') };
}

function outcomesSince(start: Outcomes, end: Outcomes): Outcomes {
  return { delivered: end.delivered - start.delivered, retry: end.retry - start.retry, failed: end.failed - start.failed, deferred: end.deferred - start.deferred };
}

async function statusCount(sql: Sql, type: string, status: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from events where type = ${type} and status = ${status}`;
  return row!.n;
}

/** Waits until `done()` or the deadline; false on timeout. */
async function until(done: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = RECEIVER_POLL_MS): Promise<boolean> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (await done()) return true;
    if (now() > deadline) return false;
    await sleep(everyMs);
  }
}

/** Sends WARMUP_PER_ORG events per org and waits until the receiver has them and Postgres says delivered; then resets the receiver. */
async function warmUp(server: RunningServer, sql: Sql, keys: string[], receiver: ReceiverThread): Promise<void> {
  const events = WARMUP_PER_ORG * keys.length;
  const loaded = await preload(server.port, keys, events, 1, WARMUP_PER_ORG, WARMUP_BODY);
  if (loaded.accepted !== events) throw new Error(`warm-up: ${loaded.accepted} of ${events} accepted (${loaded.problems.join('; ')})`);
  if (!(await until(() => receiver.unique >= events, 60_000))) throw new Error(`warm-up: ${receiver.unique} of ${events} delivered after 60 s`);
  if (!(await until(async () => (await statusCount(sql, 'bench.warmup', 'delivered')) >= events, 60_000, 50))) {
    throw new Error('warm-up: deliveries not recorded in Postgres after 60 s');
  }
  await receiver.reset();
}

/** Min / median / max of deliveries per whole second from the first arrival (the partial last second left out). */
function perSecond(arrivals: number[]): { min: number; median: number; max: number } | null {
  if (arrivals.length < 2) return null;
  const first = arrivals[0]!;
  const buckets: number[] = [];
  for (const at of arrivals) {
    const second = Math.floor((at - first) / 1000);
    buckets[second] = (buckets[second] ?? 0) + 1;
  }
  const whole = Array.from(buckets.slice(0, Math.floor((arrivals[arrivals.length - 1]! - first) / 1000)), (n) => n ?? 0);
  if (whole.length === 0) return null;
  const sorted = [...whole].sort((a, b) => a - b);
  return { min: sorted[0]!, median: sorted[Math.floor((sorted.length - 1) / 2)]!, max: sorted[sorted.length - 1]! };
}

interface Checks {
  requests: number;
  duplicates: number;
  oneV1Entry: number;
  signatureOk: number;
  /** Everything the receiver found wrong, one phrase each. */
  problems: string[];
}

function checksOf(c: Collected): Checks {
  const problems: string[] = [];
  const other = Object.entries(c.otherEntryCounts);
  if (other.length > 0) problems.push(`signature headers not of exactly one v1 entry: ${other.map(([what, n]) => `${n}× ${what}`).join(', ')}`);
  if (c.signatureBad > 0) problems.push(`${int(c.signatureBad)} signatures did not verify with the org's secret`);
  if (c.timestampStale > 0) problems.push(`${int(c.timestampStale)} webhook-timestamps more than 5 min off`);
  if (c.missingHeaders > 0) problems.push(`${int(c.missingHeaders)} requests without webhook-id/-timestamp/-signature`);
  if (c.notPost > 0) problems.push(`${int(c.notPost)} requests were not POST`);
  if (c.duplicates > 0) problems.push(`${int(c.duplicates)} duplicate deliveries (a webhook-id received again)`);
  return { requests: c.requests, duplicates: c.duplicates, oneV1Entry: c.oneV1Entry, signatureOk: c.signatureOk, problems };
}

// ---------------------------------------------------------------- 1. throughput

interface ThroughputResult {
  workers: number;
  method: Method;
  /** Events per preload request: a run of one org's events in the log. */
  preloadBatch: number;
  events: number;
  preloadSeconds: number;
  /** live: from the first request of the preload; due: from the moment the events were made due. */
  firstDeliveryMs: number | null;
  deliverySeconds: number;
  perSecond: { min: number; median: number; max: number } | null;
  /** live: first request → last 200 of the preload, → log drained, → N-th delivery (s). */
  acceptedAtS: number | null;
  drainedAtS: number | null;
  deliveredAtS: number | null;
  /** After the N-th delivery, until Postgres showed every event `delivered` (polled every 50 ms). */
  recordedAfterS: number | null;
  outcomes: Outcomes;
  checks: Checks;
  cpu: CpuUse;
  machineCores: number | null;
  receiverBusy: number;
  notes: string[];
  failure?: string;
}

async function benchThroughput(workers: number, method: Method, preloadBatch: number, baseUrl: string, postgresLocal: boolean): Promise<ThroughputResult> {
  const mark = cleanupMark();
  const label = `workers ${workers}, ${method}, ${preloadBatch} per request`;
  const notes: string[] = [];
  try {
    const database = await createDatabase(baseUrl);
    onCleanup(database.drop);
    const dataDir = tempDataDir(opts.dataDirBase, 'delivery');
    const orgs = orgsFor(opts.events);
    const receiver = await ReceiverThread.start(orgs);
    onCleanup(() => receiver.stop());
    log(`${label}: starting server (DATA_DIR ${dataDir}), receiver on ports ${receiver.ports[0]}…${receiver.ports[orgs - 1]}`);
    const server = await startServer(database.url, dataDir, {
      DURABILITY: opts.durability,
      DELIVERY_WORKERS: String(workers),
      WEBHOOK_ALLOW_PRIVATE: 'true',
    });
    onCleanup(async () => void (await server.stop()));
    const sql = connect(database.url, { max: 1 });
    onCleanup(() => sql.end({ timeout: 5 }));

    const keys = await createKeys(server, `delivery w${workers} ${method}`, orgs);
    await warmKeys(server, keys);
    await configureEndpoints(server.port, keys, receiver);
    await warmUp(server, sql, keys, receiver);
    const outcomesStart = await deliveryOutcomes(server.port);

    let loaded: Awaited<ReturnType<typeof preload>>;
    let spanStart: number;
    let drainedAt: number | null = null;
    let cpuStart: Awaited<ReturnType<typeof sampleCpu>>;
    let machineStart: ReturnType<typeof machineCpu>;
    let eluStart: EventLoopUtilization;
    let stopWatching = async () => {};
    if (method === 'due') {
      // Events accepted while an org's endpoint is disabled are stored with nothing scheduled;
      // once all are in Postgres, they are made due and the endpoints enabled in one transaction.
      await sql`update webhook_endpoints set disabled_at = now()`;
      log(`${label}: endpoints disabled; preloading ${int(opts.events)} events (${opts.concurrency} requests in flight, ${orgs} orgs)`);
      loaded = await preload(server.port, keys, opts.events, opts.concurrency, preloadBatch, EVENT_BODY);
      await waitForBacklog(server.port, 120_000);
      const rows = await countRows(sql, EVENT.type);
      if (rows !== loaded.accepted) throw new Error(`${rows} rows in Postgres after the drain, ${loaded.accepted} accepted`);
      if (receiver.requests > 0) notes.push(`${receiver.requests} deliveries arrived while the endpoints were disabled`);
      const updating = now();
      await sql.begin(async (tx) => {
        await tx`update events set next_attempt_at = now() where type = ${EVENT.type} and status = 'pending'`;
        await tx`update webhook_endpoints set disabled_at = null`;
      });
      // The span starts at the commit: no delivery can be claimed before it.
      spanStart = now();
      cpuStart = await sampleCpu(server.child.pid!, sql, database.name, postgresLocal);
      machineStart = machineCpu();
      eluStart = receiver.utilization();
      log(`${label}: ${int(loaded.accepted)} events made due (the update took ${fmt(spanStart - updating, 0)} ms)`);
    } else {
      log(`${label}: preloading ${int(opts.events)} events with the endpoints active (${opts.concurrency} requests in flight, ${orgs} orgs)`);
      cpuStart = await sampleCpu(server.child.pid!, sql, database.name, postgresLocal);
      machineStart = machineCpu();
      eluStart = receiver.utilization();
      spanStart = now();
      let watching = true;
      let preloaded = false;
      // The drain's end (backlog 0 once the preload is over), from /metrics, while the deliveries run.
      const watchDrain = (async () => {
        while (watching && drainedAt === null) {
          const done = preloaded;
          if ((await backlogOf(server.port)) === 0 && done) drainedAt = now();
          await sleep(METRICS_POLL_MS);
        }
      })();
      stopWatching = async () => {
        watching = false;
        await watchDrain.catch(() => {});
      };
      onCleanup(stopWatching);
      loaded = await preload(server.port, keys, opts.events, opts.concurrency, preloadBatch, EVENT_BODY);
      preloaded = true;
      log(`${label}: preloaded in ${fmt(loaded.seconds, 2)} s; waiting for the deliveries`);
    }
    notes.push(...loaded.problems);
    if (loaded.accepted === 0) throw new Error(`no event accepted in the preload (${loaded.problems.join('; ')})`);
    const target = loaded.accepted;
    if (!(await until(() => receiver.unique >= target, opts.timeoutMs))) {
      throw new Error(`only ${receiver.unique} of ${target} delivered after ${opts.timeoutMs / 1000} s`);
    }
    const spanEnd = now();
    await stopWatching();
    const receiverBusy = receiver.utilization(eluStart).utilization;
    const machineEnd = machineCpu();
    const cpuEnd = await sampleCpu(server.child.pid!, sql, database.name, postgresLocal);
    const accepted = loaded.accepted;
    const recorded = await until(async () => (await statusCount(sql, EVENT.type, 'delivered')) >= accepted, 60_000, 50);
    const recordedAt = now();
    if (!recorded) notes.push('not every delivery was recorded in Postgres within 60 s of the last one');
    await sleep(200); // late duplicates, if any
    const collected = await receiver.collect();
    const outcomes = outcomesSince(outcomesStart, await deliveryOutcomes(server.port));
    await stopServer(server, notes);

    const arrivals = collected.at.slice(0, loaded.accepted);
    const first = arrivals[0]!;
    const last = arrivals[arrivals.length - 1]!;
    const deliverySeconds = (last - first) / 1000;
    const rate = (arrivals.length - 1) / deliverySeconds;
    log(`${label}: ${int(arrivals.length)} deliveries in ${fmt(deliverySeconds, 2)} s → ${int(rate)}/s; outcomes ${JSON.stringify(outcomes)}`);
    if (collected.ids.length > loaded.accepted) notes.push(`${collected.ids.length - loaded.accepted} more distinct webhook-ids arrived than events were accepted`);
    if (outcomes.retry > 0 || outcomes.failed > 0) notes.push(`retries ${outcomes.retry}, failed ${outcomes.failed}: the receiver answers 200 to everything, so these are the server's own errors (timeouts?)`);
    const spanSeconds = (spanEnd - spanStart) / 1000;
    return {
      workers,
      method,
      preloadBatch,
      events: loaded.accepted,
      preloadSeconds: loaded.seconds,
      firstDeliveryMs: first - spanStart,
      deliverySeconds,
      perSecond: perSecond(arrivals),
      acceptedAtS: method === 'live' ? (loaded.endedAt - spanStart) / 1000 : null,
      drainedAtS: drainedAt === null ? null : (drainedAt - spanStart) / 1000,
      deliveredAtS: method === 'live' ? (last - spanStart) / 1000 : null,
      recordedAfterS: recorded ? (recordedAt - last) / 1000 : null,
      outcomes,
      checks: checksOf(collected),
      cpu: cpuUse(cpuStart, cpuEnd, spanSeconds, postgresLocal),
      machineCores: machineBusyCores(machineStart, machineEnd),
      receiverBusy,
      notes,
    };
  } finally {
    await runCleanups(mark);
  }
}

// ---------------------------------------------------------------- 2. latency

interface LatencyRow {
  what: string;
  stats: Stats;
  min: number | null;
  count: number;
}

interface LatencyResult {
  seconds: number;
  sent: number;
  statuses: StatusCounter;
  errors: number;
  achieved: number;
  late: Stats;
  delivered: number;
  deliveredWithout202: number;
  acceptedNotDelivered: number;
  misrouted: number;
  recorded: number;
  outcomes: Outcomes;
  checks: Checks;
  rows: LatencyRow[];
  loopDelay: { p99: number; max: number };
  receiverBusy: number;
  notes: string[];
  failure?: string;
}

function latencyRow(what: string, samples: number[]): LatencyRow {
  let min: number | null = null;
  for (const s of samples) if (min === null || s < min) min = s;
  return { what, stats: stats(samples), min, count: samples.length };
}

async function benchLatency(baseUrl: string): Promise<LatencyResult> {
  const mark = cleanupMark();
  const notes: string[] = [];
  const type = 'bench.delivery.lag';
  try {
    const database = await createDatabase(baseUrl);
    onCleanup(database.drop);
    const dataDir = tempDataDir(opts.dataDirBase, 'delivery-lag');
    const total = opts.rate * opts.duration;
    const orgs = orgsFor(total + opts.warmup);
    const receiver = await ReceiverThread.start(orgs);
    onCleanup(() => receiver.stop());
    log(`latency: starting server (DATA_DIR ${dataDir}), DELIVERY_WORKERS ${opts.latencyWorkers}`);
    const server = await startServer(database.url, dataDir, {
      DURABILITY: opts.durability,
      DELIVERY_WORKERS: String(opts.latencyWorkers),
      WEBHOOK_ALLOW_PRIVATE: 'true',
    });
    onCleanup(async () => void (await server.stop()));
    const sql = connect(database.url, { max: 1 });
    onCleanup(() => sql.end({ timeout: 5 }));
    const keys = await createKeys(server, 'delivery latency', orgs);
    await warmKeys(server, keys);
    await configureEndpoints(server.port, keys, receiver);

    if (opts.warmup > 0) {
      log(`latency: warm-up, ${int(opts.warmup)} events at ${int(opts.rate)}/s`);
      const warm = new PacedClient(server.port, keys, 'bench.delivery.warmup', opts.rate, opts.warmup, opts.connections);
      await warm.run(60_000);
      const accepted = warm.statuses.counts.get(202) ?? 0;
      if (warm.statuses.non202 > 0 || warm.errors > 0) notes.push(`warm-up: non-202 ${warm.statuses.describeNon202()}, errors ${warm.errors}`);
      if (!(await until(() => receiver.unique >= accepted, 60_000))) notes.push(`warm-up: only ${receiver.unique} of ${accepted} delivered after 60 s`);
      // Recorded, so their outcomes are counted before the measured ones start.
      await until(async () => (await statusCount(sql, 'bench.delivery.warmup', 'delivered')) >= accepted, 30_000, 50);
      await receiver.reset();
    }
    const outcomesStart = await deliveryOutcomes(server.port);
    const loopDelay = monitorEventLoopDelay({ resolution: 1 });
    log(`latency: ${int(opts.rate)} events/s for ${opts.duration} s over ${opts.connections} connections`);
    const eluStart = receiver.utilization();
    loopDelay.enable();
    const client = new PacedClient(server.port, keys, type, opts.rate, total, opts.connections);
    await client.run(opts.duration * 1000 + 30_000);
    loopDelay.disable();
    const accepted = client.statuses.counts.get(202) ?? 0;
    if (!(await until(() => receiver.unique >= accepted, 30_000))) notes.push(`after 30 s only ${int(receiver.unique)} of ${int(accepted)} accepted events were delivered`);
    const receiverBusy = receiver.utilization(eluStart).utilization;
    await until(async () => (await statusCount(sql, type, 'delivered')) >= accepted, 30_000, 50);
    const recorded = await statusCount(sql, type, 'delivered');
    await sleep(200);
    const collected = await receiver.collect();
    const outcomes = outcomesSince(outcomesStart, await deliveryOutcomes(server.port));
    await stopServer(server, notes);

    const fromAck: number[] = [];
    const fromSend: number[] = [];
    let without202 = 0;
    let misrouted = 0;
    const delivered = new Set<string>();
    collected.ids.forEach((id, j) => {
      const i = client.indexOf.get(id);
      if (i === undefined) {
        without202++;
        return;
      }
      delivered.add(id);
      // The paced client sends request i with keys[i % keys.length]: org i % orgs, receiver port i % orgs.
      if (collected.org[j] !== i % keys.length) misrouted++;
      fromAck.push(collected.at[j]! - client.ackAt[i]!);
      fromSend.push(collected.at[j]! - client.sentAt[i]!);
    });
    let acceptedNotDelivered = 0;
    for (const id of client.indexOf.keys()) if (!delivered.has(id)) acceptedNotDelivered++;
    const seconds = (client.finished - client.started) / 1000;
    if (accepted / seconds < 0.95 * opts.rate) notes.push(`**the target rate was not reached** (${int(accepted / seconds)} 202/s)`);
    return {
      seconds,
      sent: total,
      statuses: client.statuses,
      errors: client.errors,
      achieved: accepted / seconds,
      late: stats(client.lateness()),
      delivered: delivered.size,
      deliveredWithout202: without202,
      acceptedNotDelivered,
      misrouted,
      recorded,
      outcomes,
      checks: checksOf(collected),
      rows: [
        latencyRow('**delivered − its 202 arrived**', fromAck),
        latencyRow('delivered − client send (payload `sent_at`)', fromSend),
      ],
      loopDelay: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
      receiverBusy,
      notes,
    };
  } finally {
    await runCleanups(mark);
  }
}

// ---------------------------------------------------------------- markdown

const esc = (text: string) => text.replace(/\|/g, '\\|');
const cores = (cpu: CpuUse, machine: number | null) =>
  `${fmt(cpu.serverMain, 2)} | ${fmt(cpu.serverOther, 2)} | ${fmt(cpu.postgres, 2)} | ${fmt(machine, 2)}`;
const outcomeCells = (o: Outcomes) => `${int(o.delivered)} / ${int(o.retry)} / ${int(o.failed)} / ${int(o.deferred)}`;
const checkCell = (r: { events: number; checks: Checks }) =>
  `${int(r.checks.oneV1Entry)} / ${int(r.checks.signatureOk)} of ${int(r.checks.requests)}`;
const spread = (p: ThroughputResult['perSecond']) => (p === null ? 'n/a' : `${int(p.min)} / ${int(p.median)} / ${int(p.max)}`);

function dueTable(results: ThroughputResult[]): string[] {
  const lines = [
    '| events per preload request | DELIVERY_WORKERS | events | first delivery after ms | delivery s | **deliveries/s** | per second min / median / max | recorded in Postgres + s | outcomes delivered / retry / failed / deferred | one `v1,` entry / signature verified | server main thread, cores | server other threads, cores | Postgres backends, cores | machine busy, cores | receiver loop busy |',
    '|---:|---:|---:|---:|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    if (r.failure !== undefined) {
      lines.push(`| ${r.preloadBatch} | ${r.workers} | | | | **not measured: ${esc(r.failure)}** | | | | | | | | | |`);
      continue;
    }
    lines.push(
      `| ${r.preloadBatch} | ${r.workers} | ${int(r.events)} | ${fmt(r.firstDeliveryMs, 0)} | ${fmt(r.deliverySeconds, 2)} | **${int((r.events - 1) / r.deliverySeconds)}** | ${spread(r.perSecond)} | ` +
        `${fmt(r.recordedAfterS, 2)} | ${outcomeCells(r.outcomes)} | ${checkCell(r)} | ${cores(r.cpu, r.machineCores)} | ${fmt(r.receiverBusy * 100, 0)} % |`,
    );
  }
  return lines;
}

function liveTable(results: ThroughputResult[]): string[] {
  const lines = [
    '| events per preload request | DELIVERY_WORKERS | events | accepted/s (preload) | last 202 at s | log drained at s | first delivery at s | N-th delivery at s | **deliveries/s** (1st → N-th) | end to end events/s | recorded in Postgres + s | outcomes delivered / retry / failed / deferred | one `v1,` entry / signature verified | server main thread, cores | server other threads, cores | Postgres backends, cores | machine busy, cores | receiver loop busy |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    if (r.failure !== undefined) {
      lines.push(`| ${r.preloadBatch} | ${r.workers} | | | | | | | **not measured: ${esc(r.failure)}** | | | | | | | | | |`);
      continue;
    }
    lines.push(
      `| ${r.preloadBatch} | ${r.workers} | ${int(r.events)} | ${int(r.events / r.preloadSeconds)} | ${fmt(r.acceptedAtS, 2)} | ${fmt(r.drainedAtS, 2)} | ` +
        `${fmt(r.firstDeliveryMs === null ? null : r.firstDeliveryMs / 1000, 2)} | ${fmt(r.deliveredAtS, 2)} | **${int((r.events - 1) / r.deliverySeconds)}** | ` +
        `${int(r.events / r.deliveredAtS!)} | ${fmt(r.recordedAfterS, 2)} | ${outcomeCells(r.outcomes)} | ${checkCell(r)} | ${cores(r.cpu, r.machineCores)} | ${fmt(r.receiverBusy * 100, 0)} % |`,
    );
  }
  return lines;
}

function throughputMarkdown(results: ThroughputResult[]): string {
  const orgs = orgsFor(opts.events);
  const due = results.filter((r) => r.method === 'due');
  const live = results.filter((r) => r.method === 'live');
  const notes = results.flatMap((r) =>
    [...r.notes, ...(r.failure === undefined ? r.checks.problems : [])].map((note) => `- ${r.method}, ${r.preloadBatch} per request, workers ${r.workers}: ${note}`),
  );
  const deferred = results.some((r) => r.outcomes.deferred > 0);
  return [
    `### Delivery throughput (${int(opts.events)} events per setting)`,
    '',
    `Per setting: a fresh database, DATA_DIR and server (WEBHOOK_ALLOW_PRIVATE=true, DELIVERY_WORKERS as in the table), ${orgs} enterprise orgs, each`,
    'with its endpoint (POST /api/webhook/config) on its own port of the receiver: a worker thread of the bench running one node:http server',
    'per org that answers 200 with an empty body as soon as a request\'s body is in, and stamps its arrival (process.hrtime).',
    `Before the measurement, ${WARMUP_PER_ORG} events per org are delivered and recorded (undici connections open, code warm).`,
    `Events are preloaded through POST /api/events/batch, ${opts.concurrency} requests in flight, rotating over the orgs request by request.`,
    '“events per preload request” is therefore the length of each run of one org\'s events in the log, and in the order they come due:',
    '1000 (the API\'s maximum) is a burst per org; 16 interleaves the orgs finely.',
    '**deliveries/s = (N − 1) / (arrival of the N-th distinct webhook-id − arrival of the first)**, both stamped by the receiver.',
    '“cores”: CPU seconds over the timed span (from /proc) / its wall seconds — the server\'s main thread (dispatcher: claims, signing,',
    'recording; also the drain loop and HTTP), its other threads (delivery and persist workers, LMDB, GC), the Postgres backends of the',
    `bench database, and the whole machine (all processes; ${os.cpus().length} CPUs). “receiver loop busy”: event-loop utilisation of the receiver thread.`,
    'outcomes: `triggers_webhook_deliveries_total{outcome}` over the run (deferred = claimed but held back by the per-endpoint cap or a breaker, not sent).',
    '“recorded in Postgres + s”: after the N-th delivery, until every event read `delivered` in Postgres (polled every 50 ms).',
    '',
    ...(due.length > 0
      ? [
          '#### Method `due`: delivery alone',
          '',
          'The endpoints are disabled (`update webhook_endpoints set disabled_at = now()` in the bench database) while the N events are accepted',
          'and drained, so they are stored with nothing scheduled. Then one transaction sets `next_attempt_at = now()` on all of them and re-enables',
          'the endpoints, as POST /api/webhook/config does for one org\'s disabled endpoint, here for every org at once so they all start together.',
          'That is the state the drain leaves an event in when its org has an endpoint. The span starts at that commit; the dispatcher finds',
          'the events at its next poll (≤ 250 ms, “first delivery after”). Nothing else runs in the span: no HTTP ingest, no drain.',
          '',
          ...dueTable(due),
          '',
        ]
      : []),
    ...(live.length > 0
      ? [
          '#### Method `live`: delivered as they drain',
          '',
          'The endpoints are active during the preload, so the events become due as the drain writes them; ingest, drain and delivery overlap.',
          'Times are from the first preload request. “end to end” = N / (N-th delivery − first request). When the N-th delivery comes long after',
          'the last 202 and the drained log, delivery is what bounds the run.',
          '',
          ...liveTable(live),
          '',
        ]
      : []),
    ...(deferred
      ? [
          '- **deferred**: the dispatcher claims up to DELIVERY_WORKERS × 128 due deliveries at once, oldest first. It leaves out the orgs that',
          '  already have 32 in flight, but does not limit how many of one org\'s events a single claim takes. A claimed delivery whose endpoint',
          '  already has 32 in flight is not sent but rescheduled 200 ms later (src/delivery/dispatcher.ts: IN_FLIGHT_PER_ENDPOINT, BUSY_DEFER_MS,',
          '  saturatedOrgs). So when one org\'s run of due events is longer than that, the rest of what the claim took waits 200 ms, however fast',
          '  the receiver answers, and each deferral costs Postgres a claim and an update. More DELIVERY_WORKERS claim more at once, so they defer more.',
        ]
      : []),
    ...(results.some((r) => r.recordedAfterS !== null && r.recordedAfterS > 1)
      ? [
          '- **recorded in Postgres + s above 1 s**: the deliveries went out faster than their outcomes were written. The dispatcher writes',
          '  outcomes in one transaction per 10 ms of deliveries, one transaction after the other. Batches waiting behind a slow one are not merged,',
          '  so the backlog grows. An unrecorded delivery is claimed again once its lease (WEBHOOK_TIMEOUT + 60 s) runs out, and then it is sent twice.',
        ]
      : []),
    ...notes,
  ].join('\n').trimEnd();
}

function latencyMarkdown(r: LatencyResult): string {
  const title = `### Accept → delivered latency at ${int(opts.rate)} events/s`;
  if (r.failure !== undefined) return [title, '', `**Not measured: ${r.failure}**`].join('\n');
  return [
    title,
    '',
    `DELIVERY_WORKERS ${opts.latencyWorkers}, other settings default (PERSIST_LINGER ${defaultOf('PERSIST_LINGER')}), ${orgsFor(opts.rate * opts.duration + opts.warmup)} orgs with endpoints on the receiver thread as above.`,
    `A paced client (raw HTTP/1.1, ${opts.connections} keep-alive connections, one request at a time each) sends single events to POST /api/events`,
    `on a fixed schedule of ${int(opts.rate)}/s for ${opts.duration} s, rotating over the orgs, after a warm-up of ${int(opts.warmup)} events; each payload carries its send time.`,
    'The receiver stamps each delivery\'s arrival with process.hrtime in its own thread; the client stamps the 202\'s arrival on the main thread: one clock,',
    'sub-millisecond. Matched by event id (the 202\'s `id` = the delivery\'s `webhook-id`).',
    '',
    '| target/s | seconds | sent | 202 | non-202 | errors | 202/s achieved | send late P50 / P99 / max ms | delivered (distinct) | 202 not delivered | delivered without a 202 | wrong org | recorded `delivered` in Postgres | outcomes delivered / retry / failed / deferred | one `v1,` entry / signature verified |',
    '|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|',
    `| ${int(opts.rate)} | ${fmt(r.seconds, 2)} | ${int(r.sent)} | ${int(r.statuses.counts.get(202) ?? 0)} | ${r.statuses.describeNon202()} | ${r.errors} | ${int(r.achieved)} | ` +
      `${fmt(r.late.p50, 1)} / ${fmt(r.late.p99, 1)} / ${fmt(r.late.max, 1)} | ${int(r.delivered)} | ${int(r.acceptedNotDelivered)} | ${int(r.deliveredWithout202)} | ${int(r.misrouted)} | ` +
      `${int(r.recorded)} | ${outcomeCells(r.outcomes)} | ${int(r.checks.oneV1Entry)} / ${int(r.checks.signatureOk)} of ${int(r.checks.requests)} |`,
    '',
    '| latency | deliveries | P50 ms | P95 ms | P99 ms | max ms | min ms |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...r.rows.map((row) => `| ${row.what} | ${int(row.count)} | ${fmt(row.stats.p50)} | ${fmt(row.stats.p95)} | ${fmt(row.stats.p99)} | ${fmt(row.stats.max)} | ${fmt(row.min)} |`),
    '',
    `- The 202 arrival is stamped on the client's event loop: its delay (P99 ${fmt(r.loopDelay.p99, 1)} ms, max ${fmt(r.loopDelay.max, 1)} ms during the run) makes 202s look later and latencies shorter. Receiver loop busy ${fmt(r.receiverBusy * 100, 0)} %.`,
    '- Signatures: the receiver counts the entries of every `webhook-signature` header (exactly one `v1,` expected: no secret rotation here) and verifies the HMAC with the org\'s secret.',
    ...[...r.notes, ...r.checks.problems].map((note) => `- ${note}`),
  ].join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const base = await postgresBaseUrl();
  const pgVersion = await postgresVersion(base.url);
  const postgresLocal = isLocalHost(base.url);
  const current = {
    phases: opts.phases.join(','), workers: opts.workers.join(','), methods: opts.methods.join(','), events: opts.events,
    'preload-batches': opts.preloadBatches.join(','), concurrency: opts.concurrency, timeout: opts.timeoutMs / 1000, rate: opts.rate, duration: opts.duration,
    connections: opts.connections, 'latency-workers': opts.latencyWorkers, warmup: opts.warmup, orgs: opts.orgs, durability: opts.durability,
  };
  const nonDefault = nonDefaults(DEFAULTS, current);
  const load = os.loadavg()[0]!;
  const facts = [
    ...machineFacts({ command: commandLine('bench:delivery'), tools: '', postgres: base.description, pgVersion }),
    `- DATA_DIR under ${opts.dataDirBase} (filesystem ${filesystemOf(opts.dataDirBase)}); one acceptor thread; DURABILITY ${opts.durability}; WEBHOOK_ALLOW_PRIVATE=true; other settings default`,
    `- Receiver: a worker thread of the bench process (node:http ${process.version}), one port per org; the bench, the server, Postgres and the receiver share the machine`,
    ...(load > 1.5 ? [`- **Noisy: the 1-minute load average was ${load.toFixed(2)} at start (> 1.5): other work was running on this machine**`] : []),
    ...(nonDefault.length > 0 ? [`- Non-default parameters: ${nonDefault.join(', ')} (short runs are not comparable with the defaults)`] : []),
  ];

  const throughput: ThroughputResult[] = [];
  let latency: LatencyResult | null = null;
  try {
    if (opts.phases.includes('throughput')) {
      for (const method of opts.methods) {
        for (const preloadBatch of opts.preloadBatches) {
          for (const workers of opts.workers) {
            try {
              throughput.push(await benchThroughput(workers, method, preloadBatch, base.url, postgresLocal));
            } catch (error) {
              if (interrupted) throw error;
              const failure = describeFailure(error);
              log(`workers ${workers}, ${method}, ${preloadBatch} per request: FAILED: ${failure}`);
              throughput.push({
                workers, method, preloadBatch, events: 0, preloadSeconds: 0, firstDeliveryMs: null, deliverySeconds: 0, perSecond: null,
                acceptedAtS: null, drainedAtS: null, deliveredAtS: null, recordedAfterS: null, outcomes: { delivered: 0, retry: 0, failed: 0, deferred: 0 },
                checks: { requests: 0, duplicates: 0, oneV1Entry: 0, signatureOk: 0, problems: [] },
                cpu: { serverMain: null, serverOther: null, postgres: null }, machineCores: null, receiverBusy: 0, notes: [], failure,
              });
            }
          }
        }
      }
    }
    if (opts.phases.includes('latency')) {
      try {
        latency = await benchLatency(base.url);
      } catch (error) {
        if (interrupted) throw error;
        const failure = describeFailure(error);
        log(`latency: FAILED: ${failure}`);
        latency = {
          seconds: 0, sent: 0, statuses: new StatusCounter(), errors: 0, achieved: 0, late: stats([]), delivered: 0, deliveredWithout202: 0,
          acceptedNotDelivered: 0, misrouted: 0, recorded: 0, outcomes: { delivered: 0, retry: 0, failed: 0, deferred: 0 },
          checks: { requests: 0, duplicates: 0, oneV1Entry: 0, signatureOk: 0, problems: [] }, rows: [], loopDelay: { p99: 0, max: 0 },
          receiverBusy: 0, notes: [], failure,
        };
      }
    }
  } finally {
    await runCleanups(); // the embedded Postgres if any
  }

  publishSection({
    title: 'Delivery (issue 5)', note: opts.note, facts, begin: SECTION_BEGIN, end: SECTION_END, write: opts.writeResults,
    parts: [...(throughput.length > 0 ? [throughputMarkdown(throughput)] : []), ...(latency !== null ? [latencyMarkdown(latency)] : [])],
    failed: throughput.some((r) => r.failure !== undefined) || latency?.failure !== undefined,
  });
}

runBench(main);
