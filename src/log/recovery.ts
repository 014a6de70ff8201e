// Whether the LMDB log can be trusted at start, and its rebuild when it cannot.
//
// LMDB runs with noSync, so its file is only as good as the OS page cache that held it: intact
// after kill -9 of this process, possibly torn after a power loss or an OS crash. The state file
// (DATA_DIR/log-state.json) records the kernel's boot id while the log is open and `clean` once
// a shutdown synced it. A start that finds it open under another boot id discards LMDB and
// rebuilds it: the journal gives every event that may not be in Postgres yet, Postgres gives
// the dedup entries of the drained ones. (DURABILITY=commit keeps no journal: its undrained
// events are lost with the page cache, as documented.)
import { closeSync, fdatasyncSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Sql } from '../db/postgres.ts';
import { dedupKey } from '../digest.ts';
import { forEachDedupRow } from '../events/store.ts';
import type { EventLog } from './event-log.ts';
import { closeSegmentFile, journalDir, listSegments, readSegment, syncDirectory } from './journal.ts';

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
const DEDUP_ROWS_PER_BATCH = 5_000;

interface LogState {
  bootId: string | null;
  clean: boolean;
}

const stateFile = (dataDir: string) => path.join(dataDir, 'log-state.json');

function currentBootId(): string | null {
  try {
    return readFileSync(BOOT_ID_FILE, 'utf8').trim();
  } catch {
    return null; // not Linux: a reboot cannot be told from a process crash
  }
}

/** null: the log was never opened by a version that writes the state (or DATA_DIR is new). */
function readState(dataDir: string): LogState | null {
  try {
    return JSON.parse(readFileSync(stateFile(dataDir), 'utf8')) as LogState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/** Why the log on disk cannot be trusted, or null when it can. */
export function logDistrust(dataDir: string): string | null {
  const state = readState(dataDir);
  if (state === null || state.clean) return null;
  const bootId = currentBootId();
  if (state.bootId === null || bootId === null || state.bootId === bootId) return null;
  return `the log was open when the machine stopped (boot ${state.bootId}, now ${bootId}): a power loss or an OS crash`;
}

/** Records, durably, that the log is open under this boot (clean: false) or was synced and closed. */
export function markLogState(dataDir: string, clean: boolean): void {
  const file = stateFile(dataDir);
  const temporary = `${file}.tmp`;
  const fd = openSync(temporary, 'w');
  try {
    writeSync(fd, JSON.stringify({ bootId: currentBootId(), clean } satisfies LogState));
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  // Else a power loss could bring back an older state that calls a torn log clean.
  syncDirectory(dataDir);
}

/** Removes the untrusted LMDB files; the log opened next is empty. */
export function discardLog(dataDir: string): void {
  rmSync(path.join(dataDir, 'log'), { recursive: true, force: true });
}

/**
 * Refills a fresh log, one segment at a time: dedup entries from Postgres, then every journaled
 * entry (undrained, so the drain re-inserts it idempotently). Each partition's watermark goes just
 * below its first entry. A segment left open is closed under its last whole entry; one with no
 * whole entry is deleted.
 */
export async function rebuildLog(log: EventLog, dataDir: string, dedupWindowMs: number, sql: Sql, logger: Logger): Promise<void> {
  let dedups = 0;
  await forEachDedupRow(sql, Date.now() - dedupWindowMs, DEDUP_ROWS_PER_BATCH, (rows) => {
    log.restoreDedup(rows.map((row) => [dedupKey(row.org_num, row.dedup_id), row.id, row.received_ms] as const));
    dedups += rows.length;
  });
  const dir = journalDir(dataDir);
  const segments = listSegments(dir);
  const firstSeqs = new Map<number, number>();
  let events = 0;
  let torn = 0;
  for (const segment of segments) {
    const { entries, torn: isTorn } = readSegment(segment.file);
    if (isTorn) torn++;
    if (entries.length === 0) {
      unlinkSync(segment.file);
      continue;
    }
    log.restoreEntries(segment.partition, entries);
    events += entries.length;
    // A segment's entries are in seq order: its thread wrote them as it issued them.
    const first = entries[0]![0];
    firstSeqs.set(segment.partition, Math.min(first, firstSeqs.get(segment.partition) ?? first));
    if (segment.lastSeq === null) closeSegmentFile(dir, segment, entries.at(-1)![0]);
  }
  for (const [partition, first] of firstSeqs) log.restoreWatermark(partition, first - 1);
  logger.warn({ events, dedupEntries: dedups, segments: segments.length, tornSegments: torn }, 'log rebuilt from the journal and Postgres');
}
