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
import type { Sql } from './db/postgres.ts';
import { idFloor } from './events/ids.ts';
import { deleteFinished } from './events/store.ts';
import { Drain } from './pipeline/drain.ts';
import { connect } from './db/postgres.ts';
import { Dispatcher } from './delivery/dispatcher.ts';
import { loadSecretKey } from './delivery/secrets.ts';
import { assertPortFree, freePort } from './http/uws.ts';
import { lockDataDir } from './data-dir-lock.ts';
import { closeLeftOpen, journalDir, pruneDrained } from './log/journal.ts';
import { discardLog, logDistrust, markLogState, rebuildLog } from './log/recovery.ts';
import { createLogger } from './logger.ts';
import { CONTROL, createSharedBuffers, type AcceptorInit, type AcceptorToMain, type MainToAcceptor } from './protocol.ts';

const DEDUP_SWEEP_INTERVAL_MS = 60_000;
const RETENTION_INTERVAL_MS = 60_000;
const UTILIZATION_SAMPLE_MS = 1_000;
const JOURNAL_PRUNE_INTERVAL_MS = 10_000;
const RETENTION_BATCH = 1_000;

/** Runs a background chore now and on an interval; its failures are logged, never thrown. */
function every(intervalMs: number, chore: () => unknown, name: string): NodeJS.Timeout {
  const run = async () => {
    try {
      await chore();
    } catch (error) {
      logger.error({ err: error }, `${name} failed`);
    }
  };
  void run();
  const timer = setInterval(run, intervalMs);
  timer.unref();
  return timer;
}

/** Deletes finished events older than the retention, in small batches so no lock is held long. */
async function deleteExpired(sql: Sql, retentionDays: number): Promise<void> {
  const before = idFloor(Date.now() - retentionDays * 86_400_000);
  let deleted = 0;
  for (;;) {
    const batch = await deleteFinished(sql, before, RETENTION_BATCH);
    deleted += batch;
    if (batch < RETENTION_BATCH) break;
  }
  if (deleted > 0) logger.info({ deleted }, 'retention removed finished events');
}

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
      if (message.kind === 'listening') {
        // A thread that dies later takes its share of the port with it; the others keep serving.
        worker.on('error', (error) => logger.error({ err: error, thread: init.index }, 'acceptor thread failed'));
        resolve(worker);
      } else {
        reject(new Error(message.kind === 'fatal' ? message.message : `unexpected ${message.kind}`));
      }
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
  const unlockDataDir = lockDataDir(config.dataDir);
  if (config.port !== 0) await assertPortFree(config.host, config.port);
  const embedded = config.databaseUrl === null
    ? await startEmbeddedPostgres(path.join(config.dataDir, 'postgres'), config.embeddedPostgresPort, logger)
    : null;
  const databaseUrl = config.databaseUrl ?? embedded!.url;

  const distrust = logDistrust(config.dataDir);
  if (distrust !== null) {
    logger.warn({ reason: distrust }, 'the log may be torn: rebuilding it from the journal and Postgres');
    discardLog(config.dataDir);
  }
  const shared = createSharedBuffers(config.rateLimitSlots);
  const ctx = await createContext(config, databaseUrl, shared, 0);
  const applied = await migrate(ctx.sql);
  if (applied.length > 0) logger.info({ applied }, 'migrations applied');
  if (distrust !== null) await rebuildLog(ctx.log, config.dataDir, config.dedupWindowMs, ctx.sql, logger);
  // Migrations just ran: the database is up until the drain finds otherwise.
  Atomics.store(ctx.control, CONTROL.DATABASE_UP, 1);

  const port = config.port === 0 && config.acceptorThreads > 1 ? await freePort(config.host) : config.port;
  ctx.log.recover();
  const journal = journalDir(config.dataDir);
  closeLeftOpen(journal, (partition) => ctx.log.progress.issuedUpTo(partition));
  // From here until a clean shutdown, a new boot id means the log may be torn.
  markLogState(config.dataDir, false);
  const acceptor = await startAcceptor(ctx, port);
  const threads = await Promise.all(
    Array.from({ length: config.acceptorThreads - 1 }, (_, i) =>
      startThread({ config, databaseUrl, shared, index: i + 1, port: acceptor.port }),
    ),
  );

  // Keys rotated by other instances sharing the database: void them here too. Notifications
  // sent while the listening connection was down are lost, so each re-subscribe voids every
  // cached key. (The listening connection closes with the pool in acceptor.close().)
  let subscribed = false;
  await ctx.sql.listen(KEY_ROTATED_CHANNEL, (payload) => ctx.keys.revokeOrg(Number(payload)), () => {
    if (subscribed) ctx.keys.revokeAll();
    subscribed = true;
  });
  const drain = new Drain(ctx.log, ctx.log.progress, config, databaseUrl, logger, ctx.metrics);
  // Its own pool: the acceptor's closes first at shutdown, deliveries are recorded after that.
  const deliverySql = connect(databaseUrl, { max: 2 });
  const dispatcher = new Dispatcher(deliverySql, config, loadSecretKey(config.webhookSecretKey, config.dataDir), logger, ctx.metrics);
  drain.onDrained = () => dispatcher.nudge();
  drain.start();
  dispatcher.start();
  const chores = [
    every(DEDUP_SWEEP_INTERVAL_MS, () => ctx.log.sweepExpiredDedup(Date.now()), 'dedup sweep'),
    every(RETENTION_INTERVAL_MS, () => deleteExpired(ctx.sql, config.retentionDays), 'retention'),
    every(UTILIZATION_SAMPLE_MS, () => drain.sampleUtilization(), 'utilization sample'),
    every(JOURNAL_PRUNE_INTERVAL_MS, () => pruneDrained(journal, (partition) => ctx.log.progress.drainedUpTo(partition)), 'journal prune'),
  ];

  Atomics.store(ctx.control, CONTROL.READY, 1);
  logger.info({ port: acceptor.port, acceptorThreads: config.acceptorThreads, durability: config.durability }, 'listening');

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    Atomics.store(ctx.control, CONTROL.READY, 0);
    chores.forEach(clearInterval);
    await Promise.all(threads.map(closeThread));
    await acceptor.close();
    const drained = await drain.stop(config.shutdownDrainMs);
    if (!drained) logger.warn('log not fully drained at shutdown; the rest drains at the next start');
    await dispatcher.stop(config.shutdownDrainMs);
    await deliverySql.end({ timeout: 5 });
    await ctx.log.close();
    markLogState(config.dataDir, true);
    await embedded?.stop();
    unlockDataDir();
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
