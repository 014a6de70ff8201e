// `npm run bench:compare`: the TypeScript server (DURABILITY fsync and commit) against the Rust
// baseline (native-bench/rust-baseline: the same ingestion hot path in tokio/hyper, answering 202
// after queueing in memory) on one Postgres, each in a fresh database of its own. All servers run
// side by side; after a warm-up the runs are interleaved round by round (A B C, then B C A, …) so
// that machine noise hits every contender alike:
//   1. sequential: one connection, one request at a time (raw keep-alive socket);
//   2. max throughput: many connections for a fixed time (autocannon, then wrk if on the PATH);
//   3. fixed rates: autocannon's overallRate at each --rates value.
// After every run the rows in Postgres are counted: every 202 of the TypeScript server must be
// stored (after its drain), the baseline's count is reported (it may lag or lose).
// Writes native-bench/results/<date>-compare.md and .svg and points results/LATEST.md at them.
// Usage: npm run bench:compare [-- --rounds 3 --contenders ts-fsync,rust --rates 5000 ...]
//        npm run bench:compare -- --quick        (smoke test, well under a minute)
//        npm run bench:compare -- --help
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, fdatasyncSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type Sql } from '../src/db/postgres.ts';
import { spreadBarsSpec, writeChart, type SpreadBar } from './chart.ts';
import {
  runBench,
  AUTOCANNON_VERSION, BODY, cannon, cannonPosts, commandLine, countRows, createDatabase, createKeys, datedResultFile,
  describeFailure, filesystemOf, fmt, int, interrupted, log, machineFacts, nonDefaults, onCleanup, parseBenchArgs, runSequential,
  positive, positiveList, postgresBaseUrl, postgresVersion, ROOT, runCleanups, runWrk, sleep, startListening, startServer,
  spread, spreadCell, stats, updateLatest, waitForBacklog, wrkLatency, wrkVersion, type RunningServer, type Spread, type Stats, tempDataDir,
} from './lib.ts';

const CONTENDERS = ['ts-fsync', 'ts-commit', 'rust', 'floor', 'floor-fsync'] as const;
type ContenderName = (typeof CONTENDERS)[number];
/**
 * What a contender's 202 promises. \`durable\` (the TypeScript server): every one is in Postgres once
 * the log drained. \`queued\` (the baseline): stored later, maybe; counted. \`nothing\` (a floor).
 */
type StoragePromise = 'durable' | 'queued' | 'nothing';
const PROMISES: Record<ContenderName, StoragePromise> = {
  'ts-fsync': 'durable', 'ts-commit': 'durable', rust: 'queued', floor: 'nothing', 'floor-fsync': 'nothing',
};
const RUST_BINARY = path.join(ROOT, 'native-bench', 'rust-baseline', 'target', 'release', 'rust-baseline');
const RUST_BUILD = path.join(ROOT, 'scripts', 'build-rust-baseline.sh');
const FLOOR_SERVER = path.join('native-bench', 'floor-server.ts');
/** Both servers allow an enterprise org 100,000 events a minute: each org gets fewer. */
const EVENTS_PER_KEY = 90_000;
/** The rate an unpaced run's orgs are sized for (more than either server reaches here). */
const UNPACED_CEILING = 200_000;
/** The baseline's count is taken as final once it has not grown for this long. */
const BASELINE_STILL_MS = 1_500;

const USAGE = `npm run bench:compare -- [options]
  --contenders <list>   ts-fsync,ts-commit,rust,floor,floor-fsync (default all)
  --rounds <n>          rounds; each runs every test on every contender, interleaved (default 3)
  --amount <n>          requests of the sequential test (default 2000)
  --duration <s>        seconds of each max-throughput and fixed-rate run (default 10)
  --connections <n>     connections of the max-throughput and fixed-rate runs (default 64)
  --rates <list>        fixed rates, requests/s (default 5000,10000,20000)
  --warmup <n>          warm-up requests per contender before the first round (default 2000)
  --baseline-wait <s>   after a run, wait at most this long for the baseline to store its 202s (default 120)
  --wrk-threads <n>     wrk threads (default: the CPU count)
  --skip-wrk            no wrk run even when wrk is on the PATH
  --quick               smoke test: --rounds 1 --amount 200 --duration 2 --rates 1000 --warmup 200 --baseline-wait 5
                        (flags given explicitly still win)`;

// ---------------------------------------------------------------- arguments

const { args, common } = parseBenchArgs({
  contenders: { type: 'string' },
  rounds: { type: 'string' },
  amount: { type: 'string' },
  duration: { type: 'string' },
  connections: { type: 'string' },
  rates: { type: 'string' },
  warmup: { type: 'string' },
  'baseline-wait': { type: 'string' },
  'wrk-threads': { type: 'string' },
  'skip-wrk': { type: 'boolean', default: false },
  quick: { type: 'boolean', default: false },
}, USAGE);

const DEFAULTS = {
  contenders: CONTENDERS.join(','), rounds: '3', amount: '2000', duration: '10', connections: '64', rates: '5000,10000,20000', warmup: '2000',
  'baseline-wait': '120',
};
const QUICK = { ...DEFAULTS, rounds: '1', amount: '200', duration: '2', rates: '1000', warmup: '200', 'baseline-wait': '5' };
const given = (name: keyof typeof DEFAULTS) => args[name] ?? (args.quick ? QUICK : DEFAULTS)[name];

const contenderNames = given('contenders').split(',').map((c) => c.trim()).filter(Boolean);
for (const name of contenderNames) {
  if (!(CONTENDERS as readonly string[]).includes(name)) {
    console.error(`--contenders: unknown contender "${name}" (expected ${CONTENDERS.join(', ')})`);
    process.exit(2);
  }
}
const opts = {
  contenders: [...new Set(contenderNames)] as ContenderName[],
  rounds: positive('rounds', given('rounds')),
  amount: positive('amount', given('amount')),
  duration: positive('duration', given('duration')),
  connections: positive('connections', given('connections')),
  rates: positiveList('rates', given('rates')),
  warmup: positive('warmup', given('warmup'), true),
  /** How long the baseline's row count may take to catch up after a run (it stores behind its 202s). */
  baselineWaitMs: positive('baseline-wait', given('baseline-wait'), true) * 1000,
  wrkThreads: args['wrk-threads'] === undefined ? null : positive('wrk-threads', args['wrk-threads']),
  skipWrk: args['skip-wrk'],
  quick: args.quick,
  ...common,
};

// ---------------------------------------------------------------- contenders

interface Contender {
  name: ContenderName;
  server: RunningServer;
  /** On the contender's own database. */
  sql: Sql;
  promise: StoragePromise;
  /** 202s so far (warm-ups included), rows counted at the last check. */
  accepted: number;
  rows: number;
  keySerial: number;
  /** Set once the contender's server is gone: its remaining runs are skipped. */
  dead: string | null;
}

/** Builds the baseline with scripts/build-rust-baseline.sh when its binary is missing. */
function ensureRustBinary(): void {
  if (existsSync(RUST_BINARY)) return;
  const hint = 'build it with `npm run rust-baseline` (scripts/build-rust-baseline.sh), or leave `rust` out of --contenders';
  if (!existsSync(RUST_BUILD)) throw new Error(`the Rust baseline ${path.relative(ROOT, RUST_BINARY)} is missing: ${hint}`);
  log(`${path.relative(ROOT, RUST_BINARY)} is missing: running ${path.relative(ROOT, RUST_BUILD)}`);
  const build = spawnSync('bash', [RUST_BUILD], { cwd: ROOT, stdio: ['ignore', process.stderr, process.stderr] });
  if (build.status !== 0 || !existsSync(RUST_BINARY)) {
    throw new Error(`building the Rust baseline failed (exit ${build.status}): ${hint}`);
  }
}

async function startContender(name: ContenderName, baseUrl: string): Promise<Contender> {
  const database = await createDatabase(baseUrl);
  onCleanup(database.drop);
  let server: RunningServer;
  if (name === 'rust') {
    server = await startListening(RUST_BINARY, [], { DATABASE_URL: database.url });
  } else if (name === 'floor' || name === 'floor-fsync') {
    server = await startListening(process.execPath, ['--import', 'tsx', FLOOR_SERVER], {
      DATA_DIR: tempDataDir(opts.dataDirBase, `compare-${name}`), FLOOR_FSYNC: name === 'floor-fsync' ? '1' : '0',
    });
  } else {
    const dataDir = tempDataDir(opts.dataDirBase, `compare-${name}`);
    server = await startServer(database.url, dataDir, { DURABILITY: name === 'ts-fsync' ? 'fsync' : 'commit' });
  }
  onCleanup(async () => void (await server.stop()));
  const sql = connect(database.url, { max: 1 });
  onCleanup(() => sql.end({ timeout: 5 }));
  log(`${name}: listening on :${server.port} (database ${database.name})`);
  return { name, server, sql, promise: PROMISES[name], accepted: 0, rows: 0, keySerial: 0, dead: null };
}

/**
 * Fresh enterprise orgs for one run (enough that none passes its per-minute limit), each sent one
 * event first so that the key is in the server's cache before the timed run; returns the keys and
 * the 202s of those first events.
 */
async function freshKeys(c: Contender, events: number): Promise<{ keys: string[]; accepted: number }> {
  const count = Math.max(1, Math.ceil(events / EVENTS_PER_KEY));
  const keys = await createKeys(c.server, `compare ${c.name} ${++c.keySerial}`, count);
  const statuses = await Promise.all(keys.map(async (key) => {
    const response = await fetch(`http://127.0.0.1:${c.server.port}/api/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key },
      body: BODY,
    });
    await response.text();
    return response.status;
  }));
  const bad = statuses.filter((status) => status !== 202);
  if (bad.length > 0) throw new Error(`${c.name}: warming a fresh key answered ${bad.join(', ')}`);
  return { keys, accepted: keys.length };
}

async function rowCount(c: Contender): Promise<number> {
  if (c.promise === 'durable') return countRows(c.sql);
  const [row] = await c.sql<{ n: number }[]>`select count(*)::int as n from baseline_events`;
  return row!.n;
}

interface Stored {
  /** Rows added since the previous check, 202s of this run (key warm-ups included). */
  rows: number;
  accepted: number;
  /** All rows vs all 202s of the contender so far. */
  totalRows: number;
  totalAccepted: number;
  waitedMs: number;
}

/**
 * After a run: the TypeScript server's log drained (backlog 0), then its rows; the baseline's rows
 * once they reach its 202s or stop growing (at most --baseline-wait); a floor has none. Waiting also
 * keeps one contender's storing out of the next contender's run.
 */
async function settle(c: Contender, accepted: number): Promise<Stored> {
  const started = Date.now();
  c.accepted += accepted;
  let rows: number;
  if (c.promise === 'durable') {
    await waitForBacklog(c.server.port, 120_000);
    rows = await rowCount(c);
  } else if (c.promise === 'nothing') {
    rows = 0;
  } else {
    rows = await rowCount(c);
    let grewAt = Date.now();
    while (rows < c.accepted && Date.now() - started < opts.baselineWaitMs && Date.now() - grewAt < BASELINE_STILL_MS) {
      await sleep(100);
      const next = await rowCount(c);
      if (next > rows) grewAt = Date.now();
      rows = next;
    }
  }
  const stored = { rows: rows - c.rows, accepted, totalRows: rows, totalAccepted: c.accepted, waitedMs: Date.now() - started };
  c.rows = rows;
  return stored;
}

// ---------------------------------------------------------------- runs

type TestName = string; // 'sequential' | 'max autocannon' | 'max wrk' | `rate ${n}`

interface Run {
  test: TestName;
  contender: ContenderName;
  round: number;
  tool: string;
  /** Answers counted by the tool, 202s among them, and the run's seconds (first send → last answer). */
  responses: number;
  accepted: number;
  seconds: number;
  perSecond: number;
  latency: Stats;
  non202: number;
  /** Socket errors and timeouts. */
  errors: number;
  stored: Stored | null;
  /** A failed check (the TypeScript server lost a 202) or a failed run. */
  problem: string | null;
  notes: string[];
}

interface Measured {
  tool: string;
  responses: number;
  accepted: number;
  seconds: number;
  latency: Stats;
  errors: number;
  /** The 202s of the key warm-ups. */
  warmed: number;
  notes: string[];
}

/** The sequential test (runSequential): one request at a time over one keep-alive connection. */
async function sequential(c: Contender): Promise<Measured> {
  const { keys, accepted: warmed } = await freshKeys(c, opts.amount);
  const client = await runSequential(c.server.port, keys, 'bench.compare.sequential', opts.amount);
  const samples: number[] = [];
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  for (let i = 0; i < opts.amount; i++) {
    if (client.status[i] === 0) continue;
    samples.push(client.ackAt[i]! - client.sentAt[i]!);
    first = Math.min(first, client.sentAt[i]!);
    last = Math.max(last, client.ackAt[i]!);
  }
  return {
    tool: 'raw HTTP/1.1 socket (PacedClient, 1 connection)',
    responses: client.statuses.total,
    accepted: client.statuses.counts.get(202) ?? 0,
    seconds: samples.length > 0 ? (last - first) / 1000 : 0,
    latency: stats(samples),
    errors: client.errors,
    warmed,
    notes: [],
  };
}

async function autocannonRun(c: Contender, overallRate?: number): Promise<Measured> {
  const { keys, accepted: warmed } = await freshKeys(c, (overallRate ?? UNPACED_CEILING) * opts.duration);
  const url = `http://127.0.0.1:${c.server.port}/api/events`;
  const run = await cannon(cannonPosts(url, keys, opts.connections, { duration: opts.duration, ...(overallRate ? { overallRate } : {}) }));
  const errors = run.result.errors;
  return {
    tool: `autocannon ${AUTOCANNON_VERSION}`,
    responses: run.statuses.total,
    accepted: run.statuses.counts.get(202) ?? 0,
    seconds: run.seconds,
    latency: stats(run.samples),
    errors,
    warmed,
    notes: run.result.timeouts > 0 ? [`${run.result.timeouts} timeouts`] : [],
  };
}

async function wrkRun(c: Contender, wrk: string): Promise<Measured> {
  const { keys, accepted: warmed } = await freshKeys(c, UNPACED_CEILING * opts.duration);
  const { json, threads } = await runWrk({ port: c.server.port, keys, connections: opts.connections, duration: opts.duration, threads: opts.wrkThreads });
  const e = json.errors;
  return {
    tool: `${wrk} (${threads} threads)`,
    responses: json.requests,
    // wrk-post.lua counts an answer outside 2xx/3xx under errors.status; every 2xx here is a 202.
    accepted: json.requests - e.status,
    seconds: json.duration_us / 1e6,
    latency: wrkLatency(json),
    errors: e.connect + e.read + e.write + e.timeout,
    warmed,
    notes: e.timeout > 0 ? [`${e.timeout} timeouts`] : [],
  };
}

async function runOne(test: TestName, c: Contender, round: number, wrk: string | null): Promise<Run> {
  const base = { test, contender: c.name, round };
  let measured: Measured;
  let stored: Stored;
  try {
    if (test === 'sequential') measured = await sequential(c);
    else if (test === 'max autocannon') measured = await autocannonRun(c);
    else if (test === 'max wrk') measured = await wrkRun(c, wrk!);
    else measured = await autocannonRun(c, Number(test.slice('rate '.length)));
    stored = await settle(c, measured.accepted + measured.warmed);
  } catch (error) {
    if (interrupted) throw error;
    if (c.server.child.exitCode !== null || c.server.child.signalCode !== null) {
      c.dead = `server exited (${c.server.child.exitCode ?? c.server.child.signalCode}); last log lines: ${c.server.logs.slice(-3).join(' | ')}`;
    }
    return failedRun(base, c.dead ?? describeFailure(error));
  }
  const run: Run = {
    ...base,
    tool: measured.tool,
    responses: measured.responses,
    accepted: measured.accepted,
    seconds: measured.seconds,
    perSecond: measured.seconds > 0 ? measured.responses / measured.seconds : 0,
    latency: measured.latency,
    non202: measured.responses - measured.accepted,
    errors: measured.errors,
    stored,
    problem: null,
    notes: measured.notes,
  };
  if (c.promise === 'durable' && stored.rows < stored.accepted) {
    run.problem = `LOST: ${int(stored.accepted - stored.rows)} of ${int(stored.accepted)} events answered 202 are not in Postgres after the drain`;
  } else if (c.promise === 'durable' && stored.rows > stored.accepted) {
    // The tool stopped with requests in flight (or gave up on them): the server took them anyway.
    run.notes.push(`${int(stored.rows - stored.accepted)} more rows than counted 202s (requests in flight when the tool stopped)`);
  }
  return run;
}

function failedRun(base: { test: TestName; contender: ContenderName; round: number }, problem: string): Run {
  return {
    ...base, tool: '', responses: 0, accepted: 0, seconds: 0, perSecond: 0, latency: stats([]), non202: 0, errors: 0,
    stored: null, problem: `run failed: ${problem}`, notes: [],
  };
}

function progressLine(run: Run): string {
  const head = `round ${run.round}/${opts.rounds} · ${run.test} · ${run.contender}`;
  if (run.stored === null) return `${head}: ${run.problem}`;
  const l = run.latency;
  const promise = PROMISES[run.contender];
  const stored = promise === 'nothing' ? 'stores nothing' : promise === 'queued'
    ? `rows ${int(run.stored.totalRows)} of ${int(run.stored.totalAccepted)} 202s so far (waited ${(run.stored.waitedMs / 1000).toFixed(1)} s)`
    : `rows +${int(run.stored.rows)} for ${int(run.stored.accepted)} 202s${run.problem ? ` — ${run.problem}` : ''}`;
  return `${head}: ${int(run.perSecond)} req/s, P50 ${ms(l.p50)} P99 ${ms(l.p99)} ms, non-202 ${run.non202}, errors ${run.errors}; ${stored}`;
}

// ---------------------------------------------------------------- summary

const ms = (value: number | null) => (value === null ? 'n/a' : value < 10 ? value.toFixed(3) : value.toFixed(1));

const FIGURES = {
  'req/s': (r: Run) => r.perSecond,
  P50: (r: Run) => r.latency.p50,
  P95: (r: Run) => r.latency.p95,
  P99: (r: Run) => r.latency.p99,
  max: (r: Run) => r.latency.max,
} as const;
type Figure = keyof typeof FIGURES;

function spreadOf(runs: Run[], test: TestName, contender: ContenderName, figure: Figure): Spread | null {
  const values = runs
    .filter((r) => r.test === test && r.contender === contender && r.stored !== null)
    .map(FIGURES[figure])
    .filter((v): v is number => v !== null);
  return spread(values);
}

function testTable(runs: Run[], test: TestName, figures: Figure[], target?: number): string {
  const header = ['contender', 'tool', 'runs', ...figures.map((f) => (f === 'req/s' ? (target ? 'achieved req/s' : 'req/s') : `${f} ms`)), 'non-202', 'errors'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const contender of opts.contenders) {
    const mine = runs.filter((r) => r.test === test && r.contender === contender);
    if (mine.length === 0) continue;
    const ok = mine.filter((r) => r.stored !== null);
    const cells = figures.map((f) => spreadCell(spreadOf(runs, test, contender, f), f === 'req/s' ? int : ms));
    const failed = mine.length - ok.length;
    lines.push(
      `| ${contender} | ${ok[0]?.tool ?? ''} | ${ok.length}${failed > 0 ? ` (+${failed} failed)` : ''} | ${cells.join(' | ')} | ` +
        `${ok.reduce((n, r) => n + r.non202, 0)} | ${ok.reduce((n, r) => n + r.errors, 0)} |`,
    );
  }
  return lines.join('\n');
}

function storedTable(contenders: Contender[], runs: Run[]): string {
  const lines = [
    '| contender | 202s (all runs and warm-ups) | rows in Postgres at the end | difference | runs with a lost 202 |',
    '|---|---:|---:|---:|---:|',
  ];
  for (const c of contenders.filter(({ promise }) => promise !== 'nothing')) {
    const lost = runs.filter((r) => r.contender === c.name && r.problem?.startsWith('LOST')).length;
    lines.push(`| ${c.name} | ${int(c.accepted)} | ${int(c.rows)} | ${int(c.rows - c.accepted)} | ${c.promise === 'durable' ? lost : 'n/a (not durable)'} |`);
  }
  return lines.join('\n');
}

function runsTable(runs: Run[]): string {
  const lines = [
    '| round | test | contender | tool | answers | 202 | seconds | req/s | P50 ms | P95 ms | P99 ms | max ms | errors | rows stored / 202s | notes |',
    '|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|',
  ];
  for (const r of runs) {
    const promise = PROMISES[r.contender];
    const stored = r.stored === null || promise === 'nothing' ? '' : promise === 'queued'
      ? `${int(r.stored.totalRows)} / ${int(r.stored.totalAccepted)} (all so far)`
      : `${int(r.stored.rows)} / ${int(r.stored.accepted)}`;
    const notes = [...(r.problem ? [`**${r.problem}**`] : []), ...r.notes].join('; ').replace(/\|/g, '\\|');
    lines.push(
      `| ${r.round} | ${r.test} | ${r.contender} | ${r.tool} | ${int(r.responses)} | ${int(r.accepted)} | ${r.seconds.toFixed(2)} | ${int(r.perSecond)} | ` +
        `${ms(r.latency.p50)} | ${ms(r.latency.p95)} | ${ms(r.latency.p99)} | ${ms(r.latency.max)} | ${r.errors} | ${stored} | ${notes} |`,
    );
  }
  return lines.join('\n');
}

function chartBars(runs: Run[], tests: TestName[]): SpreadBar[] {
  const bars: SpreadBar[] = [];
  const add = (panel: string, group: string, test: TestName, figure: Figure) => {
    for (const contender of opts.contenders) {
      const s = spreadOf(runs, test, contender, figure);
      if (s !== null) bars.push({ panel, group, series: contender, ...s });
    }
  };
  for (const figure of ['P50', 'P95', 'P99'] as const) add('Sequential, 1 connection: latency (ms)', figure, 'sequential', figure);
  const maxTests = tests.filter((t) => t.startsWith('max '));
  for (const test of maxTests) add(`Max throughput, ${opts.connections} connections: req/s`, test.slice(4), test, 'req/s');
  for (const test of maxTests) {
    for (const figure of ['P50', 'P99'] as const) add(`Max throughput: latency (ms)`, `${test.slice(4)} ${figure}`, test, figure);
  }
  for (const rate of opts.rates) add('Fixed rate: achieved req/s', int(rate), `rate ${rate}`, 'req/s');
  for (const figure of ['P50', 'P99'] as const) {
    for (const rate of opts.rates) add(`Fixed rate: ${figure} latency (ms)`, `${int(rate)}/s`, `rate ${rate}`, figure);
  }
  return bars;
}

function versionOf(command: string, argv: string[]): string {
  const probe = spawnSync(command, argv, { encoding: 'utf8' });
  return probe.status === 0 ? probe.stdout.trim() : 'not found';
}

function rustFacts(): string[] {
  if (!opts.contenders.includes('rust')) return [];
  const cargo = readFileSync(path.join(ROOT, 'native-bench', 'rust-baseline', 'Cargo.toml'), 'utf8');
  const version = /^version\s*=\s*"([^"]+)"/m.exec(cargo)?.[1] ?? 'unknown';
  const built = statSync(RUST_BINARY).mtime.toISOString();
  return [`- Rust baseline: ${path.relative(ROOT, RUST_BINARY)} (crate version ${version}, built ${built}); ${versionOf('rustc', ['--version'])}`];
}

// ---------------------------------------------------------------- main

/**
 * The disk's own floor for a durable 202: `pwrite` of 200 bytes + `fdatasync` into a preallocated
 * file where the servers keep DATA_DIR, one at a time. An fsync-mode answer waits for one such
 * flush (of its journal) and cannot beat this.
 */
function flushFloor(dir: string, count = 2000): Stats {
  const file = path.join(dir, `flush-floor-${process.pid}`);
  const fd = openSync(file, 'w+');
  try {
    writeSync(fd, Buffer.alloc(count * 200 + 4096));
    fdatasyncSync(fd);
    const record = Buffer.alloc(200, 1);
    const samples: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = process.hrtime.bigint();
      writeSync(fd, record, 0, record.length, i * 200);
      fdatasyncSync(fd);
      samples.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
    return stats(samples);
  } finally {
    closeSync(fd);
    rmSync(file);
  }
}

const floorLine = (when: string, floor: Stats) =>
  `- Disk flush floor ${when} (\`pwrite\` 200 B + \`fdatasync\`, one at a time, 2,000 times, in the DATA_DIR filesystem): ` +
  `P50 ${fmt(floor.p50, 3)} ms, P95 ${fmt(floor.p95, 3)} ms, P99 ${fmt(floor.p99, 3)} ms`;

async function main(): Promise<void> {
  const wrk = opts.skipWrk ? null : wrkVersion();
  if (!wrk && !opts.skipWrk) log('wrk not found on PATH: max throughput by autocannon only (apt install wrk to add it)');
  if (opts.contenders.includes('rust')) ensureRustBinary();
  const tests: TestName[] = ['sequential', 'max autocannon', ...(wrk ? ['max wrk'] : []), ...opts.rates.map((rate) => `rate ${rate}`)];
  const loadAtStart = os.loadavg()[0]!;
  const base = await postgresBaseUrl();
  const pgVersion = await postgresVersion(base.url);
  const command = commandLine('bench:compare');
  const current = {
    contenders: opts.contenders.join(','), rounds: opts.rounds, amount: opts.amount, duration: opts.duration,
    connections: opts.connections, rates: opts.rates.join(','), warmup: opts.warmup, 'baseline-wait': opts.baselineWaitMs / 1000,
  };
  const nonDefault = nonDefaults(DEFAULTS, current);
  // Taken now: the date and load average of the start.
  const facts = [
    ...machineFacts({ command, tools: `autocannon ${AUTOCANNON_VERSION}; wrk: ${wrk ?? 'not run'}`, postgres: base.description, pgVersion }),
    ...rustFacts(),
    `- DATA_DIR of the TypeScript servers under ${opts.dataDirBase} (filesystem ${filesystemOf(opts.dataDirBase)}); defaults otherwise (one acceptor thread)`,
    ...(loadAtStart > 1.5 ? [`- **Noisy: the 1-minute load average was ${loadAtStart.toFixed(2)} at the start**`] : []),
    ...(nonDefault.length > 0 ? [`- Non-default parameters: ${nonDefault.join(', ')} (short runs are not comparable with the defaults)`] : []),
  ];

  log('measuring the disk flush floor');
  facts.push(floorLine('at the start', flushFloor(opts.dataDirBase)));

  const contenders: Contender[] = [];
  const runs: Run[] = [];
  const notes: string[] = [];
  let failed = false;
  try {
    for (const name of opts.contenders) contenders.push(await startContender(name, base.url));
    if (opts.warmup > 0) {
      for (const c of contenders) {
        log(`${c.name}: warm-up, ${int(opts.warmup)} requests over 8 connections`);
        const { keys, accepted: warmed } = await freshKeys(c, opts.warmup);
        const url = `http://127.0.0.1:${c.server.port}/api/events`;
        const warm = await cannon(cannonPosts(url, keys, Math.min(8, opts.connections), { amount: opts.warmup }));
        if (warm.statuses.non202 > 0 || warm.result.errors > 0) {
          notes.push(`${c.name} warm-up: non-202 ${warm.statuses.describeNon202()}, errors ${warm.result.errors}`);
        }
        await settle(c, (warm.statuses.counts.get(202) ?? 0) + warmed);
      }
    }
    for (let round = 1; round <= opts.rounds; round++) {
      // Rotate who goes first, so no contender always runs right after the same one.
      const order = contenders.map((_, i) => contenders[(i + round - 1) % contenders.length]!);
      log(`round ${round}/${opts.rounds}: order ${order.map((c) => c.name).join(', ')}`);
      for (const test of tests) {
        for (const c of order) {
          if (c.dead !== null) continue;
          const run = await runOne(test, c, round, wrk);
          runs.push(run);
          log(progressLine(run));
          if (run.problem !== null) {
            failed = true;
            if (run.problem.startsWith('LOST')) log(`!!! ${c.name}: ${run.problem}`);
          }
        }
      }
    }
  } finally {
    await runCleanups(); // servers, databases, DATA_DIRs, the embedded Postgres if any
  }
  if (interrupted) return;
  facts.push(floorLine('at the end', flushFloor(opts.dataDirBase)));

  const lost = runs.filter((r) => r.problem?.startsWith('LOST'));
  const section = [
    '# TypeScript server vs Rust baseline (`npm run bench:compare`)',
    '',
    ...(opts.note ? [`**${opts.note}**`, ''] : []),
    ...(lost.length > 0 ? [`**${lost.length} run(s) of the TypeScript server LOST events answered 202 — see the runs table.**`, ''] : []),
    ...facts,
    '',
    '## How',
    '',
    `Contenders: ${opts.contenders.map((c) => `\`${c}\``).join(', ')}. \`ts-fsync\` and \`ts-commit\` are this server (\`node --import tsx src/main.ts\`) with`,
    '`DURABILITY=fsync` (202 after the LMDB commit and the journal flush) and `DURABILITY=commit` (after the commit). `rust` is native-bench/rust-baseline:',
    'the same routes in Rust (tokio, hyper), answering 202 **after queueing the event in memory** — not durable; it stores into `baseline_events`.',
    '`floor` and `floor-fsync` are native-bench/floor-server.ts: the same Node and uWebSockets.js build answering 202 after reading the body and',
    'nothing else (no key, rate limit, parse or storage); `floor-fsync` first makes each event-loop turn\'s bodies durable with one `pwrite` +',
    '`fdatasync` into a file written out in advance (the cheapest durable 202). They show what the stack and the disk cost before any work.',
    'All servers run side by side, each with a fresh database on the same Postgres. Each run gets fresh enterprise orgs (100,000 events/min each;',
    `one org per ${int(EVENTS_PER_KEY)} requests the run may send, unpaced runs sized for ${int(UNPACED_CEILING)} req/s) so no rate limit caps a run, and one event`,
    'per org before the run puts its key in the server\'s cache.',
    `After a warm-up (${int(opts.warmup)} requests each), ${opts.rounds} round(s): each round runs every test on every contender, test by test,`,
    'contender by contender (the order rotates each round), so noise hits all alike. Figures: **median (min–max) over the rounds**.',
    '',
    `1. **Sequential**: ${int(opts.amount)} requests, one at a time over one keep-alive connection (PacedClient, raw HTTP/1.1; latency = answer − send,`,
    '   hrtime). req/s = answers / (last answer − first send).',
    `2. **Max throughput**: ${opts.connections} connections for ${opts.duration} s, pipelining 1: autocannon (in the bench process)${wrk ? ' and wrk (its own process)' : ''}.`,
    '   req/s = answers / wall seconds. autocannon latencies are its per-response hrtime measurements; wrk\'s are its histogram.',
    `3. **Fixed rates** ${opts.rates.map(int).join(', ')} req/s: autocannon \`overallRate\`, ${opts.connections} connections, ${opts.duration} s. “achieved req/s”`,
    '   below the target means the server (or the client) could not keep the rate; latencies are then not at that rate.',
    '   autocannon times each request from its send, so a stalled connection\'s queue wait is not counted (coordinated omission).',
    '',
    'Stored: after each run the bench waits for the TypeScript server\'s log to drain (`/metrics` backlog 0) and counts `events` rows:',
    'every 202 must be there (**LOST** otherwise, and the exit code is 1). The baseline\'s `baseline_events` rows are counted once they',
    `reach its 202s or stop growing for ${BASELINE_STILL_MS / 1000} s (at most ${opts.baselineWaitMs / 1000} s): what it had not stored by then is reported, not failed.`,
    '',
    '## Results',
    '',
    `### Sequential (1 connection, ${int(opts.amount)} requests)`,
    '',
    testTable(runs, 'sequential', ['P50', 'P95', 'P99', 'max', 'req/s']),
    '',
    `### Max throughput (${opts.connections} connections, ${opts.duration} s)`,
    '',
    ...tests.filter((t) => t.startsWith('max ')).flatMap((t) => [`${t.slice(4)}:`, '', testTable(runs, t, ['req/s', 'P50', 'P99', 'max']), '']),
    `### Fixed rates (${opts.connections} connections, ${opts.duration} s, autocannon)`,
    '',
    ...opts.rates.flatMap((rate) => [`${int(rate)} req/s:`, '', testTable(runs, `rate ${rate}`, ['req/s', 'P50', 'P95', 'P99', 'max'], rate), '']),
    '### Stored in Postgres',
    '',
    storedTable(contenders, runs),
    '',
    ...notes.map((note) => `- ${note}`),
    ...(notes.length > 0 ? [''] : []),
    '### Every run',
    '',
    '<details><summary>One row per run, in the order they ran</summary>',
    '',
    runsTable(runs),
    '',
    '</details>',
    '',
    '## Commands',
    '',
    `- This run: \`${command}\``,
    '- `ts-fsync` / `ts-commit`: `PORT=0 HOST=127.0.0.1 DURABILITY=fsync|commit DATA_DIR=<temp dir> DATABASE_URL=<fresh database> ADMIN_TOKEN=<random> node --import tsx src/main.ts`',
    `- \`rust\`: \`PORT=0 HOST=127.0.0.1 DATABASE_URL=<fresh database> ADMIN_TOKEN=<random> ${path.relative(ROOT, RUST_BINARY)}\` (built by \`npm run rust-baseline\`)`,
    `- \`floor\` / \`floor-fsync\`: \`PORT=0 HOST=127.0.0.1 FLOOR_FSYNC=0|1 DATA_DIR=<temp dir> node --import tsx ${FLOOR_SERVER}\``,
    `- Max throughput: autocannon ${AUTOCANNON_VERSION} (Node API) \`{connections: ${opts.connections}, duration: ${opts.duration}, pipelining: 1, timeout: 10}\`, POST /api/events, keys rotated per request`,
    ...(wrk ? [`- Max throughput: \`wrk -t ${Math.min(opts.wrkThreads ?? os.cpus().length, opts.connections)} -c ${opts.connections} -d ${opts.duration}s --timeout 10s -s native-bench/wrk-post.lua http://127.0.0.1:<port>/api/events -- nodedup <keys>\``] : []),
    `- Fixed rates: the autocannon options above plus \`overallRate: <rate>\``,
    `- Event body: \`${BODY}\` (sequential: \`{"type":"bench.compare.sequential","payload":{"seq":…,"sent_at":…,"user":"u_123","amount":42.5}}\`)`,
  ].join('\n');

  console.log(section);
  if (opts.writeResults) {
    const mdFile = datedResultFile('compare', 'md');
    const svgFile = datedResultFile('compare', 'svg');
    await writeChart(svgFile, spreadBarsSpec({
      title: 'TypeScript server vs Rust baseline',
      subtitle: [
        `bars: median over ${opts.rounds} round(s), whiskers: min–max · ${new Date().toISOString().slice(0, 16)}Z · ${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'CPU'}`,
        'rust answers 202 before storing (not durable); ts-fsync after fsync; ts-commit after the LMDB commit; floor: uWS answering, no work',
      ],
      bars: chartBars(runs, tests),
      seriesTitle: 'contender',
      seriesOrder: [...opts.contenders],
    }));
    writeFileSync(mdFile, `${section.replace('## How', `![chart](${path.basename(svgFile)})\n\n## How`)}\n`);
    updateLatest('compare', [mdFile, svgFile], lost.length > 0 ? 'LOST events, see the file' : `${opts.rounds} round(s), ${opts.contenders.join(' vs ')}`);
    log(`wrote ${path.relative(ROOT, mdFile)}, ${path.relative(ROOT, svgFile)} and native-bench/results/LATEST.md`);
  }
  if (failed) process.exitCode = 1;
}

runBench(main);
