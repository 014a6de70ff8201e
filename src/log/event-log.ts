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
//   meta          string -> any                     watermarks and other small state.
import { open, type Database, type RootDatabase } from 'lmdb';
import path from 'node:path';
import type { Durability } from '../config.ts';

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
  record: LogRecord;
  /** Present when the event carries a dedup_id. */
  dedupKey: Buffer | null;
}

export type AppendResult = { ok: true } | { ok: false; duplicateOf: string };

type DedupValue = [eventId: string, expiresAt: number];

const MAX_SEQ = Number.MAX_SAFE_INTEGER;
/** A conditional append can lose a race to the sweeper or to another thread; re-read and retry. */
const DEDUP_ATTEMPTS = 4;

function expiryKey(expiresAt: number, dedupKey: Buffer): Buffer {
  const key = Buffer.allocUnsafe(8 + dedupKey.length);
  key.writeBigUInt64BE(BigInt(expiresAt), 0);
  key.set(dedupKey, 8);
  return key;
}

export class EventLog {
  private readonly root: RootDatabase;
  private readonly log: Database<LogRecord, LogKey>;
  private readonly ids: Database<LogKey, string>;
  private readonly dedup: Database<DedupValue, Buffer>;
  private readonly dedupExpiry: Database<number, Buffer>;
  private nextSeq = 1;

  private constructor(
    dataDir: string,
    private readonly partition: number,
    private readonly durability: Durability,
    private readonly dedupWindowMs: number,
  ) {
    // One env per process: lmdb-js shares it between the threads that open the same path.
    // `commit` durability skips LMDB's syncs: a commit in the OS page cache survives kill -9 of
    // this process (not power loss) and costs ~0.1 ms instead of two fdatasyncs.
    this.root = open({ path: path.join(dataDir, 'log'), maxDbs: 16, overlappingSync: true, noSync: durability === 'commit' });
    this.log = this.root.openDB({ name: 'log' });
    this.ids = this.root.openDB({ name: 'ids' });
    this.dedup = this.root.openDB({ name: 'dedup', useVersions: true, keyEncoding: 'binary' });
    this.dedupExpiry = this.root.openDB({ name: 'dedup-expiry', keyEncoding: 'binary' });
    for (const key of this.log.getKeys({ start: [partition, MAX_SEQ], end: [partition, 0], reverse: true, limit: 1 })) {
      this.nextSeq = key[1] + 1;
    }
  }

  /** Opens the log for one writer partition (an acceptor thread's index). */
  static open(options: { dataDir: string; partition: number; durability: Durability; dedupWindowMs: number }): EventLog {
    return new EventLog(options.dataDir, options.partition, options.durability, options.dedupWindowMs);
  }

  /**
   * Appends events in one LMDB transaction (all calls in the same event turn share it) and resolves
   * once it is committed and, with DURABILITY=fsync, flushed. Dedup is checked inside the write
   * transaction, so racing appends on any thread give exactly one winner.
   */
  async append(requests: readonly AppendRequest[]): Promise<AppendResult[]> {
    const results = await Promise.all(requests.map((request) => this.appendOne(request)));
    if (this.durability === 'fsync') await this.root.flushed;
    return results;
  }

  private async appendOne({ record, dedupKey }: AppendRequest): Promise<AppendResult> {
    if (dedupKey === null) {
      await this.write(record);
      return { ok: true };
    }
    for (let attempt = 0; attempt < DEDUP_ATTEMPTS; attempt++) {
      const receivedAt = record[5];
      const existing = this.dedup.getEntry(dedupKey);
      if (existing !== undefined && existing.value[1] > receivedAt) return { ok: false, duplicateOf: existing.value[0] };
      const expiresAt = receivedAt + this.dedupWindowMs;
      const writeAll = () => {
        this.dedup.put(dedupKey, [record[0], expiresAt], receivedAt);
        this.dedupExpiry.put(expiryKey(expiresAt, dedupKey), receivedAt);
        void this.write(record);
      };
      const won = existing === undefined
        ? await this.dedup.ifNoExists(dedupKey, writeAll)
        : await this.dedup.ifVersion(dedupKey, existing.version as number, writeAll);
      if (won) return { ok: true };
    }
    throw new Error('dedup append kept losing races');
  }

  /** Both puts join the current transaction; the returned promise resolves at its commit. */
  private write(record: LogRecord): Promise<boolean> {
    const key: LogKey = [this.partition, this.nextSeq++];
    this.log.put(key, record);
    return this.ids.put(record[0], key);
  }

  get(id: string): LogRecord | undefined {
    const key = this.ids.get(id);
    return key === undefined ? undefined : this.log.get(key);
  }

  /** Entries of one partition with seq > afterSeq, in order. */
  *entriesAfter(partition: number, afterSeq: number, limit: number): Generator<{ seq: number; record: LogRecord }> {
    for (const { key, value } of this.log.getRange({ start: [partition, afterSeq + 1], end: [partition, MAX_SEQ], limit })) {
      yield { seq: key[1], record: value };
    }
  }

  /** Events in the log. */
  backlog(): number {
    return (this.log.getStats() as { entryCount: number }).entryCount;
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

  /** Appends committed but not yet flushed are flushed by close(). */
  async close(): Promise<void> {
    await this.root.flushed;
    await this.root.close();
  }
}
