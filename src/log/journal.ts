// The journal: what makes a DURABILITY=fsync 202 survive power loss, with one flush per group.
//
// An LMDB commit that survives power loss costs two flushes in series (data pages, then the meta
// page), so LMDB runs with noSync and every group of appends is also written here: one `write` +
// `fdatasync` of one frame. After a power loss LMDB itself cannot be trusted (noSync), so it is
// rebuilt from the journal and Postgres (see recovery.ts). The journal only has to hold what may
// not be in Postgres yet: segments are deleted once the drain has passed them.
//
// Layout: DATA_DIR/journal/<partition>-<firstSeq>.open while a thread appends to it, renamed
// <partition>-<firstSeq>-<lastSeq>.closed when it closes (lastSeq may be an upper bound). A frame
// is [payload bytes u32][crc32 u32][msgpack JournalEntry[]]; a torn last frame fails its length or
// checksum and ends the segment's replay, as do the zeros after the last frame.
//
// A segment is written out with zeros before its first frame (in the background, as the thread's
// <partition>.spare file): a flush that has to record a new file size or block map costs a second
// flush (the filesystem's own journal), ~15 % of an fsync-mode 202 here.
import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { pack, unpack } from 'msgpackr';
import { checksum } from '../digest.ts';
import type { LogRecord } from './event-log.ts';

export type JournalEntry = [seq: number, record: LogRecord, dedupKey: Buffer | null];

const FRAME_HEAD_BYTES = 8;
/** A segment closes when full or this old, so the drained ones can be deleted a segment at a time. */
const SEGMENT_BYTES = 16 << 20;
const SEGMENT_MAX_AGE_MS = 60_000;
const ZERO_CHUNK = Buffer.alloc(1 << 20);

export interface Segment {
  partition: number;
  firstSeq: number;
  /** null while open (being appended to, or left open by a crash). */
  lastSeq: number | null;
  file: string;
}

const SEGMENT_NAME = /^(\d+)-(\d+)(?:-(\d+)\.closed|\.open)$/;

export function journalDir(dataDir: string): string {
  return path.join(dataDir, 'journal');
}

/** The directory entry of a new or renamed file is durable only once its directory is synced. */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Every segment in `dir`, by partition, then first seq. */
export function listSegments(dir: string): Segment[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const segments: Segment[] = [];
  for (const name of names) {
    const match = SEGMENT_NAME.exec(name);
    if (!match) continue;
    segments.push({
      partition: Number(match[1]),
      firstSeq: Number(match[2]),
      lastSeq: match[3] === undefined ? null : Number(match[3]),
      file: path.join(dir, name),
    });
  }
  return segments.sort((a, b) => a.partition - b.partition || a.firstSeq - b.firstSeq);
}

function encodeFrame(entries: readonly JournalEntry[]): Buffer {
  const payload = pack(entries);
  const frame = Buffer.allocUnsafe(FRAME_HEAD_BYTES + payload.length);
  frame.writeUInt32LE(payload.length, 0);
  frame.writeUInt32LE(checksum(payload), 4);
  frame.set(payload, FRAME_HEAD_BYTES);
  return frame;
}

/** The entries of a segment's whole frames, up to the first torn or corrupt one (torn: not just zeros after it). */
export function readSegment(file: string): { entries: JournalEntry[]; torn: boolean } {
  const bytes = readFileSync(file);
  const entries: JournalEntry[] = [];
  let at = 0;
  while (at + FRAME_HEAD_BYTES <= bytes.length) {
    const length = bytes.readUInt32LE(at);
    const end = at + FRAME_HEAD_BYTES + length;
    if (length === 0 || end > bytes.length) break;
    const payload = bytes.subarray(at + FRAME_HEAD_BYTES, end);
    if (checksum(payload) !== bytes.readUInt32LE(at + 4)) break;
    entries.push(...(unpack(payload) as JournalEntry[]));
    at = end;
  }
  return { entries, torn: bytes.subarray(at).some((byte) => byte !== 0) };
}

function closedName(dir: string, partition: number, firstSeq: number, lastSeq: number): string {
  return path.join(dir, `${partition}-${firstSeq}-${lastSeq}.closed`);
}

/** Renames a segment left open to its closed name; `lastSeq` must be at least its last entry's. */
export function closeSegmentFile(dir: string, segment: Segment, lastSeq: number): void {
  renameSync(segment.file, closedName(dir, segment.partition, segment.firstSeq, lastSeq));
}

/**
 * Closes the segments a previous run left open (it crashed, or a thread of it is gone): none will
 * be appended to again. `lastIssued` bounds what any of them holds.
 */
export function closeLeftOpen(dir: string, lastIssued: (partition: number) => number): void {
  for (const segment of listSegments(dir)) {
    if (segment.lastSeq === null) closeSegmentFile(dir, segment, Math.max(segment.firstSeq, lastIssued(segment.partition)));
  }
}

/** Deletes the closed segments whose every entry the drain has passed (so is in Postgres). */
export function pruneDrained(dir: string, drainedUpTo: (partition: number) => number): void {
  for (const { partition, lastSeq, file } of listSegments(dir)) {
    if (lastSeq !== null && lastSeq <= drainedUpTo(partition)) unlinkSync(file);
  }
}

/** Writes `bytes` of zeros into a new file and flushes it, off the thread (libuv's pool). */
async function zeroFilled(file: string, bytes: number): Promise<void> {
  const handle = await open(file, 'w');
  try {
    for (let at = 0; at < bytes; at += ZERO_CHUNK.length) await handle.write(ZERO_CHUNK, 0, Math.min(ZERO_CHUNK.length, bytes - at), at);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** One acceptor thread's appends to its partition's journal. Not thread-safe: one writer per partition. */
export class JournalWriter {
  private fd = -1;
  private file = '';
  private firstSeq = 0;
  private lastSeq = 0;
  /** Where the next frame goes. */
  private bytes = 0;
  private openedAt = 0;
  private readonly ageTimer: NodeJS.Timeout;
  private readonly spareFile: string;
  private spare: 'none' | 'filling' | 'ready' = 'none';

  constructor(private readonly dir: string, private readonly partition: number) {
    mkdirSync(dir, { recursive: true });
    this.spareFile = path.join(dir, `${partition}.spare`);
    this.prepareSpare();
    // An idle thread's last segment closes too, so that it can be deleted once drained.
    this.ageTimer = setInterval(() => {
      if (this.fd !== -1 && Date.now() - this.openedAt >= SEGMENT_MAX_AGE_MS) this.closeSegment();
    }, SEGMENT_MAX_AGE_MS / 4);
    this.ageTimer.unref();
  }

  /** Appends one group (seq order) and returns once it is on disk. */
  write(entries: readonly JournalEntry[]): void {
    const frame = encodeFrame(entries);
    if (this.fd !== -1 && (this.bytes + frame.length > SEGMENT_BYTES || Date.now() - this.openedAt >= SEGMENT_MAX_AGE_MS)) this.closeSegment();
    if (this.fd === -1) this.openSegment(entries[0]![0]);
    writeSync(this.fd, frame, 0, frame.length, this.bytes);
    fdatasyncSync(this.fd);
    this.bytes += frame.length;
    this.lastSeq = entries.at(-1)![0];
  }

  private prepareSpare(): void {
    if (this.spare !== 'none') return;
    this.spare = 'filling';
    zeroFilled(this.spareFile, SEGMENT_BYTES).then(
      () => (this.spare = 'ready'),
      () => (this.spare = 'none'), // e.g. a full disk: segments are then plain files, tried again at the next one
    );
  }

  private openSegment(firstSeq: number): void {
    this.file = path.join(this.dir, `${this.partition}-${firstSeq}.open`);
    if (this.spare === 'ready') {
      renameSync(this.spareFile, this.file);
      this.fd = openSync(this.file, 'r+');
      this.spare = 'none';
    } else {
      // Not ready yet (a burst right after start): a plain file, whose flushes cost a little more.
      // A file of that name holds no entry (entries ≥ firstSeq were never issued before), so 'w' loses nothing.
      this.fd = openSync(this.file, 'w');
    }
    syncDirectory(this.dir);
    this.prepareSpare();
    this.firstSeq = firstSeq;
    this.lastSeq = firstSeq;
    this.bytes = 0;
    this.openedAt = Date.now();
  }

  private closeSegment(): void {
    closeSync(this.fd);
    this.fd = -1;
    // Not synced: a rename lost to a power loss leaves the segment open, and the next start closes it.
    renameSync(this.file, closedName(this.dir, this.partition, this.firstSeq, this.lastSeq));
  }

  close(): void {
    clearInterval(this.ageTimer);
    if (this.fd !== -1) this.closeSegment();
  }
}
