// The only importer of piscina: the persist and delivery pools, each a fixed number of threads
// running a TypeScript worker from workers/ through the tsx bootstrap.
import { Piscina } from 'piscina';
import type { Logger } from 'pino';

export type WorkerPool<Task, Result> = Piscina<Task, Result>;

export interface PoolOptions {
  /** The worker module, e.g. 'persist' for workers/persist.ts. */
  worker: string;
  threads: number;
  workerData: unknown;
  concurrentTasksPerWorker?: number;
  logger: Logger;
}

export function createPool<Task, Result>(options: PoolOptions): WorkerPool<Task, Result> {
  const pool = new Piscina<Task, Result>({
    filename: new URL('./thread-bootstrap.mjs', import.meta.url).href,
    argv: [new URL(`../workers/${options.worker}.ts`, import.meta.url).href],
    workerData: options.workerData,
    minThreads: options.threads,
    maxThreads: options.threads,
    ...(options.concurrentTasksPerWorker === undefined ? {} : { concurrentTasksPerWorker: options.concurrentTasksPerWorker }),
    idleTimeout: Number.POSITIVE_INFINITY,
    // The tasks do I/O (Postgres, HTTP): Atomics-based waiting would block the worker's event loop.
    atomics: 'disabled',
  });
  // An exception in a worker between tasks (say, an idle connection failing): Piscina replaces the
  // worker. Unheard, the pool's 'error' event would end the process.
  pool.on('error', (error: unknown) => options.logger.error({ err: error, worker: options.worker }, 'worker failed between tasks; replaced'));
  return pool;
}
