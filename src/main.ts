// Server entry: config, Postgres (given or embedded), migrations, shared memory, acceptor
// threads, background chores, and an orderly shutdown on SIGTERM/SIGINT.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { createContext, startAcceptor } from './acceptor.ts';
import { KEY_ROTATED_CHANNEL } from './auth/organizations.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { startEmbeddedPostgres } from './db/embedded.ts';
import { migrate } from './db/migrations.ts';
import { freePort } from './http/uws.ts';
import { createLogger } from './logger.ts';
import { CONTROL, createSharedBuffers, type AcceptorInit, type AcceptorToMain, type MainToAcceptor } from './protocol.ts';

const DEDUP_SWEEP_INTERVAL_MS = 60_000;

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`invalid configuration: ${error.message}`);
  process.exit(1);
}

const logger = createLogger(config.logLevel, { thread: 'main' });

function startThread(init: AcceptorInit): Promise<Worker> {
  const worker = new Worker(new URL('./thread-bootstrap.mjs', import.meta.url), {
    argv: [new URL('./acceptor-thread.ts', import.meta.url).href],
    workerData: init,
  });
  return new Promise((resolve, reject) => {
    worker.once('error', reject);
    worker.once('message', (message: AcceptorToMain) => {
      if (message.kind === 'listening') resolve(worker);
      else reject(new Error(message.kind === 'fatal' ? message.message : `unexpected ${message.kind}`));
    });
  });
}

function closeThread(worker: Worker): Promise<void> {
  return new Promise((resolve) => {
    worker.on('message', (message: AcceptorToMain) => message.kind === 'closed' && resolve());
    worker.once('exit', () => resolve());
    worker.postMessage({ kind: 'close' } satisfies MainToAcceptor);
  });
}

async function main(config: Config): Promise<void> {
  if (config.adminToken === null) logger.warn('ADMIN_TOKEN is unset: POST /api/keys/generate is open to anyone');
  mkdirSync(config.dataDir, { recursive: true });
  const embedded = config.databaseUrl === null
    ? await startEmbeddedPostgres(path.join(config.dataDir, 'postgres'), config.embeddedPostgresPort, logger)
    : null;
  const databaseUrl = config.databaseUrl ?? embedded!.url;

  const shared = createSharedBuffers(config.rateLimitSlots);
  const ctx = await createContext(config, databaseUrl, shared, 0);
  const applied = await migrate(ctx.sql);
  if (applied.length > 0) logger.info({ applied }, 'migrations applied');

  const port = config.port === 0 && config.acceptorThreads > 1 ? await freePort(config.host) : config.port;
  const acceptor = await startAcceptor(ctx, port);
  const threads = await Promise.all(
    Array.from({ length: config.acceptorThreads - 1 }, (_, i) =>
      startThread({ config, databaseUrl, shared, index: i + 1, port: acceptor.port }),
    ),
  );

  // Keys rotated by other instances sharing the database: void them here too.
  // (The listening connection closes with the pool in acceptor.close().)
  await ctx.sql.listen(KEY_ROTATED_CHANNEL, (payload) => {
    ctx.keys.revoke(ctx.limiter.slotFor(Number(payload)));
  });
  const sweeper = setInterval(() => {
    ctx.log.sweepExpiredDedup(Date.now()).catch((error) => logger.error({ err: error }, 'dedup sweep failed'));
  }, DEDUP_SWEEP_INTERVAL_MS);
  sweeper.unref();

  Atomics.store(ctx.control, CONTROL.READY, 1);
  logger.info({ port: acceptor.port, acceptorThreads: config.acceptorThreads, durability: config.durability }, 'listening');

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    Atomics.store(ctx.control, CONTROL.READY, 0);
    clearInterval(sweeper);
    await Promise.all(threads.map(closeThread));
    await acceptor.close();
    await ctx.log.close();
    await embedded?.stop();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main(config).catch((error) => {
  logger.fatal({ err: error }, 'failed to start');
  process.exit(1);
});
