// `npm run bench:sweep`: the server's thread settings on this machine. For each setting of a grid
// of ACCEPTOR_THREADS × PERSIST_WORKERS × DELIVERY_WORKERS: a fresh database, DATA_DIR, webhook
// receiver and server (its Postgres connections through the bench's TCP proxy), then
//   1. ingest: many connections for a fixed time against POST /api/events (wrk, else autocannon);
//   2. drain: with the proxy holding every query, N events are preloaded into the log, then the
//      proxy lets go and the drain into Postgres is timed (the method of native-bench/drain.ts);
//   3. delivery: M events of orgs whose endpoints are disabled are stored, then made due at once
//      and timed until the receiver has them all (the `due` method of native-bench/delivery.ts).
// Writes native-bench/results/<date>-sweep.md and .svg (and points results/LATEST.md at them),
// with a rule of thumb derived from the figures of this run.
// Usage: npm run bench:sweep [-- --acceptors 1,2 --persist 1,2 --delivery 1,2 --duration 10 ...]
//        npm run bench:sweep -- --quick          (smoke test)
//        npm run bench:sweep -- --help
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type Sql } from '../src/db/postgres.ts';
import type { PgProxy } from '../test/helpers/pg-proxy.ts';
import { spreadBarsSpec, writeChart, type SpreadBar } from './chart.ts';
import {
  runBench,
  AUTOCANNON_VERSION, backlogOf, benchClock, cannon, cannonPosts, cleanupMark, commandLine, countRows, createKeys,
  datedResultFile, describeFailure, EVENT, filesystemOf, fmt, int, interrupted, log, machineBusyCores, machineCpu, machineFacts,
  nonDefaults, onCleanup, parseBenchArgs, positive, positiveList, postgresBaseUrl, postgresVersion, preload, ROOT, runCleanups,
  runWrk, sleep, spread, spreadCell, startServer, stats, stopServer, updateLatest, waitForBacklog, warmKeys, wrkLatency, wrkVersion,
  type Spread, type Stats, tempDataDir, proxiedDatabase,
} from './lib.ts';
import { configureEndpoints, ReceiverThread } from './receiver-thread.ts';

const KNOBS = ['ACCEPTOR_THREADS', 'PERSIST_WORKERS', 'DELIVERY_WORKERS'] as const;
type Knob = (typeof KNOBS)[number];
type Setting = Record<Knob, number>;
/** The figure each knob is meant to raise. */
const OWN_FIGURE = { ACCEPTOR_THREADS: 'ingest', PERSIST_WORKERS: 'drain', DELIVERY_WORKERS: 'delivery' } as const;
type FigureName = (typeof OWN_FIGURE)[Knob];
const FIGURE_TITLES: Record<FigureName, string> = { ingest: 'ingest req/s', drain: 'drain events/s', delivery: 'deliveries/s' };
/** Below this gain (or above its inverse, for a loss) a change counts as no change. */
const NOTICEABLE = 1.05;
const EVENTS_PER_KEY = 90_000;
/** The ingest run's orgs are sized for this rate (more than the server reaches here). */
const INGEST_CEILING = 200_000;
const DRAIN_TYPE = 'bench.sweep.drain';
const DELIVERY_TYPE = 'bench.sweep.delivery';
/** Events per preload request of the delivery phase (one org each): runs of one org's events in the order they come due. */
const DELIVERY_PRELOAD_BATCH = 100;
const METRICS_POLL_MS = 50;

const USAGE = `npm run bench:sweep -- [options]
  --acceptors <list>    ACCEPTOR_THREADS values (default 1,2)
  --persist <list>      PERSIST_WORKERS values (default 1,2)
  --delivery <list>     DELIVERY_WORKERS values (default 1,2)
  --rounds <n>          times the whole grid runs (the order rotates); figures are min/median/max (default 1)
  --duration <s>        seconds of each ingest run (default 10)
  --connections <n>     connections of the ingest run (default 64)
  --tool <name>         ingest load generator: wrk or autocannon (default wrk when on the PATH)
  --drain-events <n>    events preloaded for the drain measurement (default 50000; 0 skips it)
  --delivery-events <n> events delivered in the delivery measurement (default 10000; 0 skips it)
  --orgs <n>            orgs (receiver endpoints) of the delivery measurement (default 8)
  --durability <mode>   DURABILITY of the server, fsync or commit (default fsync, the server default)
  --timeout <s>         give up on one drain or delivery measurement after this long (default 300)
  --quick               smoke test: --duration 2 --drain-events 10000 --delivery-events 2000 (flags given explicitly still win)`;

// ---------------------------------------------------------------- arguments

const { args, common } = parseBenchArgs({
  acceptors: { type: 'string', default: '1,2' },
  persist: { type: 'string', default: '1,2' },
  delivery: { type: 'string', default: '1,2' },
  rounds: { type: 'string', default: '1' },
  duration: { type: 'string' },
  connections: { type: 'string', default: '64' },
  tool: { type: 'string' },
  'drain-events': { type: 'string' },
  'delivery-events': { type: 'string' },
  orgs: { type: 'string', default: '8' },
  durability: { type: 'string', default: 'fsync' },
  timeout: { type: 'string', default: '300' },
  quick: { type: 'boolean', default: false },
}, USAGE);

const SIZES = { duration: '10', 'drain-events': '50000', 'delivery-events': '10000' };
const QUICK_SIZES = { duration: '2', 'drain-events': '10000', 'delivery-events': '2000' };
const size = (name: keyof typeof SIZES) => args[name] ?? (args.quick ? QUICK_SIZES : SIZES)[name];

const wrk = wrkVersion();
const tool = args.tool ?? (wrk ? 'wrk' : 'autocannon');
if (tool !== 'wrk' && tool !== 'autocannon') {
  console.error(`--tool: expected wrk or autocannon, got "${tool}"`);
  process.exit(2);
}
if (tool === 'wrk' && !wrk) {
  console.error('--tool wrk: wrk is not on the PATH (apt install wrk), or use --tool autocannon');
  process.exit(2);
}
if (args.durability !== 'fsync' && args.durability !== 'commit') {
  console.error(`--durability: expected fsync or commit, got "${args.durability}"`);
  process.exit(2);
}

const opts = {
  values: {
    ACCEPTOR_THREADS: positiveList('acceptors', args.acceptors, 1, 64),
    PERSIST_WORKERS: positiveList('persist', args.persist, 1, 16),
    DELIVERY_WORKERS: positiveList('delivery', args.delivery, 1, 16),
  } satisfies Record<Knob, number[]>,
  rounds: positive('rounds', args.rounds),
  duration: positive('duration', size('duration')),
  connections: positive('connections', args.connections),
  tool: tool as 'wrk' | 'autocannon',
  drainEvents: positive('drain-events', size('drain-events'), true),
  deliveryEvents: positive('delivery-events', size('delivery-events'), true),
  orgs: positive('orgs', args.orgs),
  durability: args.durability,
  timeoutMs: positive('timeout', args.timeout) * 1000,
  quick: args.quick,
  ...common,
};
for (const knob of KNOBS) opts.values[knob] = [...new Set(opts.values[knob])].sort((a, b) => a - b);
const DEFAULTS = {
  acceptors: '1,2', persist: '1,2', delivery: '1,2', rounds: 1, duration: 10, connections: 64, 'drain-events': 50000,
  'delivery-events': 10000, orgs: 8, durability: 'fsync', timeout: 300,
};

const now = benchClock;
const label = (s: Setting) => `A${s.ACCEPTOR_THREADS} P${s.PERSIST_WORKERS} D${s.DELIVERY_WORKERS}`;

// ---------------------------------------------------------------- one setting

interface Result {
  setting: Setting;
  round: number;
  ingest: { perSecond: number; latency: Stats; non202: number; errors: number; busyCores: number | null } | null;
  drain: { events: number; seconds: number; perSecond: number; busyCores: number | null } | null;
  delivery: { events: number; seconds: number; perSecond: number; busyCores: number | null } | null;
  notes: string[];
  failure?: string;
}

/** Polls until `done()` or the deadline; false on timeout. */
async function until(done: () => boolean | Promise<boolean>, timeoutMs: number, everyMs: number): Promise<boolean> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (await done()) return true;
    if (now() > deadline) return false;
    await sleep(everyMs);
  }
}

async function measureIngest(port: number, keys: string[]): Promise<NonNullable<Result['ingest']>> {
  const machineStart = machineCpu();
  if (opts.tool === 'wrk') {
    const { json } = await runWrk({ port, keys, connections: opts.connections, duration: opts.duration });
    const e = json.errors;
    return {
      perSecond: json.requests / (json.duration_us / 1e6),
      latency: wrkLatency(json),
      non202: e.status,
      errors: e.connect + e.read + e.write + e.timeout,
      busyCores: machineBusyCores(machineStart, machineCpu()),
    };
  }
  const run = await cannon(cannonPosts(`http://127.0.0.1:${port}/api/events`, keys, opts.connections, { duration: opts.duration }));
  return {
    perSecond: run.statuses.total / run.seconds,
    latency: stats(run.samples),
    non202: run.statuses.non202,
    errors: run.result.errors,
    busyCores: machineBusyCores(machineStart, machineCpu()),
  };
}

/**
 * The drain of `drainEvents` events (native-bench/drain.ts's method): the proxy holds every query
 * while they are preloaded into the log, then lets go; timed until the backlog is 0 and the rows are in.
 * The keys must already be in every acceptor thread's cache (a cache miss would wait on the held proxy).
 */
async function measureDrain(port: number, proxy: PgProxy, sql: Sql, keys: string[], notes: string[]): Promise<NonNullable<Result['drain']>> {
  proxy.hold();
  const loaded = await preload(port, keys, opts.drainEvents, 8, 1000, JSON.stringify({ ...EVENT, type: DRAIN_TYPE }));
  notes.push(...loaded.problems);
  if (loaded.accepted === 0) throw new Error(`no event accepted in the drain preload (${loaded.problems.join('; ')})`);
  const machineStart = machineCpu();
  const released = now();
  proxy.release();
  const drained = await until(
    async () => (await backlogOf(port)) === 0 && (await countRows(sql, DRAIN_TYPE)) >= loaded.accepted,
    opts.timeoutMs,
    METRICS_POLL_MS,
  );
  const seconds = (now() - released) / 1000;
  if (!drained) throw new Error(`drain not finished after ${opts.timeoutMs / 1000} s`);
  return { events: loaded.accepted, seconds, perSecond: loaded.accepted / seconds, busyCores: machineBusyCores(machineStart, machineCpu()) };
}

/**
 * Deliveries of `deliveryEvents` events (native-bench/delivery.ts's `due` method): stored while
 * their orgs' endpoints are disabled (nothing scheduled), then made due and the endpoints enabled
 * in one transaction; rate = (N − 1) / (N-th distinct delivery − first), stamped by the receiver.
 */
async function measureDelivery(
  port: number, sql: Sql, keys: string[], receiver: ReceiverThread, notes: string[],
): Promise<NonNullable<Result['delivery']>> {
  await sql`update webhook_endpoints set disabled_at = now()`;
  const loaded = await preload(port, keys, opts.deliveryEvents, 8, DELIVERY_PRELOAD_BATCH, JSON.stringify({ ...EVENT, type: DELIVERY_TYPE }));
  notes.push(...loaded.problems);
  if (loaded.accepted === 0) throw new Error(`no event accepted in the delivery preload (${loaded.problems.join('; ')})`);
  await waitForBacklog(port, opts.timeoutMs);
  const rows = await countRows(sql, DELIVERY_TYPE);
  if (rows !== loaded.accepted) throw new Error(`${rows} delivery events in Postgres after the drain, ${loaded.accepted} accepted`);
  const machineStart = machineCpu();
  await sql.begin(async (tx) => {
    await tx`update events set next_attempt_at = now() where type = ${DELIVERY_TYPE} and status = 'pending'`;
    await tx`update webhook_endpoints set disabled_at = null`;
  });
  if (!(await until(() => receiver.unique >= loaded.accepted, opts.timeoutMs, 5))) {
    throw new Error(`only ${receiver.unique} of ${loaded.accepted} delivered after ${opts.timeoutMs / 1000} s`);
  }
  const busyCores = machineBusyCores(machineStart, machineCpu());
  const collected = await receiver.collect();
  const arrivals = collected.at.slice(0, loaded.accepted);
  const seconds = (arrivals[arrivals.length - 1]! - arrivals[0]!) / 1000;
  if (collected.duplicates > 0) notes.push(`${collected.duplicates} duplicate deliveries`);
  if (collected.signatureBad > 0) notes.push(`${collected.signatureBad} signatures did not verify`);
  return { events: arrivals.length, seconds, perSecond: (arrivals.length - 1) / seconds, busyCores };
}

async function measureSetting(setting: Setting, round: number, baseUrl: string): Promise<Result> {
  const mark = cleanupMark();
  const notes: string[] = [];
  try {
    const { database, proxy } = await proxiedDatabase(baseUrl);
    const dataDir = tempDataDir(opts.dataDirBase, 'sweep');
    const receiver = await ReceiverThread.start(opts.orgs);
    onCleanup(() => receiver.stop());
    log(`${label(setting)} (round ${round}): starting server`);
    const server = await startServer(proxy.urlFor(database.url), dataDir, {
      ...Object.fromEntries(KNOBS.map((knob) => [knob, String(setting[knob])])),
      DURABILITY: opts.durability,
      WEBHOOK_ALLOW_PRIVATE: 'true',
      // An interrupted run must not wait for batches the proxy still holds.
      SHUTDOWN_DRAIN_TIMEOUT: '0',
    });
    onCleanup(async () => void (await server.stop()));
    const sql = connect(database.url, { max: 1 });
    onCleanup(() => sql.end({ timeout: 5 }));

    // 1. ingest. Its orgs are reused by the drain's preload: after the run every acceptor thread has their keys cached.
    const ingestKeys = await createKeys(server, 'sweep ingest', Math.ceil((INGEST_CEILING * opts.duration + opts.drainEvents) / EVENTS_PER_KEY));
    await warmKeys(server, ingestKeys);
    const ingest = await measureIngest(server.port, ingestKeys);
    log(`${label(setting)}: ingest ${int(ingest.perSecond)} req/s, P50 ${fmt(ingest.latency.p50, 2)} P99 ${fmt(ingest.latency.p99, 2)} ms (${opts.tool})`);
    if (ingest.non202 > 0 || ingest.errors > 0) notes.push(`ingest: ${ingest.non202} non-202, ${ingest.errors} socket errors`);
    await waitForBacklog(server.port, opts.timeoutMs);

    // 2. drain
    let drain: Result['drain'] = null;
    if (opts.drainEvents > 0) {
      drain = await measureDrain(server.port, proxy, sql, ingestKeys, notes);
      log(`${label(setting)}: drained ${int(drain.events)} events in ${fmt(drain.seconds, 2)} s → ${int(drain.perSecond)} events/s`);
    }

    // 3. delivery
    let delivery: Result['delivery'] = null;
    if (opts.deliveryEvents > 0) {
      const keys = await createKeys(server, 'sweep delivery', Math.max(opts.orgs, 1));
      await configureEndpoints(server.port, keys, receiver);
      delivery = await measureDelivery(server.port, sql, keys, receiver, notes);
      log(`${label(setting)}: ${int(delivery.events)} deliveries in ${fmt(delivery.seconds, 2)} s → ${int(delivery.perSecond)}/s`);
    }
    await stopServer(server, notes);
    return { setting, round, ingest, drain, delivery, notes };
  } catch (error) {
    if (interrupted) throw error;
    const failure = describeFailure(error);
    log(`${label(setting)}: FAILED: ${failure}`);
    return { setting, round, ingest: null, drain: null, delivery: null, notes, failure };
  } finally {
    await runCleanups(mark);
  }
}

// ---------------------------------------------------------------- figures and the derived rule

const FIGURES: Record<FigureName, (r: Result) => number | null | undefined> = {
  ingest: (r) => r.ingest?.perSecond,
  drain: (r) => r.drain?.perSecond,
  delivery: (r) => r.delivery?.perSecond,
};

function grid(): Setting[] {
  const settings: Setting[] = [];
  for (const a of opts.values.ACCEPTOR_THREADS) {
    for (const p of opts.values.PERSIST_WORKERS) {
      for (const d of opts.values.DELIVERY_WORKERS) settings.push({ ACCEPTOR_THREADS: a, PERSIST_WORKERS: p, DELIVERY_WORKERS: d });
    }
  }
  return settings;
}

const same = (a: Setting, b: Setting) => KNOBS.every((knob) => a[knob] === b[knob]);

function spreadOf(results: Result[], setting: Setting, pick: (r: Result) => number | null | undefined): Spread | null {
  return spread(results.filter((r) => same(r.setting, setting)).map(pick).filter((v): v is number => typeof v === 'number' && Number.isFinite(v)));
}

/** Median over the other knobs' combinations of figure(knob = to) / figure(knob = from). */
function ratio(results: Result[], knob: Knob, from: number, to: number, figure: FigureName): number | null {
  const ratios: number[] = [];
  for (const setting of grid().filter((s) => s[knob] === from)) {
    const low = spreadOf(results, setting, FIGURES[figure]);
    const high = spreadOf(results, { ...setting, [knob]: to }, FIGURES[figure]);
    if (low !== null && high !== null && low.median > 0) ratios.push(high.median / low.median);
  }
  return spread(ratios)?.median ?? null;
}

const times = (r: number | null) => (r === null ? 'n/a' : `×${r.toFixed(2)} (${r >= 1 ? '+' : ''}${((r - 1) * 100).toFixed(0)} %)`);

/** What raising each knob did, step by step, and a rule of thumb from it: all from this run's figures. */
function derivedRule(results: Result[], loadAtStart: number): string[] {
  const lines: string[] = [];
  const figures = (Object.keys(FIGURES) as FigureName[]).filter((f) => results.some((r) => typeof FIGURES[f](r) === 'number'));
  const lowest = Object.fromEntries(KNOBS.map((knob) => [knob, opts.values[knob][0]!])) as Setting;
  const base = figures.map((f) => ({ f, s: spreadOf(results, lowest, FIGURES[f]) })).filter((x) => x.s !== null);
  if (base.length > 0) {
    const slowest = base.reduce((a, b) => (b.s!.median < a.s!.median ? b : a));
    lines.push(
      `- At ${label(lowest)}: ${base.map((x) => `${FIGURE_TITLES[x.f]} ${int(x.s!.median)}`).join(', ')}. ` +
        `For events with a webhook endpoint the sustained rate is at most the slowest stage: **${slowest.f}** here ` +
        '(the three are measured one after the other, each without the other two running; together they share the CPUs).',
    );
  }
  const gains: Array<{ knob: Knob; first: number; stopsAt: number | null; tried: number }> = [];
  for (const knob of KNOBS) {
    const values = opts.values[knob];
    if (values.length < 2 || !figures.includes(OWN_FIGURE[knob])) continue;
    let first: number | null = null;
    let stopsAt: number | null = null;
    for (let i = 1; i < values.length; i++) {
      const from = values[i - 1]!;
      const to = values[i]!;
      const own = ratio(results, knob, from, to, OWN_FIGURE[knob]);
      const others = figures.filter((f) => f !== OWN_FIGURE[knob]).map((f) => `${f} ${times(ratio(results, knob, from, to, f))}`);
      lines.push(`- ${knob} ${from} → ${to}: ${OWN_FIGURE[knob]} ${times(own)}${others.length > 0 ? `; ${others.join(', ')}` : ''}.`);
      if (first === null) first = own ?? 1;
      if (stopsAt === null && (own ?? 1) < NOTICEABLE) stopsAt = from;
    }
    gains.push({ knob, first: first ?? 1, stopsAt, tried: values[values.length - 1]! });
  }
  const helping = gains.filter((g) => g.first >= NOTICEABLE).sort((a, b) => b.first - a.first);
  const rule = [
    ...helping.map((g, i) =>
      `${i === 0 ? 'raise' : 'then'} ${g.knob} (first step ×${g.first.toFixed(2)} on ${OWN_FIGURE[g.knob]}` +
        `${g.stopsAt !== null ? `; stops helping beyond ${g.stopsAt}` : `; still helping at ${g.tried}, the most tried`})`,
    ),
    ...gains.filter((g) => g.first < NOTICEABLE).map((g) => `leave ${g.knob} at ${opts.values[g.knob][0]} (raising it gained less than ${((NOTICEABLE - 1) * 100).toFixed(0)} %)`),
  ];
  if (rule.length > 0) {
    lines.push(
      '',
      `**Suggested rule (derived from this run only: ${os.cpus().length} CPUs, ${opts.rounds} round(s), ${opts.quick ? 'quick mode, ' : ''}not a general law):** ` +
        `${rule.join('; ')}. A change under ${((NOTICEABLE - 1) * 100).toFixed(0)} % is counted as none; ` +
        `with ${os.cpus().length} CPUs shared by the server, Postgres and the load generator, threads beyond the core count compete with each other.` +
        (opts.rounds === 1 ? ' One round gives no measure of run-to-run noise: for a rule to rely on, use --rounds 3 on a quiet machine.' : '') +
        (loadAtStart > 1.5 ? ` The machine was busy at the start (load average ${loadAtStart.toFixed(2)}): take the figures as rough.` : ''),
    );
  }
  return lines;
}

// ---------------------------------------------------------------- markdown and chart

function table(results: Result[]): string {
  const lines = [
    '| ACCEPTOR_THREADS | PERSIST_WORKERS | DELIVERY_WORKERS | **ingest req/s** | ingest P50 ms | ingest P99 ms | machine busy, cores (ingest) | **drain events/s** | machine busy (drain) | **deliveries/s** | machine busy (delivery) | notes |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const setting of grid()) {
    const mine = results.filter((r) => same(r.setting, setting));
    if (mine.length === 0) continue;
    const c = (pick: (r: Result) => number | null | undefined, format: (v: number) => string) => spreadCell(spreadOf(results, setting, pick), format);
    const notes = [
      ...mine.filter((r) => r.failure !== undefined).map((r) => `**round ${r.round} failed: ${r.failure}**`),
      ...mine.flatMap((r) => r.notes.map((note) => (opts.rounds > 1 ? `round ${r.round}: ${note}` : note))),
    ].join('; ').replace(/\|/g, '\\|');
    lines.push(
      `| ${setting.ACCEPTOR_THREADS} | ${setting.PERSIST_WORKERS} | ${setting.DELIVERY_WORKERS} | ` +
        `**${c(FIGURES.ingest, int)}** | ${c((r) => r.ingest?.latency.p50, (v) => fmt(v, 2))} | ${c((r) => r.ingest?.latency.p99, (v) => fmt(v, 2))} | ` +
        `${c((r) => r.ingest?.busyCores, (v) => fmt(v, 2))} | **${c(FIGURES.drain, int)}** | ${c((r) => r.drain?.busyCores, (v) => fmt(v, 2))} | ` +
        `**${c(FIGURES.delivery, int)}** | ${c((r) => r.delivery?.busyCores, (v) => fmt(v, 2))} | ${notes} |`,
    );
  }
  return lines.join('\n');
}

function chartBars(results: Result[]): SpreadBar[] {
  const bars: SpreadBar[] = [];
  for (const figure of Object.keys(FIGURES) as FigureName[]) {
    for (const setting of grid()) {
      const s = spreadOf(results, setting, FIGURES[figure]);
      if (s === null) continue;
      bars.push({
        panel: FIGURE_TITLES[figure],
        group: `P${setting.PERSIST_WORKERS} D${setting.DELIVERY_WORKERS}`,
        series: `ACCEPTOR_THREADS ${setting.ACCEPTOR_THREADS}`,
        ...s,
      });
    }
  }
  return bars;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const loadAtStart = os.loadavg()[0]!;
  const base = await postgresBaseUrl();
  const pgVersion = await postgresVersion(base.url);
  const command = commandLine('bench:sweep');
  const current = {
    acceptors: opts.values.ACCEPTOR_THREADS.join(','), persist: opts.values.PERSIST_WORKERS.join(','), delivery: opts.values.DELIVERY_WORKERS.join(','),
    rounds: opts.rounds, duration: opts.duration, connections: opts.connections, 'drain-events': opts.drainEvents,
    'delivery-events': opts.deliveryEvents, orgs: opts.orgs, durability: opts.durability, timeout: opts.timeoutMs / 1000,
  };
  const nonDefault = nonDefaults(DEFAULTS, current);
  const toolName = opts.tool === 'wrk' ? wrk! : `autocannon ${AUTOCANNON_VERSION}`;
  const facts = [
    ...machineFacts({ command, tools: `ingest load: ${toolName}`, postgres: base.description, pgVersion }),
    `- DATA_DIR under ${opts.dataDirBase} (filesystem ${filesystemOf(opts.dataDirBase)}); DURABILITY ${opts.durability}; other settings at their defaults`,
    ...(loadAtStart > 1.5 ? [`- **Noisy: the 1-minute load average was ${loadAtStart.toFixed(2)} at the start**`] : []),
    ...(nonDefault.length > 0 ? [`- Non-default parameters: ${nonDefault.join(', ')} (short runs are not comparable with the defaults)`] : []),
  ];

  const settings = grid();
  const results: Result[] = [];
  try {
    for (let round = 1; round <= opts.rounds; round++) {
      // Rotate the order each round, so no setting always runs first (cold machine) or last.
      const order = settings.map((_, i) => settings[(i + round - 1) % settings.length]!);
      for (const setting of order) results.push(await measureSetting(setting, round, base.url));
    }
  } finally {
    await runCleanups(); // the embedded Postgres if any
  }
  if (interrupted) return;

  const rule = derivedRule(results, loadAtStart);
  const failed = results.some((r) => r.failure !== undefined);
  const section = [
    '# Thread settings sweep (`npm run bench:sweep`)',
    '',
    ...(opts.note ? [`**${opts.note}**`, ''] : []),
    ...facts,
    '',
    '## How',
    '',
    `Each setting of ACCEPTOR_THREADS ${opts.values.ACCEPTOR_THREADS.join('/')} × PERSIST_WORKERS ${opts.values.PERSIST_WORKERS.join('/')} × ` +
      `DELIVERY_WORKERS ${opts.values.DELIVERY_WORKERS.join('/')} (${opts.rounds} round(s), the order rotating) gets a fresh database, DATA_DIR, server and`,
    'webhook receiver (a worker thread of the bench, one port per org); the server reaches Postgres through a TCP proxy in the bench.',
    '',
    `1. **Ingest**: ${toolName}, ${opts.connections} connections, ${opts.duration} s, POST /api/events rotating over enterprise orgs: req/s = answers / seconds; P50/P99 ms.`,
    `2. **Drain** (native-bench/drain.ts's method): the proxy holds every query while ${int(opts.drainEvents)} events are preloaded`,
    '   (POST /api/events/batch, 1000 per request, 8 in flight); then it lets them through and the drain is timed until `/metrics`',
    `   backlog is 0 and the rows are in Postgres (polled every ${METRICS_POLL_MS} ms): events/s = events / seconds.`,
    `3. **Delivery** (native-bench/delivery.ts's \`due\` method): ${int(opts.deliveryEvents)} events of ${opts.orgs} orgs are stored while their endpoints are disabled`,
    `   (${DELIVERY_PRELOAD_BATCH} per request), then made due and the endpoints enabled in one transaction; deliveries/s = (N − 1) / (N-th distinct`,
    '   delivery − first), stamped by the receiver, which answers 200 at once and checks the signatures. No delivery warm-up (see bench:delivery).',
    '',
    '“machine busy”: cores busy on average over the span, whole machine (/proc/stat: server, Postgres, load generator, anything else).',
    'Cells: median (min–max) over the rounds.',
    '',
    '## Results',
    '',
    table(results),
    '',
    '## What raising each setting did',
    '',
    'Each step: the median, over the other settings\' combinations, of figure(higher) / figure(lower).',
    '',
    ...rule,
    '',
    '## Commands',
    '',
    `- This run: \`${command}\``,
    `- Server: \`PORT=0 HOST=127.0.0.1 ACCEPTOR_THREADS=<a> PERSIST_WORKERS=<p> DELIVERY_WORKERS=<d> DURABILITY=${opts.durability} WEBHOOK_ALLOW_PRIVATE=true SHUTDOWN_DRAIN_TIMEOUT=0 DATA_DIR=<temp dir> DATABASE_URL=<proxy to a fresh database> ADMIN_TOKEN=<random> node --import tsx src/main.ts\``,
    opts.tool === 'wrk'
      ? `- Ingest: \`wrk -t ${Math.min(os.cpus().length, opts.connections)} -c ${opts.connections} -d ${opts.duration}s --timeout 10s -s native-bench/wrk-post.lua http://127.0.0.1:<port>/api/events -- nodedup <keys>\``
      : `- Ingest: autocannon ${AUTOCANNON_VERSION} (Node API) \`{connections: ${opts.connections}, duration: ${opts.duration}, pipelining: 1, timeout: 10}\``,
  ].join('\n');

  console.log(section);
  if (opts.writeResults) {
    const mdFile = datedResultFile('sweep', 'md');
    const svgFile = datedResultFile('sweep', 'svg');
    await writeChart(svgFile, spreadBarsSpec({
      title: 'Thread settings sweep',
      subtitle: [
        `bars: median over ${opts.rounds} round(s), whiskers: min–max · P = PERSIST_WORKERS, D = DELIVERY_WORKERS · ${new Date().toISOString().slice(0, 16)}Z`,
        `${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'CPU'} · ingest by ${toolName}, ${opts.connections} connections · DURABILITY ${opts.durability}`,
      ],
      bars: chartBars(results),
      seriesTitle: 'setting',
      seriesOrder: opts.values.ACCEPTOR_THREADS.map((a) => `ACCEPTOR_THREADS ${a}`),
      columns: 3,
    }));
    writeFileSync(mdFile, `${section.replace('## How', `![chart](${path.basename(svgFile)})\n\n## How`)}\n`);
    updateLatest('sweep', [mdFile, svgFile], `${settings.length} settings × ${opts.rounds} round(s)${failed ? ', some FAILED' : ''}`);
    log(`wrote ${path.relative(ROOT, mdFile)}, ${path.relative(ROOT, svgFile)} and native-bench/results/LATEST.md`);
  }
  if (failed) process.exitCode = 1;
}

runBench(main);
