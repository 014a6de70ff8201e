// Read-your-writes: before a read from Postgres, wait until every event accepted before the
// read began is drained, and bound the read to ids below a horizon no later event can reach.
import { ApiError } from '../errors.ts';
import { idFloor } from '../events/ids.ts';
import type { LogProgress } from '../log/progress.ts';

/** How long a read waits for the drain to catch up before answering 503 database_unavailable. */
const VISIBILITY_TIMEOUT_MS = 5_000;

/**
 * Returns the horizon: an exclusive upper bound on ids such that every event below it is in
 * Postgres now and no event accepted later can sort below it.
 *
 * Why it holds: the log issues an event's seq before it makes the id (ids carry the clock's
 * millisecond). We step past the current millisecond `t`, then snapshot the issued seqs: an
 * id of millisecond ≤ t had its seq issued before the snapshot, so waiting for the drain to
 * pass the snapshot puts it in Postgres; anything issued after the snapshot gets an id of a
 * later millisecond, at or above idFloor(t + 1).
 */
export async function visibleHorizon(progress: LogProgress, timeoutMs = VISIBILITY_TIMEOUT_MS): Promise<string> {
  const t = Date.now();
  while (Date.now() <= t) await new Promise((resolve) => setImmediate(resolve));
  const targets = progress.snapshotIssued();
  if (progress.drainedPast(targets)) return idFloor(t + 1);
  const deadline = Date.now() + timeoutMs;
  const release = progress.waitForDrain();
  try {
    while (!progress.drainedPast(targets)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new ApiError('database_unavailable');
      await progress.nextDrain(left);
    }
  } finally {
    release();
  }
  return idFloor(t + 1);
}
