// `npm run bench`: ingest benchmark of POST /api/events against the real server.
// Per durability mode: a fresh database and DATA_DIR, the server as a child process, then
//   1. sequential latency: one connection, pipelining 1 (autocannon, then a node:http client);
//   2. throughput: many connections for a fixed time (autocannon, then wrk if installed).
// Prints a markdown table per mode and rewrites the "Ingest (issue 3)" section of
// native-bench/RESULTS.md (content outside the marker comments is kept).
// Usage: npm run bench [-- --modes fsync,commit --duration 10 --connections 64 --amount 2000 ...]
//        npm run bench -- --help
import autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import {
  publishSection, runBench,
  AUTOCANNON_VERSION, BODY, cannon, cannonPosts, cleanupMark, commandLine, createDatabase, createKeys, describeFailure, EVENT, filesystemOf, interrupted, log,
  machineFacts as commonFacts, nonDefaults, onCleanup, parseBenchArgs, positive, postgresBaseUrl, postgresVersion, readyBacklog,
  runCleanups, runWrk, startServer, stats, StatusCounter, stopServer, wrkLatency, wrkVersion, type CannonRun, type Stats, tempDataDir,
} from './lib.ts';

const SECTION_BEGIN = '<!-- BEGIN ingest-bench (issue 3): written by `npm run bench`, edits inside are overwritten -->';
const SECTION_END = '<!-- END ingest-bench -->';
const MODES = ['fsync', 'commit'] as const;
type Mode = (typeof MODES)[number];

const USAGE = `npm run bench -- [options]
  --modes <list>        durability modes, comma separated (default fsync,commit)
  --amount <n>          requests in the sequential phase (default 2000)
  --duration <s>        seconds of the throughput phase (default 10)
  --connections <n>     connections of the throughput phase (default 64)
  --warmup <n>          warm-up requests before the phases (default 500)
  --keys <n>            enterprise orgs the throughput phase rotates over (default 8)
  --dedup               send a unique dedup_id with every event
  --wrk-threads <n>     wrk threads (default: min(cpus, connections))
  --skip-wrk            do not run wrk even if it is installed`;

// ---------------------------------------------------------------- arguments

const { args, common } = parseBenchArgs({
  modes: { type: 'string', default: MODES.join(',') },
  amount: { type: 'string', default: '2000' },
  duration: { type: 'string', default: '10' },
  connections: { type: 'string', default: '64' },
  warmup: { type: 'string', default: '500' },
  keys: { type: 'string', default: '8' },
  dedup: { type: 'boolean', default: false },
  'wrk-threads': { type: 'string' },
  'skip-wrk': { type: 'boolean', default: false },
}, USAGE);

const modes = args.modes.split(',').map((m) => m.trim()).filter(Boolean);
for (const mode of modes) {
  if (!(MODES as readonly string[]).includes(mode)) {
    console.error(`--modes: unknown durability mode "${mode}" (expected ${MODES.join(', ')})`);
    process.exit(2);
  }
}
const opts = {
  modes: modes as Mode[],
  amount: positive('amount', args.amount),
  duration: positive('duration', args.duration),
  connections: positive('connections', args.connections),
  warmup: positive('warmup', args.warmup, true),
  keys: positive('keys', args.keys),
  dedup: args.dedup,
  wrkThreads: args['wrk-threads'] === undefined ? null : positive('wrk-threads', args['wrk-threads']),
  skipWrk: args['skip-wrk'],
  ...common,
};
const DEFAULTS = { modes: MODES.join(','), amount: 2000, duration: 10, connections: 64, warmup: 500, keys: 8 };

// ---------------------------------------------------------------- request bodies

/** autocannon replaces `[<id>]` with a unique id per request when idReplacement is on. */
const AUTOCANNON_DEDUP_BODY = JSON.stringify({ ...EVENT, dedup_id: '[<id>]' });

interface Row {
  tool: string;
  source: string;
  connections: number;
  requests: number;
  seconds: number;
  /** null: the run's wall clock says nothing about the server (see the notes). */
  perSecond: number | null;
  latency: Stats;
  non202: string;
  errors: string;
}

// ---------------------------------------------------------------- autocannon

function cannonRequests(url: string, keys: string[], connections: number, limits: { amount?: number; duration?: number }): autocannon.Options {
  return cannonPosts(url, keys, connections, limits, opts.dedup ? AUTOCANNON_DEDUP_BODY : BODY, opts.dedup);
}

function errorsOf(result: autocannon.Result): string {
  return result.timeouts > 0 ? `${result.errors} (${result.timeouts} timeouts)` : String(result.errors);
}

/** The two rows of an autocannon run: its per-response times, and its own summary histogram (whole ms, no P95). */
function cannonRows(run: CannonRun, connections: number, perSecond: number | null): Row[] {
  const row = { tool: `autocannon ${AUTOCANNON_VERSION}`, connections, requests: run.statuses.total, seconds: run.seconds, perSecond };
  const outcome = { non202: run.statuses.describeNon202(), errors: errorsOf(run.result) };
  const { p50, p99, max } = run.result.latency;
  return [
    { ...row, source: 'per-response times (`response` event, hrtime)', latency: stats(run.samples), ...outcome },
    { ...row, source: 'summary histogram (`result.latency`, whole ms)', latency: { p50, p95: null, p99, max }, ...outcome },
  ];
}

// ---------------------------------------------------------------- node:http sequential client

async function sequentialNodeHttp(port: number, key: string, amount: number): Promise<{ samples: number[]; statuses: StatusCounter; errors: number; seconds: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const samples: number[] = [];
  const statuses = new StatusCounter();
  let errors = 0;
  const post = (body: Buffer) =>
    new Promise<number>((resolve, reject) => {
      const request = http.request(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/api/events',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': body.length, 'x-api-key': key },
        },
        (response) => {
          response.on('data', () => {});
          response.on('end', () => resolve(response.statusCode ?? 0));
          response.on('error', reject);
        },
      );
      request.setTimeout(10_000, () => request.destroy(new Error('timeout')));
      request.on('error', reject);
      request.end(body);
    });
  const fixed = Buffer.from(BODY);
  const started = process.hrtime.bigint();
  for (let i = 0; i < amount; i++) {
    const body = opts.dedup ? Buffer.from(JSON.stringify({ ...EVENT, dedup_id: randomUUID() })) : fixed;
    const t0 = process.hrtime.bigint();
    try {
      const status = await post(body);
      samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
      statuses.add(status);
    } catch {
      errors++;
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  agent.destroy();
  return { samples, statuses, errors, seconds };
}

// ---------------------------------------------------------------- wrk

function wrkAvailable(): string | null {
  return opts.skipWrk ? null : wrkVersion();
}

// ---------------------------------------------------------------- one mode

interface ModeResult {
  mode: Mode;
  sequential: Row[];
  throughput: Row[];
  notes: string[];
  /** Set when the mode could not be measured (e.g. the server did not start). */
  failure?: string;
}

async function benchMode(mode: Mode, baseUrl: string, wrk: string | null): Promise<ModeResult> {
  const mark = cleanupMark();
  const database = await createDatabase(baseUrl);
  onCleanup(database.drop);
  const dataDir = tempDataDir(opts.dataDirBase, mode);
  log(`${mode}: starting server (DATA_DIR ${dataDir})`);
  const server = await startServer(database.url, dataDir, { DURABILITY: mode });
  onCleanup(async () => void (await server.stop()));
  const url = `http://127.0.0.1:${server.port}/api/events`;
  const notes: string[] = [];

  if (opts.warmup > 0) {
    log(`${mode}: warm-up, ${opts.warmup} requests`);
    const [key] = await createKeys(server, 'warmup', 1);
    const warm = await cannon(cannonRequests(url, [key!], Math.min(8, opts.connections), { amount: opts.warmup }));
    if (warm.statuses.non202 > 0 || warm.result.errors > 0) {
      notes.push(`warm-up: non-202 ${warm.statuses.describeNon202()}, errors ${errorsOf(warm.result)}`);
    }
  }

  // a. sequential latency
  log(`${mode}: sequential, autocannon 1 connection × ${opts.amount}`);
  const [seqKey] = await createKeys(server, 'sequential-autocannon', 1);
  const seq = await cannon(cannonRequests(url, [seqKey!], 1, { amount: opts.amount }));
  const hdr = seq.result.latency;
  const sequential = cannonRows(seq, 1, null);
  notes.push(
    `autocannon summary histogram (2xx only): p90 ${hdr.p90} ms, p97.5 ${hdr.p97_5} ms, mean ${hdr.mean.toFixed(3)} ms; ` +
      'it has no p95 and records whole milliseconds (truncated), hence the per-response rows. ' +
      'autocannon req/s is n/a here: an `amount` run only ends on its 1-second tick, so its wall clock is at least 1 s.',
  );

  log(`${mode}: sequential, node:http 1 connection × ${opts.amount}`);
  const [httpKey] = await createKeys(server, 'sequential-node-http', 1);
  const plain = await sequentialNodeHttp(server.port, httpKey!, opts.amount);
  sequential.push({
    tool: `node:http (Node ${process.version})`,
    source: 'per-request process.hrtime.bigint()',
    connections: 1,
    requests: plain.statuses.total,
    seconds: plain.seconds,
    perSecond: plain.statuses.total / plain.seconds,
    latency: stats(plain.samples),
    non202: plain.statuses.describeNon202(),
    errors: String(plain.errors),
  });

  // b. throughput
  log(`${mode}: throughput, autocannon ${opts.connections} connections × ${opts.duration} s over ${opts.keys} orgs`);
  const tpKeys = await createKeys(server, 'throughput-autocannon', opts.keys);
  const tp = await cannon(cannonRequests(url, tpKeys, opts.connections, { duration: opts.duration }));
  const throughput = cannonRows(tp, opts.connections, tp.statuses.total / tp.seconds);
  notes.push(
    `autocannon throughput: req/s = responses / wall-clock seconds of the run; the mean of its own per-second samples was ${tp.result.requests.average.toFixed(0)} req/s.`,
    `Rate-limit headroom: each throughput tool gets ${opts.keys} fresh enterprise orgs, i.e. a burst of ${(opts.keys * 100_000).toLocaleString('en-US')} events ` +
      `plus ${(opts.keys * 100_000 / 60).toFixed(0)} events/s refill; one org alone (100,000/min) would answer 429 once a run passes its 100,000-event burst.`,
  );

  if (wrk) {
    log(`${mode}: throughput, wrk ${opts.connections} connections × ${opts.duration} s over ${opts.keys} orgs`);
    const wrkKeys = await createKeys(server, 'throughput-wrk', opts.keys);
    try {
      const { json, threads } = await runWrk({
        port: server.port, keys: wrkKeys, connections: opts.connections, duration: opts.duration, threads: opts.wrkThreads, dedup: opts.dedup,
      });
      const e = json.errors;
      const socketErrors = e.connect + e.read + e.write + e.timeout;
      throughput.push({
        tool: `${wrk} (${threads} threads)`,
        source: 'wrk latency histogram (µs)',
        connections: opts.connections,
        requests: json.requests,
        seconds: json.duration_us / 1e6,
        perSecond: json.requests / (json.duration_us / 1e6),
        latency: wrkLatency(json),
        non202: `${e.status} non-2xx/3xx`,
        errors: `${socketErrors} (connect ${e.connect}, read ${e.read}, write ${e.write}, timeout ${e.timeout})`,
      });
    } catch (error) {
      notes.push(`wrk failed: ${String(error).split('\n').slice(0, 6).join(' ')}`);
    }
  }

  notes.push(`backlog reported by /health/ready after the phases: ${await readyBacklog(server)}.`);
  log(`${mode}: stopping server`);
  await stopServer(server, notes);
  await runCleanups(mark);
  return { mode, sequential, throughput, notes };
}

// ---------------------------------------------------------------- markdown

const ms = (value: number | null) => (value === null ? 'n/a' : value.toFixed(3));
const rate = (row: Row) => (row.perSecond === null ? 'n/a' : row.perSecond.toFixed(0));

function sequentialTable(rows: Row[]): string {
  const lines = [
    '| Tool | Latency from | Requests | P50 ms | P95 ms | P99 ms | max ms | req/s | non-202 | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|---|---|',
  ];
  for (const r of rows) {
    lines.push(`| ${r.tool} | ${r.source} | ${r.requests} | ${ms(r.latency.p50)} | ${ms(r.latency.p95)} | ${ms(r.latency.p99)} | ${ms(r.latency.max)} | ${rate(r)} | ${r.non202} | ${r.errors} |`);
  }
  return lines.join('\n');
}

function throughputTable(rows: Row[]): string {
  const lines = [
    '| Tool | Latency from | Conns | Seconds | Requests | req/s | P50 ms | P99 ms | max ms | non-202 | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|',
  ];
  for (const r of rows) {
    lines.push(`| ${r.tool} | ${r.source} | ${r.connections} | ${r.seconds.toFixed(2)} | ${r.requests} | ${rate(r)} | ${ms(r.latency.p50)} | ${ms(r.latency.p99)} | ${ms(r.latency.max)} | ${r.non202} | ${r.errors} |`);
  }
  return lines.join('\n');
}

function modeMarkdown(result: ModeResult): string {
  if (result.failure !== undefined) {
    return [`#### Durability \`${result.mode}\``, '', `**Not measured: ${result.failure}**`].join('\n');
  }
  return [
    `#### Durability \`${result.mode}\``,
    '',
    `Sequential: 1 connection, pipelining 1, ${opts.amount} requests.`,
    '',
    sequentialTable(result.sequential),
    '',
    `Throughput: ${opts.connections} connections, ${opts.duration} s, requests rotating over ${opts.keys} enterprise orgs.`,
    '',
    throughputTable(result.throughput),
    '',
    ...result.notes.map((note) => `- ${note}`),
  ].join('\n');
}

function machineFacts(postgres: string, pgVersion: string, wrk: string | null): string[] {
  const current = { modes: opts.modes.join(','), amount: opts.amount, duration: opts.duration, connections: opts.connections, warmup: opts.warmup, keys: opts.keys };
  const nonDefault = nonDefaults(DEFAULTS, current);
  return [
    ...commonFacts({ command: commandLine('bench'), tools: `autocannon ${AUTOCANNON_VERSION}; wrk: ${wrk ?? 'not run'}`, postgres, pgVersion }),
    `- DATA_DIR under ${opts.dataDirBase} (filesystem ${filesystemOf(opts.dataDirBase)}); one acceptor thread (ACCEPTOR_THREADS default)`,
    `- Bodies: \`${BODY}\`${opts.dedup ? ' plus a unique `dedup_id` per request' : ', no dedup_id'}; warm-up ${opts.warmup} requests per mode`,
    ...(nonDefault.length > 0 ? [`- Non-default parameters: ${nonDefault.join(', ')} (short runs are not comparable with the defaults)`] : []),
  ];
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const wrk = wrkAvailable();
  if (!wrk && !opts.skipWrk) log('wrk not found on PATH: skipping the wrk phase (apt install wrk to enable it)');
  const base = await postgresBaseUrl();
  const pgVersion = await postgresVersion(base.url);
  const facts = machineFacts(base.description, pgVersion, wrk);

  const results: ModeResult[] = [];
  try {
    for (const mode of opts.modes) {
      const mark = cleanupMark();
      try {
        results.push(await benchMode(mode, base.url, wrk));
      } catch (error) {
        if (interrupted) throw error;
        const failure = describeFailure(error);
        log(`${mode}: FAILED: ${failure}`);
        results.push({ mode, sequential: [], throughput: [], notes: [], failure });
        await runCleanups(mark);
      }
    }
  } finally {
    await runCleanups(); // a failed mode's leftovers, then the embedded Postgres if any
  }

  publishSection({
    title: 'Ingest (issue 3)', note: opts.note, facts, begin: SECTION_BEGIN, end: SECTION_END, write: opts.writeResults,
    parts: [
      [
        'Which tool gave which figure: every row names its tool and where its latency comes from.',
        'autocannon\'s summary histogram keeps whole milliseconds, so sub-millisecond latencies come from',
        'autocannon\'s per-response times and from the node:http client; wrk reports microseconds.',
        'Every request must get 202; anything else is counted under non-202.',
      ].join('\n'),
      ...results.map(modeMarkdown),
    ],
    failed: results.some((result) => result.failure !== undefined),
  });
}

runBench(main);
