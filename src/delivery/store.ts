// Webhook endpoints, delivery scheduling and attempts in Postgres.
import type { Sql } from '../db/postgres.ts';

export interface Endpoint {
  url: string;
  secret_enc: string;
  previous_secret_enc: string | null;
  previous_secret_expires_at: Date | null;
  updated_at: Date;
  disabled_at: Date | null;
}

const ENDPOINT_COLUMNS = 'url, secret_enc, previous_secret_enc, previous_secret_expires_at, updated_at, disabled_at';

export async function findEndpoint(sql: Sql, organizationId: string): Promise<Endpoint | null> {
  const [row] = await sql<Endpoint[]>`
    select ${sql.unsafe(ENDPOINT_COLUMNS)} from webhook_endpoints where organization_id = ${organizationId}`;
  return row ?? null;
}

/**
 * Sets the URL. A new endpoint gets `secretEnc`; an existing one keeps its secret unless
 * `replaceSecret` (its secret can no longer be decrypted). A disabled endpoint is re-enabled and
 * the events accepted while it was disabled become due.
 */
export async function saveEndpoint(sql: Sql, organizationId: string, url: string, secretEnc: string, replaceSecret: boolean): Promise<Endpoint> {
  return sql.begin(async (tx) => {
    const [previous] = await tx<{ disabled_at: Date | null }[]>`
      select disabled_at from webhook_endpoints where organization_id = ${organizationId} for update`;
    const [row] = await tx<Endpoint[]>`
      insert into webhook_endpoints (organization_id, url, secret_enc)
      values (${organizationId}, ${url}, ${secretEnc})
      on conflict (organization_id) do update set
        url = excluded.url, updated_at = now(), disabled_at = null,
        secret_enc = case when ${replaceSecret} then excluded.secret_enc else webhook_endpoints.secret_enc end
      returning ${tx.unsafe(ENDPOINT_COLUMNS)}`;
    if (previous?.disabled_at) {
      await tx`
        update events set next_attempt_at = now()
        where organization_id = ${organizationId} and status = 'pending' and next_attempt_at is null
          and received_at >= ${previous.disabled_at}`;
    }
    return row!;
  });
}

/** Removes the endpoint and unschedules the org's pending deliveries (the events stay in the inbox). */
export async function deleteEndpoint(sql: Sql, organizationId: string): Promise<boolean> {
  return sql.begin(async (tx) => {
    const deleted = await tx`delete from webhook_endpoints where organization_id = ${organizationId}`;
    await tx`update events set next_attempt_at = null where organization_id = ${organizationId} and status = 'pending' and next_attempt_at is not null`;
    return deleted.count > 0;
  });
}

/** New secret; the old one keeps signing beside it until `overlapMs` from now. */
export async function rotateEndpointSecret(sql: Sql, organizationId: string, secretEnc: string, overlapMs: number): Promise<boolean> {
  const result = await sql`
    update webhook_endpoints
    set previous_secret_enc = secret_enc, secret_enc = ${secretEnc},
        previous_secret_expires_at = now() + ${overlapMs} * interval '1 millisecond', updated_at = now()
    where organization_id = ${organizationId}`;
  return result.count > 0;
}

export async function disableEndpoint(sql: Sql, organizationId: string): Promise<void> {
  await sql`update webhook_endpoints set disabled_at = now() where organization_id = ${organizationId}`;
}

export interface DueDelivery {
  id: string;
  organization_id: string;
  type: string;
  payload: string;
  received_at: Date;
  attempt_count: number;
  schedule_step: number;
  url: string;
  secret_enc: string;
  previous_secret_enc: string | null;
  previous_secret_expires_at: Date | null;
}

/**
 * Claims up to `limit` due deliveries of orgs with an active endpoint: their next_attempt_at
 * moves `leaseMs` ahead, so another instance skips them (SKIP LOCKED) and, should this one
 * crash mid-delivery, they come due again after the lease (at least once). `skipOrgs`: endpoints
 * that cannot take more now (circuit open, or at their in-flight cap) — their backlog stays
 * unclaimed instead of being claimed and put back, so it cannot crowd out other orgs; and one claim
 * takes at most `perOrg` of an org's deliveries, or its `room` (endpoints with deliveries in flight:
 * what is claimed beyond their cap would only be put back).
 */
export async function claimDue(
  sql: Sql, limit: number, perOrg: number, leaseMs: number, skipOrgs: readonly string[], room: ReadonlyMap<string, number>,
): Promise<DueDelivery[]> {
  // Rows locked as candidates but over an org's share are released unchanged at commit.
  return sql<DueDelivery[]>`
    with room as (
      select * from unnest(${sql.array([...room.keys()])}::uuid[], ${sql.array([...room.values()])}::int[]) as r(organization_id, room)
    ), candidates as (
      select e.id, e.organization_id, e.next_attempt_at from events e
      join webhook_endpoints w on w.organization_id = e.organization_id and w.disabled_at is null
      where e.status = 'pending' and e.next_attempt_at <= now()
        and e.organization_id <> all(${sql.array(skipOrgs as string[])}::uuid[])
      order by e.next_attempt_at
      limit ${limit}
      for update of e skip locked
    ), due as (
      select id from (
        select id, organization_id, row_number() over (partition by organization_id order by next_attempt_at) as position from candidates
      ) ranked left join room using (organization_id)
      where position <= coalesce(room.room, ${perOrg})
    )
    update events e set next_attempt_at = now() + ${leaseMs} * interval '1 millisecond'
    from due, webhook_endpoints w
    where e.id = due.id and w.organization_id = e.organization_id
    returning e.id, e.organization_id, e.type, e.payload::text as payload, e.received_at, e.attempt_count, e.schedule_step,
      w.url, w.secret_enc, w.previous_secret_enc, w.previous_secret_expires_at`;
}

export type Outcome = 'delivered' | 'retry' | 'failed' | 'deferred';

export interface DeliveryRecord {
  id: string;
  outcome: Outcome;
  /** The attempt this was (absent for `deferred`: nothing was sent). */
  attempt: { number: number; at: Date; statusCode: number | null; durationMs: number; error: string | null } | null;
  /** For `retry` and `deferred`. */
  nextAttemptAt: Date | null;
  scheduleStep: number;
}

/**
 * Records a batch of outcomes in one transaction. Only pending events change: an event
 * acknowledged while its delivery was in flight keeps its state (the attempt is still recorded).
 */
export async function recordDeliveries(sql: Sql, records: readonly DeliveryRecord[]): Promise<void> {
  const attempts = records.filter((record) => record.attempt !== null);
  await sql.begin(async (tx) => {
    if (attempts.length > 0) {
      await tx`
        insert into delivery_attempts (event_id, attempt, attempted_at, status_code, duration_ms, error)
        select * from unnest(
          ${tx.array(attempts.map((r) => r.id))}::uuid[],
          ${tx.array(attempts.map((r) => r.attempt!.number))}::int[],
          ${tx.array(attempts.map((r) => r.attempt!.at.toISOString()))}::timestamptz[],
          ${tx.array(attempts.map((r) => r.attempt!.statusCode) as number[])}::int[],
          ${tx.array(attempts.map((r) => r.attempt!.durationMs))}::int[],
          ${tx.array(attempts.map((r) => r.attempt!.error) as string[])}::text[])
        on conflict do nothing`;
    }
    await tx`
      update events e set
        status = case r.outcome when 'delivered' then 'delivered' when 'failed' then 'failed' else e.status end,
        delivered_at = case r.outcome when 'delivered' then r.attempted_at else e.delivered_at end,
        attempt_count = e.attempt_count + case when r.outcome = 'deferred' then 0 else 1 end,
        schedule_step = r.step,
        next_attempt_at = r.next_at
      from unnest(
        ${tx.array(records.map((r) => r.id))}::uuid[],
        ${tx.array(records.map((r) => r.outcome))}::text[],
        ${tx.array(records.map((r) => r.attempt?.at.toISOString() ?? null) as string[])}::timestamptz[],
        ${tx.array(records.map((r) => r.scheduleStep))}::int[],
        ${tx.array(records.map((r) => r.nextAttemptAt?.toISOString() ?? null) as string[])}::timestamptz[])
        as r (id, outcome, attempted_at, step, next_at)
      where e.id = r.id and e.status = 'pending'`;
  });
}

export interface AttemptRow {
  attempted_at: Date;
  status_code: number | null;
  duration_ms: number;
  error: string | null;
}

export async function attemptsOf(sql: Sql, eventId: string): Promise<AttemptRow[]> {
  return sql<AttemptRow[]>`
    select attempted_at, status_code, duration_ms, error from delivery_attempts where event_id = ${eventId} order by attempt`;
}

/**
 * Schedules a fresh round of deliveries (the retry schedule starts over) for a failed or
 * delivered event, or brings a pending one forward. Returns the event's status, or null if unknown.
 */
export async function redeliver(sql: Sql, organizationId: string, id: string): Promise<string | null> {
  const [row] = await sql<{ status: string }[]>`
    update events set
      status = case when status = 'acknowledged' then status else 'pending' end,
      schedule_step = case when status = 'acknowledged' then schedule_step else 0 end,
      next_attempt_at = case when status = 'acknowledged' then next_attempt_at else now() end
    where id = ${id} and organization_id = ${organizationId}
    returning status`;
  return row?.status ?? null;
}
