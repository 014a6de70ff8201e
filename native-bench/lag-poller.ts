// Worker thread of `npm run bench:drain` (lag phase): polls Postgres for new events and notes
// when each first showed up. It runs on its own event loop, so the paced client on the main
// thread does not delay its polls or its stamps. Started through src/thread-bootstrap.mjs (tsx).
//
// A row returned by poll k became visible after poll k−1 took its snapshot and before poll k
// took its own, and both snapshots lie between the poll's call and its answer. So the row is
// stamped with the time poll k answered (never before it was visible), and that stamp is late by
// less than window_k = answer_k − call_(k−1).
import { parentPort, workerData } from 'node:worker_threads';
import { connect } from '../src/db/postgres.ts';
import { benchClock } from './lib.ts';

export interface PollerInit {
  databaseUrl: string;
  /** Only ids above this one are of interest. */
  last: string;
  intervalMs: number;
}

/** To the worker: finish with the first poll called after `stopAfter` (bench clock, ms). */
export interface PollerStop {
  stopAfter: number;
}

export type PollerMessage =
  | { kind: 'ready' }
  | {
      kind: 'done';
      ids: string[];
      /** Bench clock (process.hrtime, ms) when the poll that first returned the row answered. */
      seenAt: number[];
      /** Date.now() at the same moment, to compare with the server's received_at. */
      seenWall: number[];
      receivedAt: number[];
      /** The payload's `sent_at`. */
      sentAt: number[];
      /** Per poll: answer − previous call (the precision bound), and call − previous call. */
      windows: number[];
      intervals: number[];
    };

const init = workerData as PollerInit;
const sql = connect(init.databaseUrl, { max: 1 });
let stopAfter = Number.POSITIVE_INFINITY;
parentPort!.on('message', (message: PollerStop) => {
  stopAfter = message.stopAfter;
});

const result: Extract<PollerMessage, { kind: 'done' }> = {
  kind: 'done', ids: [], seenAt: [], seenWall: [], receivedAt: [], sentAt: [], windows: [], intervals: [],
};
let last = init.last;
let previousCall: number | null = null;
for (;;) {
  const calledAt = benchClock();
  const rows = await sql<{ id: string; received_at: Date; sent_at: string | null }[]>`
    select id, received_at, payload->>'sent_at' as sent_at from events where id > ${last} order by id`;
  const answeredAt = benchClock();
  const wall = Date.now();
  if (previousCall === null) {
    parentPort!.postMessage({ kind: 'ready' } satisfies PollerMessage);
  } else {
    result.windows.push(answeredAt - previousCall);
    result.intervals.push(calledAt - previousCall);
  }
  previousCall = calledAt;
  for (const row of rows) {
    result.ids.push(row.id);
    result.seenAt.push(answeredAt);
    result.seenWall.push(wall);
    result.receivedAt.push(row.received_at.getTime());
    result.sentAt.push(Number(row.sent_at));
  }
  if (rows.length > 0) last = rows[rows.length - 1]!.id;
  if (calledAt > stopAfter) break;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, init.intervalMs - (benchClock() - calledAt))));
}
await sql.end({ timeout: 5 });
parentPort!.postMessage(result);
