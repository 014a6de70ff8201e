// The durable event log: the only importer of lmdb.
//
// Layout (one LMDB environment, several named databases):
//   log           [partition, seq] -> LogRecord     one partition per acceptor thread, so each
//                                                    thread numbers its own appends without locks
//                                                    and a partition commits in sequence order.
//   ids           eventId -> [partition, seq]       GET /api/events/:id before the drain.
//   dedup         dedupKey -> [eventId, expiresAt]  versioned: the version is the accept time, so an
//                                                    expired entry can be replaced conditionally.
//   dedup-expiry  expiresAt(8 bytes BE) ++ dedupKey -> version   the sweeper finds expired entries in order.
//   meta          ['drained', partition] -> seq     the drain watermark: everything up to it is in Postgres.
//
// Entries up to the watermark are compacted away (log and ids) in the transaction that moves it.
//
// LMDB runs with noSync in both modes: its commits reach the OS page cache, which survives
// kill -9. DURABILITY=fsync adds the journal (journal.ts), written and flushed once per group
// before the 202; after a power loss LMDB is rebuilt from it and Postgres (recovery.ts).
import { open, type Database, type RootDatabase } from 'lmdb';
import path from 'node:path';
import type { Durability } from '../config.ts';
import { newEventId } from '../events/ids.ts';
import { MAX_PARTITIONS } from '../protocol.ts';
import { journalDir, JournalWriter, type JournalEntry } from './journal.ts';
import type { LogProgress } from './progress.ts';

/** What the log stores per event: compact positional msgpack. The payload stays JSON text. */
export type LogRecord = [
  id: string,
  organizationId: string,
  type: string,
  payloadJson: string,
  dedupId: string | null,
  receivedAt: number,
];

export type LogKey = [partition: number, seq: number];

export interface AppendRequest {
  organizationId: string;
  type: string;
  payloadJson: string;
  dedupId: string | null;
  /** Present when the event carries a dedup_id. */
  dedupKey: Buffer | null;
}

export type AppendResult = { ok: true; id: string; receivedAt: number } | { ok: false; duplicateOf: string };

type DedupValue = [eventId: string, expiresAt: number];
type MetaKey = ['drained', number];

const MAX_SEQ = Number.MAX_SAFE_INTEGER;

interface PendingAppend {
  requests: readonly AppendRequest[];
  resolve: (results: AppendResult[]) => void;
  reject: (error: unknown) => void;
}

function expiryKey(expiresAt: number, dedupKey: Buffer): Buffer {
  const key = Buffer.allocUnsafe(8 + dedupKey.length);
  key.writeBigUInt64BE(BigInt(expiresAt), 0);
  key.set(dedupKey, 8);
  return key;
}

export interface LogOptions {
  dataDir: string;
  /** The acceptor thread's index: the partition it appends to. */
  partition: number;
  durability: Durability;
  dedupWindowMs: number;
  progress: LogProgress;
}

export class EventLog {
  private readonly root: RootDatabase;
  private readonly log: Database<LogRecord, LogKey>;
  private readonly ids: Database<LogKey, string>;
  private readonly dedup: Database<DedupValue, Buffer>;
  private readonly dedupExpiry: Database<number, Buffer>;
  private readonly meta: Database<number, MetaKey>;
  private readonly partition: number;
  private readonly dedupWindowMs: number;
  readonly progress: LogProgress;
  /** Appends of this event-loop turn, committed together by commitPending. */
  private readonly pending: PendingAppend[] = [];
  /** DURABILITY=fsync only. */
  private readonly journal: JournalWriter | null;

  constructor(options: LogOptions) {
    ({ partition: this.partition, dedupWindowMs: this.dedupWindowMs, progress: this.progress } = options);
    // One env per process: lmdb-js shares it between the threads that open the same path.
    // noSync: a commit costs ~0.1 ms instead of two fdatasyncs (lmdb-js refuses it with overlappingSync).
    this.root = open({ path: path.join(options.dataDir, 'log'), maxDbs: 16, overlappingSync: false, noSync: true });
    this.log = this.root.openDB({ name: 'log' });
    this.ids = this.root.openDB({ name: 'ids' });
    this.dedup = this.root.openDB({ name: 'dedup', useVersions: true, keyEncoding: 'binary' });
    this.dedupExpiry = this.root.openDB({ name: 'dedup-expiry', keyEncoding: 'binary' });
    this.meta = this.root.openDB({ name: 'meta' });
    this.journal = options.durability === 'fsync' ? new JournalWriter(journalDir(options.dataDir), this.partition) : null;
  }

  /**
   * Main thread, before any acceptor starts: publishes each partition's last seq and watermark,
   * and the backlog, to shared memory. (Watermark and compaction commit together, so there is
   * nothing half-done to repair.)
   */
  recover(): void {
    let backlog = 0;
    for (let partition = 0; partition < MAX_PARTITIONS; partition++) {
      const drained = this.meta.get(['drained', partition]) ?? 0;
      let last = 0;
      for (const key of this.log.getKeys({ start: [partition, MAX_SEQ], end: [partition, 0], reverse: true, limit: 1 })) last = key[1];
      backlog += this.log.getKeysCount({ start: [partition, drained + 1], end: [partition, MAX_SEQ] });
      this.progress.init(partition, last, drained);
    }
    this.progress.setBacklog(backlog);
  }

  /**
   * Appends events and resolves once they are committed and, with DURABILITY=fsync, flushed.
   * Every append made in one event-loop turn (on this thread) joins one synchronous write
   * transaction at the end of the turn: no round trip to lmdb-js's write thread, one commit
   * and one flush for the group. Dedup is checked inside that transaction, which holds LMDB's
   * process-wide write lock, so racing appends on any thread give exactly one winner.
   */
  append(requests: readonly AppendRequest[]): Promise<AppendResult[]> {
    return new Promise((resolve, reject) => {
      this.pending.push({ requests, resolve, reject });
      if (this.pending.length === 1) setImmediate(this.commitPending);
    });
  }

  private readonly commitPending = (): void => {
    const group = this.pending.splice(0);
    const appended: JournalEntry[] = [];
    let results: AppendResult[][];
    try {
      results = this.root.transactionSync(() => group.map(({ requests }) => requests.map((request) => this.appendInTransaction(request, appended))));
    } catch (error) {
      for (const [seq] of appended) this.progress.resolve(this.partition, seq, false);
      for (const { reject } of group) reject(error);
      return;
    }
    let journalError: unknown = null;
    try {
      // Synchronous on purpose: a flush takes ~0.15 ms, less than the thread-pool round trip of an async one.
      if (this.journal !== null && appended.length > 0) this.journal.write(appended);
    } catch (error) {
      journalError = error;
    }
    // Resolved only now: the drain must never look for a seq whose transaction is not committed.
    // (Committed but not journaled, after a failed write: the drain still stores it; the 202 is not given.)
    for (const [seq] of appended) this.progress.resolve(this.partition, seq, true);
    group.forEach(({ resolve, reject }, i) => (journalError === null ? resolve(results[i]!) : reject(journalError)));
  };

  /** Inside the write transaction: reads see every commit and this transaction's own writes. */
  private appendInTransaction(request: AppendRequest, appended: JournalEntry[]): AppendResult {
    const { dedupKey } = request;
    const existing = dedupKey === null ? undefined : this.dedup.getEntry(dedupKey);
    if (existing !== undefined && existing.value[1] > Date.now()) return { ok: false, duplicateOf: existing.value[0] };
    const seq = this.progress.issue(this.partition);
    const record = this.newRecord(request);
    appended.push([seq, record, dedupKey]);
    const [id, , , , , receivedAt] = record;
    if (dedupKey !== null) this.putDedup(dedupKey, id, receivedAt);
    this.putEntry(this.partition, seq, record);
    return { ok: true, id, receivedAt };
  }

  /** In a write transaction. The version is the accept time: the sweeper removes an entry only if it was not replaced since. */
  private putDedup(dedupKey: Buffer, id: string, receivedAt: number): void {
    const expiresAt = receivedAt + this.dedupWindowMs;
    this.dedup.putSync(dedupKey, [id, expiresAt], receivedAt);
    this.dedupExpiry.putSync(expiryKey(expiresAt, dedupKey), receivedAt);
  }

  /** In a write transaction. */
  private putEntry(partition: number, seq: number, record: LogRecord): void {
    const key: LogKey = [partition, seq];
    this.log.putSync(key, record);
    this.ids.putSync(record[0], key);
  }

  /**
   * Rebuild after a power loss, into a fresh log: journaled entries of one partition, undrained
   * (the drain re-inserts those already in Postgres, which changes nothing). An entry met twice
   * is put twice, to the same effect.
   */
  restoreEntries(partition: number, entries: readonly JournalEntry[]): void {
    this.root.transactionSync(() => {
      for (const [seq, record, dedupKey] of entries) {
        this.putEntry(partition, seq, record);
        if (dedupKey !== null) this.restoreDedupEntry(dedupKey, record[0], record[5]);
      }
    });
  }

  /** Rebuild after a power loss: the partition's watermark, just below its first restored entry. */
  restoreWatermark(partition: number, drainedSeq: number): void {
    this.root.transactionSync(() => this.meta.putSync(['drained', partition], drainedSeq));
  }

  /** Rebuild after a power loss: dedup entries of events in Postgres. */
  restoreDedup(entries: ReadonlyArray<readonly [dedupKey: Buffer, id: string, receivedAt: number]>): void {
    this.root.transactionSync(() => {
      for (const [dedupKey, id, receivedAt] of entries) this.restoreDedupEntry(dedupKey, id, receivedAt);
    });
  }

  /** The latest accept of a dedup id wins, whatever order the sources come in; expired ones are left out. */
  private restoreDedupEntry(dedupKey: Buffer, id: string, receivedAt: number): void {
    if (receivedAt + this.dedupWindowMs <= Date.now()) return;
    const existing = this.dedup.getEntry(dedupKey);
    if (existing !== undefined && (existing.version ?? 0) >= receivedAt) return;
    this.putDedup(dedupKey, id, receivedAt);
  }

  /**
   * The id is made after the seq is issued: an id's millisecond is then never earlier than its
   * seq's issue, which lets a read-your-writes snapshot bound ids by time (see pipeline/visibility).
   */
  private newRecord(request: AppendRequest): LogRecord {
    return [newEventId(), request.organizationId, request.type, request.payloadJson, request.dedupId, Date.now()];
  }

  /**
   * lmdb-js renews a thread's read snapshot only now and then; commits of other threads (and
   * of the drain) must be seen at once by these reads, so they renew it first.
   */
  private freshSnapshot(): void {
    this.root.resetReadTxn();
  }

  /** The event if it is still in the log (not yet drained and compacted). */
  get(id: string): LogRecord | undefined {
    this.freshSnapshot();
    const key = this.ids.get(id);
    return key === undefined ? undefined : this.log.get(key);
  }

  /** Entries of one partition with afterSeq < seq ≤ upToSeq, in order, at most `limit`. */
  entries(partition: number, afterSeq: number, upToSeq: number, limit: number): Array<{ seq: number; record: LogRecord }> {
    const found: Array<{ seq: number; record: LogRecord }> = [];
    // Without a fresh snapshot, entries another thread committed would look like gaps.
    this.freshSnapshot();
    for (const { key, value } of this.log.getRange({ start: [partition, afterSeq + 1], end: [partition, upToSeq + 1], limit })) {
      found.push({ seq: key[1], record: value });
    }
    return found;
  }

  /** Moves the watermark and compacts the drained entries, in one transaction. */
  async markDrained(partition: number, upToSeq: number, drained: ReadonlyArray<{ seq: number; record: LogRecord }>): Promise<void> {
    void this.meta.put(['drained', partition], upToSeq);
    for (const { seq, record } of drained) {
      void this.log.remove([partition, seq]);
      void this.ids.remove(record[0]);
    }
    await this.root.committed;
  }

  /** Receive time of the oldest event not yet in Postgres, or null when the log is drained. */
  oldestUndrained(): number | null {
    let oldest: number | null = null;
    this.freshSnapshot();
    for (let partition = 0; partition < MAX_PARTITIONS; partition++) {
      const after = this.progress.drainedUpTo(partition);
      for (const { value } of this.log.getRange({ start: [partition, after + 1], end: [partition, MAX_SEQ], limit: 1 })) {
        if (oldest === null || value[5] < oldest) oldest = value[5];
      }
    }
    return oldest;
  }

  /** Removes dedup entries whose window has passed; returns how many it removed. */
  async sweepExpiredDedup(now: number, limit = 10_000): Promise<number> {
    let removed = 0;
    for (const { key, value: version } of this.dedupExpiry.getRange({ end: expiryKey(now, Buffer.alloc(0)), limit })) {
      const dedupKey = key.subarray(8);
      // Conditional: an entry replaced since (new accept, new version) must stay.
      void this.dedup.ifVersion(dedupKey, version, () => this.dedup.remove(dedupKey));
      void this.dedupExpiry.remove(key);
      removed++;
    }
    await this.root.committed;
    return removed;
  }

  /** Flushes LMDB (noSync leaves that to the OS) and closes the journal's segment. */
  async close(): Promise<void> {
    this.journal?.close();
    await this.root.committed;
    // sync() is in lmdb-js but not in its typings.
    const env = this.root as unknown as { sync(done: (error?: Error) => void): void };
    await new Promise<void>((resolve, reject) => env.sync((error) => (error ? reject(error) : resolve())));
    await this.root.close();
  }
}
