// Test harness: a fresh database and DATA_DIR per test file, the real server as a child
// process on port 0, HTTP through fetch, and polling with a deadline instead of sleeps.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'uvu';
import { connect, type Sql } from '../../src/db/postgres.ts';
import { assertMatchesContract } from './openapi.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function baseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is unset: run the tests with `npm test` (it starts an embedded Postgres)');
  return url;
}

export interface TestDatabase {
  url: string;
  sql: Sql;
  drop(): Promise<void>;
}

/** A new database with a random name, dropped by drop(). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `triggers_test_${randomBytes(6).toString('hex')}`;
  const admin = connect(baseUrl(), { max: 1 });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = new URL(baseUrl());
  url.pathname = `/${name}`;
  const sql = connect(url.href, { max: 2 });
  return {
    url: url.href,
    sql,
    async drop() {
      await sql.end();
      const admin = connect(baseUrl(), { max: 1 });
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/** Polls `probe` until it returns a truthy value; throws with `what` after the deadline. */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 10_000, intervalMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface Reply<T = any> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

export interface RequestOptions {
  key?: string;
  body?: unknown;
  /** Sent as is (no JSON encoding, no Content-Type unless given). */
  raw?: string | Buffer;
  headers?: Record<string, string>;
}

export class TestServer {
  readonly logs: string[] = [];
  port = 0;
  private child: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);

  private constructor(
    readonly dataDir: string,
    private readonly env: Record<string, string>,
  ) {}

  /** Starts the real server (node --import tsx src/main.ts) with its own DATA_DIR (or the one given). */
  static async start(databaseUrl: string, env: Record<string, string> = {}, dataDir = TestServer.newDataDir()): Promise<TestServer> {
    const server = new TestServer(dataDir, { DATABASE_URL: databaseUrl, ...env });
    await server.boot();
    return server;
  }

  private static newDataDir(): string {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'triggers-test-data-'));
    // mkdtemp makes it 0700; an embedded Postgres (run as user `postgres` when we are root) must get in.
    chmodSync(dataDir, 0o755);
    return dataDir;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** (Re)starts the process on the same DATA_DIR and database. */
  async boot(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: ROOT,
      env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', DATA_DIR: this.dataDir, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    const port = new Promise<number>((resolve, reject) => {
      let buffered = '';
      const onLine = (line: string) => {
        this.logs.push(line);
        if (line.includes('"msg":"listening"')) resolve(JSON.parse(line).port);
      };
      child.stdout!.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        let newline: number;
        while ((newline = buffered.indexOf('\n')) !== -1) {
          onLine(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
        }
      });
      child.stderr!.on('data', (chunk: Buffer) => this.logs.push(chunk.toString()));
      child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening:\n${this.logs.slice(-20).join('\n')}`)));
    });
    this.port = await port;
  }

  /** SIGTERM and wait; returns the exit code. */
  async stop(): Promise<number | null> {
    this.child?.kill('SIGTERM');
    return this.exited;
  }

  /** kill -9: no cleanup of any kind runs in the server. */
  async crash(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  async close(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  async request<T = any>(method: string, route: string, options: RequestOptions = {}): Promise<Reply<T>> {
    const headers: Record<string, string> = { ...options.headers };
    if (options.key !== undefined) headers['x-api-key'] = options.key;
    let body: string | Buffer | undefined = options.raw;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    const response = await fetch(this.url + route, { method, headers, body });
    const text = await response.text();
    let parsed: unknown = undefined;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: callers that expect JSON will fail on `body`
    }
    assertMatchesContract({ method, url: route, status: response.status, header: (name) => response.headers.get(name), text });
    return { status: response.status, headers: response.headers, body: parsed as T, text };
  }

  /** Creates an organization and returns its key. */
  async createKey(tier = 'free', name = 'test org'): Promise<{ key: string; organizationId: string }> {
    const reply = await this.request('POST', '/api/keys/generate', {
      body: { organization_name: name, tier },
      headers: this.env.ADMIN_TOKEN ? { authorization: `Bearer ${this.env.ADMIN_TOKEN}` } : {},
    });
    if (reply.status !== 201) throw new Error(`key generation failed: ${reply.status} ${reply.text}`);
    return { key: reply.body.api_key, organizationId: reply.body.organization_id };
  }
}

/**
 * The hooks of a suite with a database of its own. Before: ctx.db is a new database, then `setup`
 * runs (it starts the suite's servers on ctx.db.url, makes keys, ...). A failing setup is logged
 * too, since uvu reports a failing hook only as failed tests. After: every TestServer in ctx is
 * closed (also the ones started before a setup failed) and the database is dropped.
 */
export function useTestDatabase<Ctx extends { db: TestDatabase }>(test: Test<Ctx>, setup: (ctx: Ctx) => Promise<void> = async () => {}): void {
  test.before(async (ctx) => {
    try {
      ctx.db = await createTestDatabase();
      await setup(ctx);
    } catch (error) {
      console.error(`${ctx.__suite__}: setup failed:`, error);
      throw error;
    }
  });
  test.after(async (ctx) => {
    const servers = Object.values(ctx as Record<string, unknown>).filter((value): value is TestServer => value instanceof TestServer);
    await Promise.all(servers.map((server) => server.close()));
    await ctx.db?.drop();
  });
}

/** Asserts the contract's error shape and returns the body. */
export function expectError(reply: Reply, status: number, code: string): Record<string, unknown> {
  if (reply.status !== status || reply.body?.code !== code || typeof reply.body?.error !== 'string') {
    throw new Error(`expected ${status} ${code}, got ${reply.status} ${reply.text}`);
  }
  return reply.body;
}
