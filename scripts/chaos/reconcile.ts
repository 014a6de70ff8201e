// After the faults stop: let everything settle (the log drained into Postgres, every event
// delivered or failed), then hold what the driver and the receivers saw against the events table.
import type { Sql } from '../../src/db/postgres.ts';
import { waitFor } from '../../test/helpers/server.ts';
import type { Driver, Org } from './driver.ts';
import type { OrgReceiver } from './receivers.ts';
import type { ChaosTarget } from './target.ts';

/** Broken invariants by kind, with a few examples each. */
export class Violations {
  private readonly kinds = new Map<string, { count: number; examples: string[] }>();

  add(kind: string, example: string): void {
    const entry = this.kinds.get(kind) ?? { count: 0, examples: [] };
    entry.count++;
    if (entry.examples.length < 5) entry.examples.push(example);
    this.kinds.set(kind, entry);
  }

  get size(): number {
    return this.kinds.size;
  }

  lines(): string[] {
    return [...this.kinds].map(([kind, { count, examples }]) => `${kind}: ${count} (e.g. ${examples.join('; ')})`);
  }
}

export interface SettleOptions {
  timeoutMs: number;
  /**
   * Redeliver (POST /api/events/:id/redeliver) events whose delivery outcome was lost to a kill or
   * an outage: their claim's lease (WEBHOOK_TIMEOUT + 60 s) brings them back only after that long.
   * For runs too short to wait for it.
   */
  expediteLeases: boolean;
}

/**
 * A claim is due again WEBHOOK_TIMEOUT + 60 s after it was taken (src/delivery/dispatcher.ts). Due
 * more than 30 s ahead, it is a claim (retries and circuit pauses in a chaos run are shorter); due
 * less than 58 s ahead, the attempt has ended (timed out at worst) 2 s ago, so an event still
 * pending under it lost its outcome.
 */
const CLAIM_WINDOW_MS = [30_000, 58_000] as const;
const REDELIVER_CONCURRENCY = 16;

/** Waits for backlog 0 and no pending event; returns how many leases were expedited. */
export async function settle(
  target: ChaosTarget, sql: Sql, orgs: readonly Org[], options: SettleOptions, violations: Violations, note: (message: string) => void,
): Promise<number> {
  const deadline = Date.now() + options.timeoutMs;
  try {
    await waitFor('the log to drain into Postgres (backlog 0)', async () => {
      const reply = await target.server.request('GET', '/health/ready');
      return reply.status === 200 && reply.body.backlog === 0;
    }, options.timeoutMs, 200);
  } catch (error) {
    violations.add('not settled', (error as Error).message);
    return 0;
  }
  note('backlog 0: every accepted event is in Postgres');
  const keyOf = new Map(orgs.map((org) => [org.id, org.key]));
  const expedited = new Set<string>();
  let pending = 0;
  try {
    await waitFor('every event to be delivered or failed', async () => {
      const [row] = await sql<{ pending: number }[]>`select count(*)::int as pending from events where status = 'pending'`;
      pending = row!.pending;
      if (pending === 0) return true;
      if (options.expediteLeases) {
        const stranded = await sql<{ id: string; organization_id: string }[]>`
          select id::text as id, organization_id::text as organization_id from events
          where status = 'pending'
            and next_attempt_at > now() + ${CLAIM_WINDOW_MS[0]} * interval '1 millisecond'
            and next_attempt_at < now() + ${CLAIM_WINDOW_MS[1]} * interval '1 millisecond'`;
        const fresh = stranded.filter(({ id }) => !expedited.has(id));
        for (let start = 0; start < fresh.length; start += REDELIVER_CONCURRENCY) {
          await Promise.all(fresh.slice(start, start + REDELIVER_CONCURRENCY).map(async ({ id, organization_id }) => {
            const reply = await target.server.request('POST', `/api/events/${id}/redeliver`, { key: keyOf.get(organization_id)! });
            if (reply.status === 202) expedited.add(id);
          }));
        }
        if (fresh.length > 0) note(`redelivered ${fresh.length} events whose delivery outcome was lost (${pending} pending)`);
      }
      return false;
    }, Math.max(0, deadline - Date.now()), 500);
  } catch (error) {
    violations.add('not settled', `${(error as Error).message}: ${pending} events still pending`);
  }
  return expedited.size;
}

export interface Reconciled {
  acked: number;
  rejected: number;
  unknown: number;
  /** Unknown outcomes that turned out stored. */
  unknownStored: number;
  lost: number;
  duplicated: number;
  /** Re-sent dedup_ids of an accepted event answered 409 with the original id. */
  duplicatesAnswered: number;
  delivered: number;
  failed: number;
  deliveries: number;
  invalidSignatures: number;
  crossOrg: number;
}

interface Row {
  id: string;
  org_id: string;
  token: string | null;
  dedup_id: string | null;
  status: string;
}

function group<T>(rows: readonly Row[], keyOf: (row: Row) => T | null): Map<T, Row[]> {
  const groups = new Map<T, Row[]>();
  for (const row of rows) {
    const key = keyOf(row);
    if (key === null) continue;
    const list = groups.get(key);
    if (list) list.push(row);
    else groups.set(key, [row]);
  }
  return groups;
}

export async function reconcile(sql: Sql, driver: Driver, orgs: readonly Org[], receivers: readonly OrgReceiver[], violations: Violations): Promise<Reconciled> {
  const rows = await sql<Row[]>`
    select id::text as id, organization_id::text as org_id, payload->>'token' as token, dedup_id, status from events`;
  const byId = new Map(rows.map((row) => [row.id, row]));
  const byToken = group(rows, (row) => row.token);
  const byDedup = group(rows, (row) => (row.dedup_id === null ? null : `${row.org_id}/${row.dedup_id}`));
  const orgIndex = new Map(orgs.map((org) => [org.id, org.index]));
  const result: Reconciled = {
    acked: 0, rejected: 0, unknown: 0, unknownStored: 0, lost: 0, duplicated: 0, duplicatesAnswered: 0,
    delivered: 0, failed: 0, deliveries: 0, invalidSignatures: 0, crossOrg: 0,
  };

  // What the answers promised.
  for (const event of driver.events) {
    const stored = byToken.get(String(event.token)) ?? [];
    const orgId = orgs[event.org]!.id;
    const what = `token ${event.token} of org ${event.org}`;
    switch (event.outcome) {
      case 'accepted': {
        result.acked++;
        const row = byId.get(event.id!);
        if (!row || row.token !== String(event.token) || row.org_id !== orgId) {
          result.lost++;
          violations.add(row ? 'lost: the acknowledged id holds another event' : 'lost: acknowledged (202) but not in Postgres', `${event.id} (${what})`);
        }
        if (event.resend && event.original !== null) violations.add('dedup_id accepted again after its 202', `${event.dedupId}: ${event.original} then ${event.id}`);
        break;
      }
      case 'unknown':
        result.unknown++;
        if (stored.length > 0) result.unknownStored++;
        break;
      case 'rejected':
        result.rejected++;
        if (stored.length > 0) violations.add('stored although refused', `${what} (${event.code}) stored as ${stored[0]!.id}`);
        break;
      case 'duplicate': {
        if (stored.length > 0) {
          result.duplicated++;
          violations.add('stored although answered 409', `${what} stored as ${stored[0]!.id}`);
        }
        const owner = byDedup.get(`${orgId}/${event.dedupId}`)?.[0];
        if (owner?.id !== event.id) violations.add('409 names an id that is not the stored event of its dedup_id', `${event.dedupId}: 409 named ${event.id}, stored ${owner?.id ?? 'none'}`);
        if (event.resend && event.original !== null) {
          if (event.id === event.original) result.duplicatesAnswered++;
          else violations.add('409 names another id than the 202 did', `${event.dedupId}: 202 ${event.original}, 409 ${event.id}`);
        }
        break;
      }
    }
  }

  // What is stored: each event at most once, and only events that were sent.
  for (const [token, stored] of byToken) {
    if (stored.length > 1) {
      result.duplicated += stored.length - 1;
      violations.add('duplicated: one event stored more than once', `token ${token}: ${stored.map((row) => row.id).join(', ')}`);
    }
    const sent = driver.events[Number(token)];
    if (sent === undefined || orgs[sent.org]!.id !== stored[0]!.org_id) violations.add('stored event that was never sent', `${stored[0]!.id} (token ${token})`);
  }
  for (const [key, stored] of byDedup) {
    if (stored.length > 1) {
      result.duplicated += stored.length - 1;
      violations.add('duplicated: one dedup_id stored more than once', `${key}: ${stored.map((row) => row.id).join(', ')}`);
    }
  }

  // Delivery: every delivered event reached its own org's receiver, signed, and nothing else did.
  for (const row of rows) {
    if (row.status === 'delivered') {
      result.delivered++;
      if (!receivers[orgIndex.get(row.org_id)!]!.accepted.has(row.id)) violations.add('delivered but its receiver never answered 2xx for it', row.id);
    } else if (row.status === 'failed') {
      result.failed++;
    } else {
      violations.add(`event left ${row.status}`, row.id);
    }
  }
  const crossOrg = new Set<string>();
  for (const receiver of receivers) {
    result.deliveries += receiver.deliveries;
    result.invalidSignatures += receiver.invalidSignatures.length;
    for (const id of receiver.invalidSignatures) violations.add('invalid signature', `${id} at org ${receiver.org}'s receiver`);
    for (const what of receiver.foreign) {
      crossOrg.add(what);
      violations.add('cross-org: a delivery that is not this org\'s event', `org ${receiver.org}'s receiver got ${what}`);
    }
    for (const [id, token] of receiver.tokens) {
      const row = byId.get(id);
      if (!row) violations.add('delivery of an event not in Postgres', `${id} at org ${receiver.org}'s receiver`);
      else if (row.org_id !== orgs[receiver.org]!.id) {
        crossOrg.add(id);
        violations.add('cross-org: another org\'s event delivered here', `${id} (org ${orgIndex.get(row.org_id)}) at org ${receiver.org}'s receiver`);
      } else if (row.token !== token) violations.add('delivery body is another event', `${id}: token ${token}, stored ${row.token}`);
    }
  }
  result.crossOrg = crossOrg.size;
  for (const what of driver.failures) violations.add('a request failed with no fault to explain it', what);
  return result;
}
