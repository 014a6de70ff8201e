// Events in Postgres: the drain's idempotent insert and the read side (event, inbox, ack,
// retention). Every query is parameterised; payloads travel as JSON text both ways.
import type { Sql } from '../db/postgres.ts';
import type { LogRecord } from '../log/event-log.ts';

export type EventStatus = 'pending' | 'delivered' | 'failed' | 'acknowledged';
export const EVENT_STATUSES: readonly EventStatus[] = ['pending', 'delivered', 'failed', 'acknowledged'];

export interface StoredEvent {
  id: string;
  type: string;
  /** jsonb as text, spliced into answers as is. */
  payload: string;
  dedup_id: string | null;
  status: EventStatus;
  received_at: Date;
  delivered_at: Date | null;
  acknowledged_at: Date | null;
  attempt_count: number;
}

/**
 * Inserts a drain batch; replaying a batch changes nothing (conflicts on the id are skipped).
 * Events of an org with an active webhook endpoint are due for delivery at once.
 */
export async function insertEvents(sql: Sql, records: readonly LogRecord[]): Promise<number> {
  const ids: string[] = [];
  const orgs: string[] = [];
  const types: string[] = [];
  const payloads: string[] = [];
  const dedupIds: Array<string | null> = [];
  const receivedAt: number[] = [];
  for (const [id, org, type, payload, dedupId, received] of records) {
    ids.push(id);
    orgs.push(org);
    types.push(type);
    payloads.push(payload);
    dedupIds.push(dedupId);
    receivedAt.push(received);
  }
  const result = await sql`
    insert into events (id, organization_id, type, payload, dedup_id, received_at, next_attempt_at)
    select id, org, type, payload::jsonb, dedup_id, to_timestamp(received_ms / 1000.0),
      (select now() from webhook_endpoints w where w.organization_id = org and w.disabled_at is null)
    from unnest(${sql.array(ids)}::uuid[], ${sql.array(orgs)}::uuid[], ${sql.array(types)}::text[],
                ${sql.array(payloads)}::text[], ${sql.array(dedupIds as string[])}::text[], ${sql.array(receivedAt)}::float8[])
      as batch (id, org, type, payload, dedup_id, received_ms)
    on conflict (id) do nothing`;
  return result.count;
}

const EVENT_COLUMNS = 'id, type, payload::text as payload, dedup_id, status, received_at, delivered_at, acknowledged_at, attempt_count';

export async function findEvent(sql: Sql, organizationId: string, id: string): Promise<StoredEvent | null> {
  const [row] = await sql<StoredEvent[]>`
    select ${sql.unsafe(EVENT_COLUMNS)} from events where id = ${id} and organization_id = ${organizationId}`;
  return row ?? null;
}

/** `undelivered` (the default) is pending + failed. */
export type InboxFilter = EventStatus | 'all' | 'undelivered';

export interface InboxQuery {
  organizationId: string;
  filter: InboxFilter;
  type: string | null;
  order: 'asc' | 'desc';
  limit: number;
  /** Keyset: continue after (asc) or before (desc) this id. */
  after: string | null;
  /** Only ids below this one: the snapshot every earlier 202 is known to be part of. */
  horizon: string;
}

export async function inboxPage(sql: Sql, query: InboxQuery): Promise<StoredEvent[]> {
  const { organizationId, filter, type, order, limit, after, horizon } = query;
  return sql<StoredEvent[]>`
    select ${sql.unsafe(EVENT_COLUMNS)} from events
    where organization_id = ${organizationId}
      ${filter === 'all' ? sql`` : filter === 'undelivered' ? sql`and status in ('pending', 'failed')` : sql`and status = ${filter}`}
      ${type === null ? sql`` : sql`and type = ${type}`}
      and id < ${horizon}
      ${after === null ? sql`` : order === 'asc' ? sql`and id > ${after}` : sql`and id < ${after}`}
    order by id ${order === 'asc' ? sql`asc` : sql`desc`}
    limit ${limit}`;
}

/** Acknowledges the org's events among `ids`; acking again keeps the first acknowledged_at. */
export async function acknowledge(sql: Sql, organizationId: string, ids: readonly string[]): Promise<Map<string, Date>> {
  const rows = await sql<{ id: string; acknowledged_at: Date }[]>`
    update events set status = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, now())
    where id = any(${sql.array(ids as string[])}::uuid[]) and organization_id = ${organizationId}
    returning id, acknowledged_at`;
  return new Map(rows.map((row) => [row.id, row.acknowledged_at]));
}

/** Deletes up to `limit` finished events received before `beforeId`; returns how many. */
export async function deleteFinished(sql: Sql, beforeId: string, limit: number): Promise<number> {
  const result = await sql`
    delete from events where id in (
      select id from events
      where id < ${beforeId} and status in ('delivered', 'acknowledged', 'failed')
      limit ${limit})`;
  return result.count;
}

export interface DedupRow {
  id: string;
  dedup_id: string;
  org_num: number;
  received_ms: number;
}

/**
 * Every event with a dedup_id received after `sinceMs`, with its org's number, `batch` rows at a
 * time: what the log's dedup index is rebuilt from after a power loss (a rare, full scan).
 */
export async function forEachDedupRow(sql: Sql, sinceMs: number, batch: number, each: (rows: DedupRow[]) => void): Promise<void> {
  await sql<DedupRow[]>`
    select e.id, e.dedup_id, o.num as org_num, round(extract(epoch from e.received_at) * 1000)::float8 as received_ms
    from events e join organizations o on o.id = e.organization_id
    where e.dedup_id is not null and e.received_at > to_timestamp(${sinceMs} / 1000.0)`.cursor(batch, each);
}
