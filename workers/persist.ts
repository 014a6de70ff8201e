// Piscina task: write one drain batch into Postgres. The batch arrives msgpackr-packed in a
// transferred buffer; the insert is idempotent on the event id, so a retried batch is harmless.
import { unpack } from 'msgpackr';
import { workerData } from 'piscina';
import { connect } from '../src/db/postgres.ts';
import { insertEvents } from '../src/events/store.ts';
import type { LogRecord } from '../src/log/event-log.ts';
import type { PersistInit, PersistTask } from '../src/protocol.ts';

const { databaseUrl } = workerData as PersistInit;
// One connection per worker: batches are sequential within a worker; parallelism is PERSIST_WORKERS.
const sql = connect(databaseUrl, { max: 1, connect_timeout: 5 });
/**
 * postgres.js learns the array types (uuid[], text[]) when its connection opens; an insert
 * queued before that would serialize the arrays wrongly. So one round trip comes first.
 */
let connected: Promise<unknown> | null = null;

export default async function persist(task: PersistTask): Promise<number> {
  connected ??= sql`select 1`.catch((error) => {
    connected = null;
    throw error;
  });
  await connected;
  return insertEvents(sql, unpack(task.records) as LogRecord[]);
}
