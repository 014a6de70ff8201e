// Read-only look into a running server's LMDB log, to see which acceptor threads (log
// partitions) appended. Depends on the layout documented at the top of src/log/event-log.ts:
// `log` is keyed [partition, seq], and `meta` holds ['drained', partition] -> seq (entries up to
// it are compacted away once in Postgres). So max(last seq in `log`, drained watermark) is a
// per-partition high-water mark that only grows.
import { open } from 'lmdb';
import path from 'node:path';

const MAX_SEQ = Number.MAX_SAFE_INTEGER;

/** The highest sequence number each of partitions 0..partitions-1 has used. */
export function highWaterMarks(dataDir: string, partitions: number): number[] {
  const root = open({ path: path.join(dataDir, 'log'), readOnly: true, maxDbs: 16 });
  try {
    const log = root.openDB<unknown, [number, number]>({ name: 'log' });
    const meta = root.openDB<number, [string, number]>({ name: 'meta' });
    const marks: number[] = [];
    for (let partition = 0; partition < partitions; partition++) {
      let mark = meta.get(['drained', partition]) ?? 0;
      for (const key of log.getKeys({ start: [partition, MAX_SEQ], end: [partition, 0], reverse: true, limit: 1 })) {
        mark = Math.max(mark, key[1]);
      }
      marks.push(mark);
    }
    return marks;
  } finally {
    void root.close();
  }
}
