// `npm run bench:drain`: the Postgres side of the pipeline, on the real server.
//   1. Sustained drain rate, per PERSIST_WORKERS × PERSIST_BATCH_SIZE: the server reaches Postgres
//      through a TCP proxy in this process (test/helpers/pg-proxy.ts). With the proxy holding every
//      query, the bench preloads N events through POST /api/events/batch (they pile up in the LMDB
//      log), then releases the proxy and times the drain until /metrics `triggers_log_backlog` is 0
//      and `select count(*) from events` is N.
//   2. End-to-end lag at a steady rate (default settings, no proxy): a paced client sends single
//      events at a fixed rate over keep-alive connections; a poller reads new rows from Postgres
//      every few milliseconds; lag = (poll that first saw the row) − (arrival of its 202).
// Prints a markdown table per measurement and rewrites the "Drain (issue 4)" section of
// native-bench/RESULTS.md (content outside the marker comments is kept).
// Usage: npm run bench:drain [-- --events 200000 --workers 1,2 --batch-sizes 2000 --rate 10000 ...]
//        npm run bench:drain -- --help
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { connect, type Sql } from '../src/db/postgres.ts';
import {
  publishSection, runBench,
  backlogOf, benchClock, BODY, cleanupMark, commandLine, countRows, cpuUse, createDatabase, createKeys, describeFailure, EVENT,
  filesystemOf, fmt, int, interrupted, isLocalHost, log, machineFacts, nonDefaults, onCleanup, PacedClient, parseBenchArgs, positive,
  positiveList, postgresBaseUrl, postgresVersion, preload, runCleanups, sampleCpu, sleep, startServer, stats, StatusCounter, stopServer,
  waitForBacklog, warmKeys, type CpuUse, type Stats, tempDataDir, proxiedDatabase, defaultOf,
} from './lib.ts';
import type { PollerInit, PollerMessage, PollerStop } from './lag-poller.ts';

const SECTION_BEGIN = '<!-- BEGIN drain-bench (issue 4): written by `npm run bench:drain`, edits inside are overwritten -->';
const SECTION_END = '<!-- END drain-bench -->';
const PHASES = ['drain', 'lag'] as const;
type Phase = (typeof PHASES)[number];
const CUTS = ['hold', 'close'] as const;
type Cut = (typeof CUTS)[number];
/** Events per POST /api/events/batch in the preload (the API's maximum). */
const PRELOAD_BATCH = 1000;
/** How often the drain phase reads /metrics. */
const METRICS_POLL_MS = 50;
/** An enterprise org may send 100,000 events in a burst (then 100,000/min): stay below per key. */
const EVENTS_PER_KEY = 90_000;
/** The drain abandons (and retries with backoff) a batch write that takes longer (src/pipeline/drain.ts). */
const SERVER_BATCH_TIMEOUT_MS = 30_000;
const RETRY_LINE = '"msg":"drain batch failed; retrying"';
/** Warm-up requests (per persist worker: two) and their size; their events have their own type. */
const WARMUP_EVENTS_PER_REQUEST = 100;
const WARMUP_TYPE = 'bench.warmup';

const USAGE = `npm run bench:drain -- [options]
  --phases <list>       drain,lag (default both)
 drain rate:
  --workers <list>      PERSIST_WORKERS values (default 1,2,3,4)
  --batch-sizes <list>  PERSIST_BATCH_SIZE values (default 500,2000,5000)
  --events <n>          events preloaded per setting (default 200000)
  --concurrency <n>     preload requests in flight, ${PRELOAD_BATCH} events each (default 8)
  --cut <hold|close>    how Postgres is cut off during the preload (default hold, see README)
  --drain-timeout <s>   give up on one setting after this long (default 600)
 end-to-end lag:
  --rate <n>            events per second (default 10000)
  --duration <s>        seconds of paced sending (default 20)
  --connections <n>     keep-alive connections of the paced client (default 32)
  --poll-ms <n>         Postgres poll interval in ms (default 5)
  --warmup <n>          events sent (at --rate) and drained before the measurement (default 2000)
 both:
  --keys <n>            enterprise orgs to rotate over (default 8; raised when the load needs more)
  --durability <mode>   DURABILITY of the server, fsync or commit (default fsync, the server default)`;

// ---------------------------------------------------------------- arguments

const { args, common } = parseBenchArgs({
  phases: { type: 'string', default: PHASES.join(',') },
  workers: { type: 'string', default: '1,2,3,4' },
  'batch-sizes': { type: 'string', default: '500,2000,5000' },
  events: { type: 'string', default: '200000' },
  concurrency: { type: 'string', default: '8' },
  cut: { type: 'string', default: 'hold' },
  'drain-timeout': { type: 'string', default: '600' },
  rate: { type: 'string', default: '10000' },
  duration: { type: 'string', default: '20' },
  connections: { type: 'string', default: '32' },
  'poll-ms': { type: 'string', default: '5' },
  warmup: { type: 'string', default: '2000' },
  keys: { type: 'string', default: '8' },
  durability: { type: 'string', default: 'fsync' },
}, USAGE);

function oneOf<T extends string>(name: string, raw: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(raw)) {
    console.error(`--${name}: expected one of ${allowed.join(', ')}, got "${raw}"`);
    process.exit(2);
  }
  return raw as T;
}

const opts = {
  phases: args.phases.split(',').map((p) => p.trim()).filter(Boolean).map((p) => oneOf('phases', p, PHASES)),
  workers: positiveList('workers', args.workers, 1, 16),
  batchSizes: positiveList('batch-sizes', args['batch-sizes'], 1, 50_000),
  events: positive('events', args.events),
  concurrency: positive('concurrency', args.concurrency),
  cut: oneOf<Cut>('cut', args.cut, CUTS),
  drainTimeoutMs: positive('drain-timeout', args['drain-timeout']) * 1000,
  rate: positive('rate', args.rate),
  duration: positive('duration', args.duration),
  connections: positive('connections', args.connections),
  pollMs: positive('poll-ms', args['poll-ms']),
  warmup: positive('warmup', args.warmup, true),
  keys: positive('keys', args.keys),
  durability: oneOf('durability', args.durability, ['fsync', 'commit'] as const),
  ...common,
};
const DEFAULTS = {
  phases: PHASES.join(','), workers: '1,2,3,4', 'batch-sizes': '500,2000,5000', events: 200000, concurrency: 8, cut: 'hold', 'drain-timeout': 600,
  rate: 10000, duration: 20, connections: 32, 'poll-ms': 5, warmup: 2000, keys: 8, durability: 'fsync',
};

// ---------------------------------------------------------------- small helpers

/** Every stamp the bench takes is on this clock (ms, monotonic, the same in the poller thread). */
const now = benchClock;

/** Backends of `database` that have run the drain's INSERT: the persist workers' connections. */
async function persistConnections(sql: Sql, database: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from pg_stat_activity
    where datname = ${database} and pid <> pg_backend_pid() and query ilike '%insert into events%'`;
  return row!.n;
}

/** Enough orgs that none passes its burst: at least --keys, at least events / 90,000. */
function keysFor(events: number): number {
  return Math.max(opts.keys, Math.ceil(events / EVENTS_PER_KEY));
}

// ---------------------------------------------------------------- 1. drain rate

/** Drain failures during the warm-ups, by error message (over all settings). */
const warmupRetries = new Map<string, number>();

interface DrainResult {
  workers: number;
  batchSize: number;
  events: number;
  preloadSeconds: number;
  /** Timed span of the drain, and the events drained inside it. */
  drainSeconds: number;
  drainedInSpan: number;
  /** From release/reopen to the first poll that saw the backlog fall. */
  firstFoldMs: number | null;
  retries: number;
  cpu: CpuUse;
  notes: string[];
  failure?: string;
}

async function benchDrain(workers: number, batchSize: number, baseUrl: string, postgresLocal: boolean): Promise<DrainResult> {
  const mark = cleanupMark();
  const label = `workers ${workers}, batch ${batchSize}`;
  const notes: string[] = [];
  try {
    const { database, proxy } = await proxiedDatabase(baseUrl);
    const dataDir = tempDataDir(opts.dataDirBase, 'drain');
    let retries = 0;
    const retryErrors = new Map<string, number>();
    let counting: 'warmup' | 'measure' | null = null;
    log(`${label}: starting server (DATA_DIR ${dataDir}), Postgres through the proxy on :${proxy.port}`);
    const server = await startServer(proxy.urlFor(database.url), dataDir, {
      DURABILITY: opts.durability,
      PERSIST_WORKERS: String(workers),
      PERSIST_BATCH_SIZE: String(batchSize),
      // The bench checks the drain itself before stopping the server; an interrupted run must not
      // wait 10 s for batches the proxy still holds.
      SHUTDOWN_DRAIN_TIMEOUT: '0',
    }, (line) => {
      if (counting === null || !line.includes(RETRY_LINE)) return;
      let message = 'unknown error';
      try {
        message = String((JSON.parse(line) as { err?: { message?: unknown } }).err?.message ?? message);
      } catch {}
      // The messages of the first-batch failure carry the batch's ids: keep the part before them.
      message = message.replace(/"[^"]*$|"[^"]*"/, '"…"').slice(0, 160);
      const counts = counting === 'warmup' ? warmupRetries : retryErrors;
      counts.set(message, (counts.get(message) ?? 0) + 1);
      if (counting === 'measure') retries++;
    });
    onCleanup(async () => void (await server.stop()));
    const sql = connect(database.url, { max: 1 });
    onCleanup(() => sql.end({ timeout: 5 }));

    const keys = await createKeys(server, `drain w${workers} b${batchSize}`, keysFor(opts.events));
    await warmKeys(server, keys);

    // Warm-up: every persist worker opens its Postgres connection now, not inside the timed drain.
    // Under hold, each of 2 × PERSIST_WORKERS small requests (sent one at a time) commits on its own
    // and becomes a batch of its own, so every worker gets one; then release and drain them.
    counting = 'warmup';
    proxy.hold();
    const warmupBody = `{"events":[${new Array(WARMUP_EVENTS_PER_REQUEST).fill(JSON.stringify({ ...EVENT, type: WARMUP_TYPE })).join(',')}]}`;
    for (let i = 0; i < 2 * workers; i++) {
      const response = await fetch(`http://127.0.0.1:${server.port}/api/events/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': keys[i % keys.length]! },
        body: warmupBody,
      });
      await response.text();
      if (response.status !== 200) throw new Error(`warm-up POST /api/events/batch: ${response.status}`);
    }
    proxy.release();
    await waitForBacklog(server.port, 60_000);
    const warmed = await persistConnections(sql, database.name);
    if (warmed < workers) notes.push(`only ${warmed} of ${workers} persist workers had a Postgres connection before the measurement`);

    counting = 'measure';
    if (opts.cut === 'hold') proxy.hold();
    else await proxy.close();
    log(`${label}: proxy ${proxy.state}; preloading ${int(opts.events)} events (${PRELOAD_BATCH} per request, ${opts.concurrency} in flight, ${keys.length} orgs)`);
    const loaded = await preload(server.port, keys, opts.events, opts.concurrency, PRELOAD_BATCH);
    notes.push(...loaded.problems);
    if (loaded.accepted === 0) throw new Error(`no event accepted in the preload (${loaded.problems.join('; ')})`);
    if (opts.cut === 'hold' && loaded.seconds * 1000 > SERVER_BATCH_TIMEOUT_MS * 0.8) {
      notes.push(`the preload took ${loaded.seconds.toFixed(1)} s: batches held longer than 30 s time out in the server and retry with backoff (see the retries column); use a smaller --events`);
    }
    const backlog = await backlogOf(server.port);
    const early = await countRows(sql, EVENT.type);
    if (backlog !== loaded.accepted) notes.push(`backlog after the preload was ${int(backlog)}, accepted ${int(loaded.accepted)}`);
    if (early > 0) notes.push(`${int(early)} rows reached Postgres before the release: the cut-off leaked, the rate is overstated`);
    if (proxy.opaqueLinks > 0) notes.push(`${proxy.opaqueLinks} encrypted connections could not be held`);

    // The drain, timed.
    const cpuStart = await sampleCpu(server.child.pid!, sql, database.name, postgresLocal);
    const opened = now();
    if (opts.cut === 'hold') proxy.release();
    else await proxy.reopen();
    log(`${label}: proxy open; ${int(backlog)} events to drain`);
    let first: { at: number; backlog: number } | null = null;
    let end: number | null = null;
    for (;;) {
      const polled = now();
      const current = await backlogOf(server.port);
      const at = now();
      if (first === null && current < backlog) first = { at, backlog: current };
      if (current === 0 && (await countRows(sql, EVENT.type)) >= loaded.accepted) {
        end = at;
        break;
      }
      if (at - opened > opts.drainTimeoutMs) throw new Error(`drain not finished after ${opts.drainTimeoutMs / 1000} s (backlog ${current})`);
      await sleep(METRICS_POLL_MS - (now() - polled));
    }
    const cpuEnd = await sampleCpu(server.child.pid!, sql, database.name, postgresLocal);
    counting = null;
    if (retryErrors.size > 0) notes.push(`drain retries: ${[...retryErrors].map(([m, n]) => `${n}× “${m}”`).join('; ')}`);
    const rows = await countRows(sql, EVENT.type);
    if (rows !== loaded.accepted) notes.push(`rows in Postgres ${int(rows)} ≠ accepted ${int(loaded.accepted)}`);

    // hold: the drain starts at the release. close: it starts when a retry happens to fire after
    // the reopen, so time from the first fold and count only what was left then.
    const from = opts.cut === 'hold' ? { at: opened, backlog } : first!;
    const drainSeconds = (end - from.at) / 1000;
    log(`${label}: drained ${int(from.backlog)} events in ${drainSeconds.toFixed(2)} s → ${int(from.backlog / drainSeconds)} events/s`);

    await stopServer(server, notes);
    return {
      workers, batchSize, events: loaded.accepted, preloadSeconds: loaded.seconds,
      drainSeconds, drainedInSpan: from.backlog, firstFoldMs: first === null ? null : first.at - opened,
      retries, cpu: cpuUse(cpuStart, cpuEnd, (end - opened) / 1000, postgresLocal), notes,
    };
  } finally {
    await runCleanups(mark);
  }
}

// ---------------------------------------------------------------- 2. end-to-end lag

interface LagRow {
  what: string;
  stats: Stats;
  min: number | null;
  count: number;
}

interface LagResult {
  rate: number;
  seconds: number;
  sent: number;
  statuses: StatusCounter;
  errors: number;
  achieved: number;
  late: Stats;
  rowsInTable: number;
  rowsSeen: number;
  ackWithoutRow: number;
  rows: LagRow[];
  /** Between poll calls, and the precision bound per poll (answer − previous call). */
  interval: Stats;
  window: Stats;
  polls: number;
  loopDelay: { p99: number; max: number };
  notes: string[];
  failure?: string;
}

function lagRow(what: string, samples: number[]): LagRow {
  let min: number | null = null;
  for (const s of samples) if (min === null || s < min) min = s;
  return { what, stats: stats(samples), min, count: samples.length };
}

/** The Postgres poller, in a worker thread (native-bench/lag-poller.ts) so the client's load does not delay it. */
function startPoller(init: PollerInit): { worker: Worker; ready: Promise<void>; done: Promise<Extract<PollerMessage, { kind: 'done' }>> } {
  const worker = new Worker(new URL('../src/thread-bootstrap.mjs', import.meta.url), {
    argv: [new URL('./lag-poller.ts', import.meta.url).href],
    workerData: init,
  });
  const failed = new Promise<never>((_, reject) => {
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the poller thread exited (${code})`)));
  });
  const message = (kind: PollerMessage['kind']) =>
    Promise.race([failed, new Promise<PollerMessage>((resolve) => worker.on('message', (m: PollerMessage) => m.kind === kind && resolve(m)))]);
  const ready = message('ready').then(() => undefined);
  const done = message('done') as Promise<Extract<PollerMessage, { kind: 'done' }>>;
  // Terminating the thread (Ctrl-C cleanup) rejects them, maybe before anyone awaits them: that
  // must not end the process as an unhandled rejection while the cleanups still run.
  for (const promise of [failed, ready, done]) promise.catch(() => {});
  return { worker, ready, done };
}

async function benchLag(baseUrl: string): Promise<LagResult> {
  const mark = cleanupMark();
  const notes: string[] = [];
  try {
    const database = await createDatabase(baseUrl);
    onCleanup(database.drop);
    const dataDir = tempDataDir(opts.dataDirBase, 'lag');
    log(`lag: starting server (DATA_DIR ${dataDir}), default drain settings, Postgres direct`);
    const server = await startServer(database.url, dataDir, { DURABILITY: opts.durability });
    onCleanup(async () => void (await server.stop()));
    const sql = connect(database.url, { max: 1 });
    onCleanup(() => sql.end({ timeout: 5 }));
    const total = opts.rate * opts.duration;
    const keys = await createKeys(server, 'lag', keysFor(total + opts.warmup));
    await warmKeys(server, keys);

    if (opts.warmup > 0) {
      log(`lag: warm-up, ${int(opts.warmup)} events at ${int(opts.rate)}/s`);
      const warm = new PacedClient(server.port, keys, 'bench.lag.warmup', opts.rate, opts.warmup, opts.connections);
      await warm.run(60_000);
      if (warm.statuses.non202 > 0 || warm.errors > 0) notes.push(`warm-up: non-202 ${warm.statuses.describeNon202()}, errors ${warm.errors}`);
      const deadline = now() + 60_000;
      while ((await backlogOf(server.port)) > 0 && now() < deadline) await sleep(20);
    }
    const [top] = await sql<{ id: string }[]>`select id::text as id from events order by id desc limit 1`;
    const poller = startPoller({ databaseUrl: database.url, last: top?.id ?? '00000000-0000-0000-0000-000000000000', intervalMs: opts.pollMs });
    onCleanup(async () => void (await poller.worker.terminate()));
    await poller.ready;
    const loopDelay = monitorEventLoopDelay({ resolution: 1 });

    log(`lag: ${int(opts.rate)} events/s for ${opts.duration} s over ${opts.connections} connections, polling Postgres every ${opts.pollMs} ms`);
    loopDelay.enable();
    const client = new PacedClient(server.port, keys, 'bench.lag', opts.rate, total, opts.connections);
    await client.run(opts.duration * 1000 + 30_000);
    loopDelay.disable();
    // Once the log is drained every accepted event is in Postgres: one more poll called after that sees them all.
    try {
      await waitForBacklog(server.port, 30_000);
    } catch (error) {
      notes.push(`after the run: ${String(error)}; events drained later are missing from the lag figures`);
    }
    poller.worker.postMessage({ stopAfter: now() } satisfies PollerStop);
    const seen = await poller.done;

    const rowsInTable = await countRows(sql, 'bench.lag');
    const rowOf = new Map<string, number>();
    seen.ids.forEach((id, j) => rowOf.set(id, j));
    const fromAck: number[] = [];
    const fromSend: number[] = [];
    const fromReceived: number[] = [];
    let ackWithoutRow = 0;
    for (const [id, i] of client.indexOf) {
      const j = rowOf.get(id);
      if (j === undefined) {
        ackWithoutRow++;
        continue;
      }
      fromAck.push(seen.seenAt[j]! - client.ackAt[i]!);
      fromSend.push(seen.seenAt[j]! - seen.sentAt[j]!);
      fromReceived.push(seen.seenWall[j]! - seen.receivedAt[j]!);
    }
    const missed = rowsInTable - seen.ids.length;
    if (missed > 0) notes.push(`${int(missed)} rows are in the table but the poller never saw them (they became visible below an id it had already passed)`);
    const withoutAck = seen.ids.filter((id) => !client.indexOf.has(id)).length;
    if (withoutAck > 0) notes.push(`${int(withoutAck)} rows arrived whose 202 the client never got (connection errors or the deadline)`);
    const accepted = client.statuses.counts.get(202) ?? 0;
    const seconds = (client.finished - client.started) / 1000;
    if (accepted / seconds < 0.95 * opts.rate) {
      notes.push(`**the target rate was not reached** (${int(accepted / seconds)} 202/s): the lags above are at that rate, under a backlog of unsent requests; they do not describe ${int(opts.rate)}/s`);
    }

    await stopServer(server, notes);
    return {
      rate: opts.rate,
      seconds,
      sent: total,
      statuses: client.statuses,
      errors: client.errors,
      achieved: accepted / seconds,
      late: stats(client.lateness()),
      rowsInTable,
      rowsSeen: seen.ids.length,
      ackWithoutRow,
      rows: [
        lagRow('**visible in Postgres − its 202 arrived** (the lag)', fromAck),
        lagRow('visible − client send (payload `sent_at`)', fromSend),
        lagRow('visible − server `received_at` (Postgres column, whole ms)', fromReceived),
      ],
      interval: stats(seen.intervals),
      window: stats(seen.windows),
      polls: seen.intervals.length + 1,
      loopDelay: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
      notes,
    };
  } finally {
    await runCleanups(mark);
  }
}

// ---------------------------------------------------------------- markdown

function drainTable(results: DrainResult[]): string {
  const lines = [
    '| PERSIST_WORKERS | PERSIST_BATCH_SIZE | events | preload s | preload events/s | drain s | **drain events/s** | first fold after ms | drain retries | server main thread, cores | server other threads, cores | Postgres backends, cores |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    if (r.failure !== undefined) {
      lines.push(`| ${r.workers} | ${r.batchSize} | | | | | **not measured: ${r.failure.replace(/\|/g, '\\|')}** | | | | | |`);
      continue;
    }
    lines.push(
      `| ${r.workers} | ${r.batchSize} | ${int(r.events)} | ${fmt(r.preloadSeconds, 2)} | ${int(r.events / r.preloadSeconds)} | ${fmt(r.drainSeconds, 2)} | ` +
        `**${int(r.drainedInSpan / r.drainSeconds)}** | ${fmt(r.firstFoldMs, 0)} | ${r.retries} | ${fmt(r.cpu.serverMain, 2)} | ${fmt(r.cpu.serverOther, 2)} | ${fmt(r.cpu.postgres, 2)} |`,
    );
  }
  const notes = results.flatMap((r) => r.notes.map((note) => `- workers ${r.workers}, batch ${r.batchSize}: ${note}`));
  return [...lines, ...(notes.length > 0 ? ['', ...notes] : [])].join('\n');
}

function drainMarkdown(results: DrainResult[]): string {
  const how = opts.cut === 'hold'
    ? [
        `Per setting: a fresh database, DATA_DIR and server whose Postgres connections go through a TCP proxy in the bench.`,
        `The proxy **holds** every query (connections stay up, nothing reaches Postgres, nothing fails) while ${int(opts.events)} events are`,
        `preloaded (POST /api/events/batch, ${PRELOAD_BATCH} per request, ${opts.concurrency} in flight); then it lets them through.`,
        'The drain is timed from that release to the first /metrics poll (every 50 ms) that shows `triggers_log_backlog` 0,',
        'with `select count(*) from events` then equal to the events accepted: **drain events/s = events / drain s**.',
        'Holding instead of closing keeps the drain out of its retry backoff (up to 5 s per batch), so it starts at the release at full parallelism.',
      ]
    : [
        'Per setting: a fresh database, DATA_DIR and server whose Postgres connections go through a TCP proxy in the bench.',
        `The proxy is **closed** (connections refused) while ${int(opts.events)} events are preloaded, then reopened. The drain's failed batches`,
        'wait in their retry backoff (up to 5 s), so the drain is timed from the first /metrics poll that shows the backlog falling',
        '(“first fold after”, from the reopen) to the poll that shows it 0, counting only the events still in the backlog at the first fold.',
        'Caveat: the batches wake one by one over up to 5 s, so the start of the span runs below full parallelism.',
      ];
  return [
    `### Sustained drain rate (${int(opts.events)} events per setting, cut-off: ${opts.cut})`,
    '',
    ...how,
    `Before that, a warm-up (2 × PERSIST_WORKERS requests of ${WARMUP_EVENTS_PER_REQUEST} events, held, released, drained) makes every persist worker open`,
    'its Postgres connection, so connection set-up is not in the timed drain.',
    '“cores” columns: CPU seconds over the drain (from /proc) / its wall seconds — main thread (drain loop, LMDB, HTTP), the',
    'server\'s other threads (persist workers, GC, libuv), and the Postgres backends of the bench database (not WAL writer or checkpointer).',
    '',
    drainTable(results),
    ...(warmupRetries.size > 0
      ? ['', `- Drain failures during the warm-ups (all settings; retried by the server): ${[...warmupRetries].map(([m, n]) => `${n}× “${m}”`).join('; ')}`]
      : []),
  ].join('\n');
}

function lagMarkdown(r: LagResult): string {
  const title = `### End-to-end lag at ${int(r.rate)} events/s`;
  if (r.failure !== undefined) return [title, '', `**Not measured: ${r.failure}**`].join('\n');
  return [
    title,
    '',
    `The server's default drain settings (${['PERSIST_WORKERS', 'PERSIST_BATCH_SIZE', 'PERSIST_LINGER'].map((name) => `${name} ${defaultOf(name)}`).join(', ')}), connected straight to Postgres.`,
    `A paced client (raw HTTP/1.1, ${opts.connections} keep-alive connections, one request at a time each) sends single events to POST /api/events`,
    `on a fixed schedule of ${int(r.rate)}/s for ${opts.duration} s, over ${int(keysFor(r.sent + opts.warmup))} enterprise orgs, after a warm-up of ${int(opts.warmup)} events;`,
    `each payload carries its send time. The bench polls \`select id, received_at, payload->>'sent_at' from events where id > $last order by id\``,
    `every ${opts.pollMs} ms from a worker thread on its own connection, and stamps each new row with the time that poll answered.`,
    '',
    '| target/s | seconds | sent | 202 | non-202 | errors | 202/s achieved | send late P50 / P99 / max ms | rows in table | rows seen by the poller | 202 without a row |',
    '|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|',
    `| ${int(r.rate)} | ${fmt(r.seconds, 2)} | ${int(r.sent)} | ${int(r.statuses.counts.get(202) ?? 0)} | ${r.statuses.describeNon202()} | ${r.errors} | ${int(r.achieved)} | ` +
      `${fmt(r.late.p50, 1)} / ${fmt(r.late.p99, 1)} / ${fmt(r.late.max, 1)} | ${int(r.rowsInTable)} | ${int(r.rowsSeen)} | ${int(r.ackWithoutRow)} |`,
    '',
    '| lag | events | P50 ms | P95 ms | P99 ms | max ms | min ms |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...r.rows.map((row) => `| ${row.what} | ${int(row.count)} | ${fmt(row.stats.p50)} | ${fmt(row.stats.p95)} | ${fmt(row.stats.p99)} | ${fmt(row.stats.max)} | ${fmt(row.min)} |`),
    '',
    `- Precision: the poller (its own thread, own connection) stamps a row with the time the poll that first returned it answered. The row became visible after the previous poll's snapshot, so the stamp is late by less than (this answer − previous call): ` +
      `P50 ${fmt(r.window.p50, 2)} ms, P99 ${fmt(r.window.p99, 2)} ms, max ${fmt(r.window.max, 2)} ms over ${int(r.polls)} polls (calls every ${fmt(r.interval.p50, 2)} ms at P50, ${fmt(r.interval.p99, 2)} ms at P99; target ${opts.pollMs} ms). ` +
      'So every lag is an upper bound, on average about half a window too high.',
    `- The 202 arrival is stamped on the client's event loop: its delay (P99 ${fmt(r.loopDelay.p99, 1)} ms, max ${fmt(r.loopDelay.max, 1)} ms during the run) makes 202s look later, lags shorter. ` +
      'A negative lag is real, not a clock error: the drain may insert an event once its LMDB commit is done, before the fsync that its 202 waits for (or before the client read the 202).',
    '- “send late”: actual send − scheduled send. When it grows, the server (or the client) could not keep the rate with this many connections, and the load was not steady.',
    ...r.notes.map((note) => `- ${note}`),
  ].join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const base = await postgresBaseUrl();
  const pgVersion = await postgresVersion(base.url);
  const postgresLocal = isLocalHost(base.url);
  const current = {
    phases: opts.phases.join(','), workers: opts.workers.join(','), 'batch-sizes': opts.batchSizes.join(','), events: opts.events,
    concurrency: opts.concurrency, cut: opts.cut, 'drain-timeout': opts.drainTimeoutMs / 1000, rate: opts.rate, duration: opts.duration, connections: opts.connections,
    'poll-ms': opts.pollMs, warmup: opts.warmup, keys: opts.keys, durability: opts.durability,
  };
  const nonDefault = nonDefaults(DEFAULTS, current);
  const facts = [
    ...machineFacts({ command: commandLine('bench:drain'), tools: '', postgres: base.description, pgVersion }),
    `- DATA_DIR under ${opts.dataDirBase} (filesystem ${filesystemOf(opts.dataDirBase)}); one acceptor thread (ACCEPTOR_THREADS default); DURABILITY ${opts.durability}`,
    `- Preload event: \`${BODY}\`, no dedup_id`,
    ...(nonDefault.length > 0 ? [`- Non-default parameters: ${nonDefault.join(', ')} (short runs are not comparable with the defaults)`] : []),
  ];

  const drains: DrainResult[] = [];
  let lag: LagResult | null = null;
  try {
    if (opts.phases.includes('drain')) {
      for (const workers of opts.workers) {
        for (const batchSize of opts.batchSizes) {
          try {
            drains.push(await benchDrain(workers, batchSize, base.url, postgresLocal));
          } catch (error) {
            if (interrupted) throw error;
            const failure = describeFailure(error);
            log(`workers ${workers}, batch ${batchSize}: FAILED: ${failure}`);
            drains.push({
              workers, batchSize, events: 0, preloadSeconds: 0, drainSeconds: 0, drainedInSpan: 0, firstFoldMs: null, retries: 0,
              cpu: { serverMain: null, serverOther: null, postgres: null }, notes: [], failure,
            });
          }
        }
      }
    }
    if (opts.phases.includes('lag')) {
      try {
        lag = await benchLag(base.url);
      } catch (error) {
        if (interrupted) throw error;
        const failure = describeFailure(error);
        log(`lag: FAILED: ${failure}`);
        lag = {
          rate: opts.rate, seconds: 0, sent: 0, statuses: new StatusCounter(), errors: 0, achieved: 0, late: stats([]), rowsInTable: 0,
          rowsSeen: 0, ackWithoutRow: 0, rows: [], interval: stats([]), window: stats([]), polls: 0, loopDelay: { p99: 0, max: 0 }, notes: [], failure,
        };
      }
    }
  } finally {
    await runCleanups(); // the embedded Postgres if any
  }

  publishSection({
    title: 'Drain (issue 4)', note: opts.note, facts, begin: SECTION_BEGIN, end: SECTION_END, write: opts.writeResults,
    parts: [...(drains.length > 0 ? [drainMarkdown(drains)] : []), ...(lag !== null ? [lagMarkdown(lag)] : [])],
    failed: drains.some((r) => r.failure !== undefined) || lag?.failure !== undefined,
  });
}

runBench(main);
