// What garbage must never change: Postgres row counts (events per status, organizations, webhook
// endpoints, delivery attempts), the accepted-events counter and the log backlog. Taken once the
// log has drained, so a snapshot is not a moving target.
import type { Sql } from '../../src/db/postgres.ts';
import { backlog, metric } from '../helpers/ingest.ts';
import { waitFor, type TestServer } from '../helpers/server.ts';

export type StateSnapshot = Record<string, number>;

export async function snapshot(server: TestServer, sql: Sql): Promise<StateSnapshot> {
  await waitFor('the log backlog to drain before a state snapshot', async () => (await backlog(server)) === 0, 15_000, 50);
  const counts = await sql<{ name: string; count: number }[]>`
    select 'events.' || status as name, count(*)::int as count from events group by status
    union all select 'organizations', count(*)::int from organizations
    union all select 'webhook_endpoints', count(*)::int from webhook_endpoints
    union all select 'delivery_attempts', count(*)::int from delivery_attempts`;
  const state: StateSnapshot = Object.fromEntries(counts.map((row) => [row.name, row.count]));
  state['metric.triggers_events_accepted_total'] = await metric(server, 'triggers_events_accepted_total');
  state['log.backlog'] = await backlog(server);
  return state;
}

/** One line per value that differs ("events.pending: 3 → 4"); empty when nothing changed. */
export function stateChanges(before: StateSnapshot, after: StateSnapshot): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].sort().flatMap((name) => ((before[name] ?? 0) === (after[name] ?? 0) ? [] : [`${name}: ${before[name] ?? 0} → ${after[name] ?? 0}`]));
}
