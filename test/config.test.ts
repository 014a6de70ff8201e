// Configuration: a bad value stops the server at once with exit code 1 and one stderr line naming
// the variable; the pure-JS uWS fallback is refused; good values start and stop cleanly.
// Each case spawns `node --import tsx src/main.ts` itself, with its own DATA_DIR and a deadline.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CONFIG_VARIABLES } from '../src/config.ts';
import { createTestDatabase, type TestDatabase } from './helpers/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEADLINE_MS = 20_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const config = suite<{ db: TestDatabase; dirs: string[] }>('config');

config.before(async (ctx) => {
  ctx.db = await createTestDatabase();
  ctx.dirs = [];
});

config.after(async (ctx) => {
  for (const dir of ctx.dirs ?? []) rmSync(dir, { recursive: true, force: true });
  await ctx.db?.drop();
});

/** The server's environment: the test's, minus every config variable, plus sane defaults and `env`. */
function serverEnv(ctx: { db: TestDatabase; dirs: string[] }, env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const [name] of CONFIG_VARIABLES) delete base[name];
  delete base.UWS_USE_FALLBACK;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'triggers-test-config-'));
  ctx.dirs.push(dataDir);
  return { ...base, DATABASE_URL: ctx.db.url, DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env };
}

/**
 * Runs the server to its exit. If it is still running at the deadline it is killed and the run
 * fails: a bad value must stop it, never leave it serving. With `whenListening`, that callback
 * runs once the `listening` line appears (given the port and a way to signal the process) and is
 * expected to end it.
 */
function runServer(env: NodeJS.ProcessEnv, whenListening?: (port: number, signal: (name: NodeJS.Signals) => void) => Promise<void>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let listening = false;
    let failure: Error | null = null;
    const timer = setTimeout(() => {
      failure = new Error(`server still running after ${DEADLINE_MS} ms\nstdout:\n${stdout.slice(-2000)}\nstderr:\n${stderr.slice(-2000)}`);
      child.kill('SIGKILL');
    }, DEADLINE_MS);
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (listening || !whenListening) return;
      const line = stdout.split('\n').find((text) => text.includes('"msg":"listening"'));
      if (!line) return;
      listening = true;
      whenListening(JSON.parse(line).port, (name) => child.kill(name)).catch((error: Error) => {
        failure = error;
        child.kill('SIGKILL');
      });
    });
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // Let the pipes flush what the process wrote last.
      setImmediate(() => (failure ? reject(failure) : resolve({ code, signal, stdout, stderr })));
    });
  });
}

function assertRefused(run: Run, variable: string, what: string): void {
  const context = `${what}\nexit ${run.code} ${run.signal ?? ''}\nstdout:\n${run.stdout.slice(-1500)}\nstderr:\n${run.stderr.slice(-1500)}`;
  assert.is(run.code, 1, `exit code: ${context}`);
  const lines = run.stderr.split('\n').filter((line) => line.trim() !== '');
  assert.is(lines.length, 1, `expected one stderr line: ${context}`);
  assert.ok(lines[0]!.includes(variable), `the stderr line does not name ${variable}: ${context}`);
  assert.not.match(run.stderr, /\n\s+at /, `a stack trace: ${context}`);
  assert.not.ok(run.stdout.includes('"msg":"listening"'), `it started listening: ${context}`);
}

const BAD_VALUES: Array<[string, string]> = [
  ['ACCEPTOR_THREADS', '0'],
  ['ACCEPTOR_THREADS', '65'],
  ['ACCEPTOR_THREADS', 'two'],
  ['ACCEPTOR_THREADS', '1.5'],
  ['PORT', 'abc'],
  ['PORT', '65536'],
  ['PORT', '-1'],
  ['PORT', '80 '],
  ['DURABILITY', 'maybe'],
  ['DURABILITY', 'FSYNC'],
  ['DEDUP_WINDOW', 'forever'],
  ['DEDUP_WINDOW', '0'],
  ['DEDUP_WINDOW', '-5m'],
  ['DATABASE_URL', 'mysql://x'],
  ['DATABASE_URL', 'localhost:5432/postgres'],
  ['LOG_LEVEL', 'loud'],
  ['LOG_MAX_IN_FLIGHT', '0'],
  ['DATABASE_POOL_SIZE', '0'],
];

for (const [variable, value] of BAD_VALUES) {
  config(`${variable}=${JSON.stringify(value)} → exit 1 with one stderr line naming ${variable}`, async (ctx) => {
    assertRefused(await runServer(serverEnv(ctx, { [variable]: value })), variable, `${variable}=${value}`);
  });
}

config('every documented variable with a value of the wrong kind is refused by name', async (ctx) => {
  // Free-form variables take any string; every other one must refuse "bogus!".
  const freeForm = new Set(['HOST', 'DATA_DIR', 'ADMIN_TOKEN']);
  const checked = CONFIG_VARIABLES.map(([name]) => name).filter((name) => !freeForm.has(name));
  assert.ok(checked.length >= 10, `only ${checked.length} variables documented`);
  for (let i = 0; i < checked.length; i += 4) {
    await Promise.all(
      checked.slice(i, i + 4).map(async (variable) => {
        assertRefused(await runServer(serverEnv(ctx, { [variable]: 'bogus!' })), variable, `${variable}=bogus!`);
      }),
    );
  }
});

config('the refusal does not echo a DATABASE_URL password', async (ctx) => {
  const run = await runServer(serverEnv(ctx, { DATABASE_URL: 'mysql://admin:s3cr3t-pw@db.internal/app' }));
  assertRefused(run, 'DATABASE_URL', 'mysql URL with a password');
  assert.not.ok(run.stderr.includes('s3cr3t-pw'), `the password is printed: ${run.stderr}`);
});

config('UWS_USE_FALLBACK forces the pure-JS uWS fallback: the server refuses to start, naming the native addon', async (ctx) => {
  for (const flag of ['1', 'true']) {
    const run = await runServer(serverEnv(ctx, { UWS_USE_FALLBACK: flag }));
    const output = `${run.stdout}\n${run.stderr}`;
    assert.ok(run.code !== 0 && run.code !== null, `UWS_USE_FALLBACK=${flag}: exit ${run.code} ${run.signal}\n${output.slice(-2000)}`);
    assert.match(output, /native addon/i, `UWS_USE_FALLBACK=${flag}: no mention of the native addon:\n${output.slice(-2000)}`);
    assert.not.ok(run.stdout.includes('"msg":"listening"'), 'it started listening on the fallback');
  }
});

config('good values start the server (control for the cases above); SIGTERM stops it with exit 0', async (ctx) => {
  let health: unknown;
  const run = await runServer(
    serverEnv(ctx, { ACCEPTOR_THREADS: '2', DURABILITY: 'commit', DEDUP_WINDOW: '90s', PORT: '0', DATABASE_POOL_SIZE: '2' }),
    async (port, signal) => {
      const reply = await fetch(`http://127.0.0.1:${port}/health/ready`);
      health = await reply.json();
      signal('SIGTERM');
    },
  );
  assert.equal((health as { status?: string })?.status, 'ready', JSON.stringify(health));
  assert.is(run.code, 0, `exit ${run.code} ${run.signal}\n${run.stderr.slice(-2000)}`);
  assert.ok(run.stdout.includes('"durability":"commit"'), 'the listening line reports the durability');
  assert.ok(run.stdout.includes('"acceptorThreads":2'), 'the listening line reports the threads');
});

config.run();
