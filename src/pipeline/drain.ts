// The drain, on the main thread: reads each log partition from its watermark, ships batches to
// the Piscina persist pool, and moves the watermark (compacting the log) only after Postgres
// committed. Batches of one partition may be written in parallel; the watermark advances over
// completed batches in order. A failing batch is retried with capped backoff, so a Postgres
// outage only grows the backlog.
import { pack } from 'msgpackr';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { EventLog, LogRecord } from '../log/event-log.ts';
import type { LogProgress } from '../log/progress.ts';
import type { Metrics } from '../metrics.ts';
import { CONTROL, MAX_PARTITIONS, type PersistInit, type PersistTask } from '../protocol.ts';
import { createPool, type WorkerPool } from '../worker-pool.ts';

const BACKOFF_MIN_MS = 100;
/** A batch write that takes longer is abandoned (its worker is restarted) and retried. */
const BATCH_TIMEOUT_MS = 30_000;
const BACKOFF_MAX_MS = 5_000;
/** How long the idle loop sleeps between checks when no append wakes it. */
const IDLE_WAIT_MS = 100;

interface Batch {
  partition: number;
  upToSeq: number;
  entries: Array<{ seq: number; record: LogRecord }>;
  /** Written to Postgres (or nothing to write). */
  done: boolean;
}

export class Drain {
  private readonly pool: WorkerPool<PersistTask, number>;
  /** Per partition: batches dispatched and not yet folded into the watermark, in seq order. */
  private readonly pending: Batch[][] = Array.from({ length: MAX_PARTITIONS }, () => []);
  /** Per partition: the highest seq handed to a batch. */
  private readonly dispatched: number[] = [];
  private readonly writes = new Set<Promise<void>>();
  /** Per partition: a completion is folding done batches into the watermark right now. */
  private readonly folding: boolean[] = new Array(MAX_PARTITIONS).fill(false);
  private backoffMs = 0;
  private stopping = false;
  private wake: () => void = () => {};
  private loop: Promise<void> = Promise.resolve();
  /** Called after the watermark moved (new rows in Postgres): the webhook dispatcher listens. */
  onDrained: () => void = () => {};

  constructor(
    private readonly log: EventLog,
    private readonly progress: LogProgress,
    private readonly config: Config,
    databaseUrl: string,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    for (let p = 0; p < MAX_PARTITIONS; p++) this.dispatched.push(progress.drainedUpTo(p));
    this.pool = createPool<PersistTask, number>({
      worker: 'persist', threads: config.persistWorkers, workerData: { databaseUrl } satisfies PersistInit, logger,
    });
  }

  start(): void {
    this.loop = this.run();
  }

  /** Publishes the pool's utilization for /metrics (served by any thread). */
  sampleUtilization(): void {
    Atomics.store(this.progress.control, CONTROL.PERSIST_UTILIZATION_PERMILLE, Math.round(this.pool.utilization * 1000));
  }

  private async run(): Promise<void> {
    const maxInFlight = this.config.persistWorkers * 2;
    while (!this.stopping) {
      let dispatched = false;
      for (let p = 0; p < MAX_PARTITIONS && this.inFlight < maxInFlight; p++) {
        const upTo = this.progress.resolvedUpTo(p);
        if (upTo <= this.dispatched[p]!) continue;
        const entries = this.log.entries(p, this.dispatched[p]!, upTo, this.config.persistBatchSize);
        // A full batch ends at its last entry; a partial one covers the gaps up to `upTo` as well.
        const batchUpTo = entries.length === this.config.persistBatchSize ? entries[entries.length - 1]!.seq : upTo;
        this.dispatch({ partition: p, upToSeq: batchUpTo, entries, done: false });
        this.dispatched[p] = batchUpTo;
        dispatched = true;
      }
      if (dispatched) continue;
      const woken = new Promise<void>((resolve) => (this.wake = resolve));
      await Promise.race([woken, this.progress.nextAppend(IDLE_WAIT_MS)]);
      if (this.config.persistLingerMs > 0 && this.inFlight < maxInFlight) await this.progress.linger(this.config.persistLingerMs);
    }
  }

  private dispatch(batch: Batch): void {
    this.pending[batch.partition]!.push(batch);
    const write = this.write(batch).finally(() => {
      this.writes.delete(write);
      this.wake();
    });
    this.writes.add(write);
  }

  private get inFlight(): number {
    return this.writes.size;
  }

  /** Writes a batch until it succeeds (or shutdown), then folds completed batches into the watermark. */
  private async write(batch: Batch): Promise<void> {
    while (batch.entries.length > 0 && !this.stopping) {
      try {
        // A fresh buffer per task: it is transferred (detached here), so it cannot be msgpackr's pool.
        const records = new Uint8Array(pack(batch.entries.map((entry) => entry.record)));
        await this.pool.run({ records }, { transferList: [records.buffer], signal: AbortSignal.timeout(BATCH_TIMEOUT_MS) });
        Atomics.store(this.progress.control, CONTROL.DATABASE_UP, 1);
        this.backoffMs = 0;
        batch.done = true;
      } catch (error) {
        Atomics.store(this.progress.control, CONTROL.DATABASE_UP, 0);
        this.backoffMs = Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, this.backoffMs * 2));
        this.logger.warn({ err: error, partition: batch.partition, events: batch.entries.length, retryInMs: this.backoffMs }, 'drain batch failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, this.backoffMs));
      }
      if (batch.done) break;
    }
    if (batch.entries.length === 0) batch.done = true;
    // Not written by shutdown: it stays in the log and drains at the next start.
    if (batch.done) await this.fold(batch.partition);
  }

  /** Moves the partition's watermark over its completed batches, in seq order, one folder at a time. */
  private async fold(partition: number): Promise<void> {
    if (this.folding[partition]) return;
    this.folding[partition] = true;
    const queue = this.pending[partition]!;
    try {
      while (queue.length > 0 && queue[0]!.done) {
        const head = queue.shift()!;
        await this.log.markDrained(partition, head.upToSeq, head.entries);
        this.progress.markDrained(partition, head.upToSeq, head.entries.length);
        this.metrics.drained(head.entries.length);
      }
      this.onDrained();
    } finally {
      this.folding[partition] = false;
    }
  }

  /** True when everything resolved in the log so far is in Postgres. */
  caughtUp(): boolean {
    for (let p = 0; p < MAX_PARTITIONS; p++) {
      if (this.progress.drainedUpTo(p) < this.progress.resolvedUpTo(p)) return false;
    }
    return true;
  }

  /** Drains what is in the log (up to `timeoutMs`), then stops the loop and the pool. */
  async stop(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const release = this.progress.waitForDrain();
    while (!this.caughtUp() && Date.now() < deadline) await this.progress.nextDrain(Math.max(1, deadline - Date.now()));
    const caughtUp = this.caughtUp();
    this.stopping = true;
    this.wake();
    // Released only once the loop ended: else it could start a PERSIST_LINGER wait on its way out.
    await this.loop;
    release();
    await Promise.race([Promise.allSettled(this.writes), new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - Date.now())))]);
    await this.pool.destroy();
    return caughtUp;
  }
}
