// The pipeline from the log to Postgres: every 202 lands in Postgres exactly once (under
// concurrency, across kill -9, across a Postgres outage, across SIGTERM and a restart), the
// inbox queries are index range scans, and concurrent starts migrate once.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes, randomUUID } from 'node:crypto';
import { v7 } from 'uuid';
import { migrate, MIGRATION_VERSIONS } from '../src/db/migrations.ts';
import { connect, type Sql } from '../src/db/postgres.ts';
import type { TransactionSql } from 'postgres';
import { idFloor } from '../src/events/ids.ts';
import { inboxPage, type InboxFilter, type InboxQuery } from '../src/events/store.ts';
import { metric } from './helpers/ingest.ts';
import { sendOne, sustain, tally, type LoadRequest, type Outcome } from './helpers/load.ts';
import { PgProxy } from './helpers/pg-proxy.ts';
import { createTestDatabase, expectError, TestServer, useTestDatabase, waitFor, type TestDatabase } from './helpers/server.ts';

const pipeline = suite<{ db: TestDatabase }>('pipeline');

useTestDatabase(pipeline);

// ---------------------------------------------------------------------------------------------
// Bookkeeping: every event carries a unique marker `m` in its payload, so a row in Postgres can be
// traced to the request that sent it, and an event stored twice under two ids is visible.

interface Item {
  type: string;
  payload: { m: string };
  dedup_id?: string;
}

class Ledger {
  /** Every marker sent (whatever became of the request). */
  readonly attempted = new Set<string>();
  /** 202'd (or accepted in a batch) id → marker. */
  readonly accepted = new Map<string, string>();
  /** Markers of events the server answered with a refusal (409, 503, ...): must never be stored. */
  readonly refused = new Set<string>();
  /** Markers of events whose request got no answer (crash): may or may not be stored. */
  readonly unanswered = new Set<string>();
  readonly problems: string[] = [];
  private serial = 0;

  constructor(
    readonly key: string,
    readonly tag: string,
  ) {}

  item(dedupId?: string): Item {
    const m = `${this.tag}-${++this.serial}`;
    this.attempted.add(m);
    return dedupId === undefined ? { type: `pipe.${this.tag}`, payload: { m } } : { type: `pipe.${this.tag}`, payload: { m }, dedup_id: dedupId };
  }

  single(dedupId?: string): LoadRequest {
    return { path: '/api/events', key: this.key, body: this.item(dedupId) };
  }

  batch(items: Item[]): LoadRequest {
    return { path: '/api/events/batch', key: this.key, body: { events: items } };
  }

  private accept(id: unknown, m: string): void {
    if (typeof id !== 'string') return void this.problems.push(`accepted ${m} without an id`);
    if (this.accepted.has(id)) this.problems.push(`id ${id} handed out twice (${this.accepted.get(id)} and ${m})`);
    this.accepted.set(id, m);
  }

  record = (outcome: Outcome): void => {
    const { request, reply } = outcome;
    if (request.path === '/api/events') {
      const { m } = (request.body as Item).payload;
      if (!reply) this.unanswered.add(m);
      else if (reply.status === 202) this.accept(reply.body?.id, m);
      else this.refused.add(m);
      return;
    }
    const items = (request.body as { events: Item[] }).events;
    if (!reply) return items.forEach((item) => this.unanswered.add(item.payload.m));
    if (reply.status !== 200) return items.forEach((item) => this.refused.add(item.payload.m));
    for (const result of reply.body.results as Array<{ index: number; id?: string; status?: string }>) {
      const { m } = items[result.index]!.payload;
      if (result.status === 'accepted') this.accept(result.id, m);
      else this.refused.add(m);
    }
  };
}

interface Row {
  id: string;
  m: string;
}

async function storedRows(sql: Sql, tag: string): Promise<Row[]> {
  return sql<Row[]>`select id::text as id, payload->>'m' as m from events where type = ${`pipe.${tag}`}`;
}

/**
 * Postgres holds every accepted event once, with the content sent under that id; a row that was
 * not accepted must come from a request that got no answer (only if `allowUnanswered`).
 */
async function verifyExactlyOnce(sql: Sql, ledger: Ledger, allowUnanswered: boolean): Promise<void> {
  assert.equal(ledger.problems, [], 'bookkeeping problems');
  const duplicateIds = await sql`select id, count(*) from events group by id having count(*) > 1`;
  assert.equal([...duplicateIds], [], 'an id stored more than once');
  const rows = await storedRows(sql, ledger.tag);
  const byId = new Map(rows.map((row) => [row.id, row.m]));
  const markerCount = new Map<string, number>();
  for (const row of rows) markerCount.set(row.m, (markerCount.get(row.m) ?? 0) + 1);
  const twice = [...markerCount].filter(([, n]) => n > 1).map(([m]) => m);
  assert.equal(twice.slice(0, 10), [], `${twice.length} events stored under more than one id`);

  const missing = [...ledger.accepted].filter(([id]) => !byId.has(id));
  assert.equal(missing.slice(0, 10), [], `${missing.length} of ${ledger.accepted.size} accepted events missing from Postgres`);
  const wrong = [...ledger.accepted].filter(([id, m]) => byId.get(id) !== m);
  assert.equal(wrong.slice(0, 10), [], 'stored content differs from what was sent under that id');

  const extra = rows.filter((row) => !ledger.accepted.has(row.id));
  const refusedStored = extra.filter((row) => ledger.refused.has(row.m));
  assert.equal(refusedStored.slice(0, 10), [], `${refusedStored.length} events stored although the server refused them`);
  const unknown = extra.filter((row) => !ledger.attempted.has(row.m));
  assert.equal(unknown.slice(0, 10), [], 'rows nobody sent');
  if (allowUnanswered) {
    const unexplained = extra.filter((row) => !ledger.unanswered.has(row.m));
    assert.equal(unexplained.slice(0, 10), [], 'extra rows that are neither accepted nor unanswered');
  } else {
    assert.equal(extra.slice(0, 10), [], `${extra.length} rows that were never accepted`);
  }
  assert.ok(rows.length <= ledger.attempted.size, `${rows.length} rows stored, only ${ledger.attempted.size} events attempted`);
}

/** Sends every request, `concurrency` at a time, each on a fresh connection (spread over acceptor threads). */
async function sendAll(url: string, requests: readonly LoadRequest[], concurrency: number, onOutcome: (outcome: Outcome) => void): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < requests.length) {
      const outcome = await sendOne(url, requests[next++]!);
      onOutcome(outcome);
      outcomes.push(outcome);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, requests.length) }, lane));
  return outcomes;
}

function shuffle<T>(list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  return list;
}

async function countStored(sql: Sql, tag: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from events where type = ${`pipe.${tag}`}`;
  return row!.n;
}

async function readyBacklog(server: TestServer): Promise<number> {
  const reply = await server.request('GET', '/health/ready');
  assert.is(reply.status, 200, reply.text);
  return reply.body.backlog;
}

/**
 * Why accepted events are not in Postgres: how many, the backlog and drain metrics, and whether the
 * missing ones still read back through the API (i.e. are still in the log).
 */
async function diagnose(server: TestServer, sql: Sql, ledger: Ledger): Promise<string> {
  try {
    const stored = new Set((await storedRows(sql, ledger.tag)).map((row) => row.id));
    const missing = [...ledger.accepted.keys()].filter((id) => !stored.has(id));
    const metrics = (await server.request('GET', '/metrics')).text.split('\n')
      .filter((line) => /^triggers_(log_backlog|drain_lag_seconds|events_drained_total|database_up) /.test(line));
    const reads = await Promise.all(missing.slice(0, 3).map(async (id) => `${id}: ${(await server.request('GET', `/api/events/${id}`, { key: ledger.key })).text}`));
    const warnings = server.logs.filter((line) => /"level":(40|50|60)/.test(line) && !line.includes('ADMIN_TOKEN')).map((line) => line.slice(0, 300));
    return [`${missing.length} of ${ledger.accepted.size} accepted events not in Postgres`, ...metrics, ...reads, `${warnings.length} warnings, first:`, ...warnings.slice(0, 3)].join('\n');
  } catch (error) {
    return `(diagnosis failed: ${String(error)})`;
  }
}

/**
 * Runs `test` against a server that reaches Postgres through a proxy (close() it for an outage).
 * Afterwards the proxy is reopened first, so that the server can drain and stop, then all is closed.
 */
async function withProxiedServer(db: TestDatabase, env: Record<string, string>, test: (server: TestServer, proxy: PgProxy) => Promise<void>): Promise<void> {
  const proxy = await PgProxy.forDatabase(db.url);
  let server: TestServer | null = null;
  try {
    server = await TestServer.start(proxy.urlFor(db.url), env);
    await test(server, proxy);
  } finally {
    await proxy.reopen();
    await server?.close();
    await proxy.close();
  }
}

// ---------------------------------------------------------------------------------------------

pipeline('~2000 concurrent events (single, batch, dedup): every 202 lands in Postgres exactly once', async ({ db }) => {
  const server = await TestServer.start(db.url, { ACCEPTOR_THREADS: '4', PERSIST_WORKERS: '2' });
  try {
    const { key } = await server.createKey('enterprise', 'pipeline exactly once');
    const ledger = new Ledger(key, 'once');
    const requests: LoadRequest[] = [];
    for (let i = 0; i < 1000; i++) requests.push(ledger.single(i % 10 === 0 ? `once-dedup-${i}` : undefined));
    // 50 of those dedup ids sent a second time: one of each pair gets 409 and is not stored.
    for (let i = 0; i < 500; i += 10) requests.push(ledger.single(`once-dedup-${i}`));
    for (let b = 0; b < 10; b++) {
      const items = Array.from({ length: 100 }, (_, j) => ledger.item(j % 25 === 0 ? `once-batch-${b}-${j}` : undefined));
      items[99]!.dedup_id = `once-batch-${b}-0`; // within one batch the first of two equal dedup_ids wins
      requests.push(ledger.batch(items));
    }
    const outcomes = await sendAll(server.url, shuffle(requests), 64, ledger.record);
    const counts = tally(outcomes);
    assert.is(counts.error, undefined, `transport errors: ${JSON.stringify(counts)}`);
    assert.is(counts['409'], 50, JSON.stringify(counts));
    assert.is(ledger.accepted.size, ledger.attempted.size - 50 - 10, `accepted ${ledger.accepted.size} of ${ledger.attempted.size}: ${JSON.stringify(counts)}`);

    await waitFor(`${ledger.accepted.size} rows in Postgres`, async () => (await countStored(db.sql, 'once')) >= ledger.accepted.size, 10_000)
      .catch(async (error: Error) => assert.unreachable(`${error.message}\n${await diagnose(server, db.sql, ledger)}`));
    await verifyExactlyOnce(db.sql, ledger, false);
    assert.is(await countStored(db.sql, 'once'), ledger.accepted.size);
    assert.is(await readyBacklog(server), 0);
  } finally {
    await server.close();
  }
});

pipeline('3 × (heavy concurrent ingest, kill -9, restart): every 202 in Postgres once, nothing refused or invented', async ({ db }) => {
  const server = await TestServer.start(db.url, { ACCEPTOR_THREADS: '2', PERSIST_WORKERS: '2' });
  try {
    const { key } = await server.createKey('enterprise', 'pipeline crash loop');
    const ledger = new Ledger(key, 'crash');
    for (let round = 1; round <= 3; round++) {
      const before = ledger.accepted.size;
      let crashed: Promise<void> | null = null;
      const load = sustain(server.url, 48, (n) => {
        if (n % 7 === 3) return ledger.batch(Array.from({ length: 5 }, () => ledger.item()));
        // Every 5th request reuses the dedup id of the one before: one of the two is refused.
        const dedup = n % 5 === 0 ? `crash-${round}-${n}` : n % 5 === 1 ? `crash-${round}-${n - 1}` : undefined;
        return ledger.single(dedup);
      }, (outcome) => {
        ledger.record(outcome);
        if (crashed === null && ledger.accepted.size - before >= 400) crashed = server.crash();
      });
      const outcomes = await load.finished;
      await (crashed ?? server.crash());
      const counts = tally(outcomes);
      assert.ok(ledger.accepted.size - before >= 400, `round ${round}: ${JSON.stringify(counts)}`);
      assert.ok((counts.error ?? 0) > 0, `round ${round}: the crash interrupted no request: ${JSON.stringify(counts)}`);
      await server.boot();
    }
    assert.ok(ledger.unanswered.size > 0);
    await waitFor('every 202 of the three rounds in Postgres and the backlog drained', async () => {
      const stored = new Set((await storedRows(db.sql, 'crash')).map((row) => row.id));
      return [...ledger.accepted.keys()].every((id) => stored.has(id)) && (await readyBacklog(server)) === 0;
    }, 10_000).catch(async (error: Error) => assert.unreachable(`${error.message}\n${await diagnose(server, db.sql, ledger)}`));
    await verifyExactlyOnce(db.sql, ledger, true);
  } finally {
    await server.close();
  }
});

pipeline('Postgres outage mid-load: 202s continue, backlog grows, database_up 0, ready 200; after it, all drain exactly once', ({ db }) =>
  withProxiedServer(db, { PERSIST_WORKERS: '2' }, async (live, proxy) => {
    const { key } = await live.createKey('enterprise', 'pipeline outage');
    const ledger = new Ledger(key, 'outage');
    let n = 0;
    const load = sustain(live.url, 16, () => (++n % 10 === 0 ? ledger.batch([ledger.item(), ledger.item(), ledger.item()]) : ledger.single()), ledger.record);
    try {
      await waitFor('events draining with the database up', async () => ledger.accepted.size >= 100 && (await metric(live, 'triggers_database_up')) === 1, 10_000);
      await proxy.close();
      const acceptedAtOutage = ledger.accepted.size;
      await waitFor('triggers_database_up = 0', async () => (await metric(live, 'triggers_database_up')) === 0, 10_000);
      const backlogAtOutage = await metric(live, 'triggers_log_backlog');
      await waitFor('the backlog to grow by 300 during the outage', async () => (await metric(live, 'triggers_log_backlog')) >= backlogAtOutage + 300, 15_000);
      const ready = await live.request('GET', '/health/ready');
      assert.is(ready.status, 200, `ready during the outage: ${ready.text}`);
      assert.is(ready.body.status, 'ready');
      assert.is.not(ready.body.database, 'connected', `ready during the outage: ${ready.text}`);
      assert.ok(ready.body.backlog >= backlogAtOutage + 300, ready.text);
      assert.ok(ledger.accepted.size - acceptedAtOutage >= 300, 'events accepted during the outage');
      assert.is(await metric(live, 'triggers_database_up'), 0);
      // What needs Postgres now answers 503 with Retry-After, not 500: a key not cached yet, GET /api/keys.
      const unknownKey = await live.request('POST', '/api/events', { key: `zap_live_${randomBytes(32).toString('base64url')}`, body: { type: 'outage.unknown', payload: {} } });
      expectError(unknownKey, 503, 'database_unavailable');
      assert.is(unknownKey.headers.get('retry-after'), '1');
      expectError(await live.request('GET', '/api/keys', { key }), 503, 'database_unavailable');
    } finally {
      await load.stop();
    }
    const counts = tally(load.outcomes);
    for (const { reply, error } of load.outcomes) {
      assert.ok(reply && (reply.status === 202 || reply.status === 200), `only 202 (200 for a batch) expected: ${error ?? `${reply?.status} ${reply?.text}`} — ${JSON.stringify(counts)}`);
    }
    assert.is(ledger.refused.size, 0, `refused during the outage: ${JSON.stringify(counts)}`);
    // Nothing of the outage was in Postgres yet.
    assert.ok((await countStored(db.sql, 'outage')) < ledger.accepted.size);

    await proxy.reopen();
    await waitFor('the backlog drained after the outage', async () =>
      (await metric(live, 'triggers_log_backlog')) === 0 && (await metric(live, 'triggers_database_up')) === 1, 20_000);
    await waitFor('all rows visible', async () => (await countStored(db.sql, 'outage')) >= ledger.accepted.size, 5_000);
    await verifyExactlyOnce(db.sql, ledger, false);
  }),
);

pipeline('SIGTERM right after a burst: exit 0 and every event is in Postgres when the process is gone', async ({ db }) => {
  const server = await TestServer.start(db.url, { ACCEPTOR_THREADS: '2' });
  try {
    const { key } = await server.createKey('enterprise', 'pipeline sigterm');
    const ledger = new Ledger(key, 'sigterm');
    const requests: LoadRequest[] = [];
    for (let b = 0; b < 8; b++) requests.push(ledger.batch(Array.from({ length: 500 }, () => ledger.item())));
    for (let i = 0; i < 200; i++) requests.push(ledger.single());
    const outcomes = await sendAll(server.url, shuffle(requests), 32, ledger.record);
    assert.equal(tally(outcomes), { 200: 8, 202: 200 });
    assert.is(await server.stop(), 0, 'exit code');
    // No polling: the shutdown itself drained the log.
    await verifyExactlyOnce(db.sql, ledger, false);
    assert.is(await countStored(db.sql, 'sigterm'), 4200);
  } finally {
    await server.close();
  }
});

pipeline('SIGTERM with a backlog held by a short outage: shutdown waits for the drain, exit 0, all in Postgres', ({ db }) =>
  withProxiedServer(db, {}, async (server, proxy) => {
    const { key } = await server.createKey('enterprise', 'pipeline sigterm backlog');
    const ledger = new Ledger(key, 'sigterm-backlog');
    await proxy.close();
    const outcomes = await sendAll(server.url, Array.from({ length: 300 }, () => ledger.single()), 16, ledger.record);
    assert.equal(tally(outcomes), { 202: 300 });
    assert.ok((await readyBacklog(server)) >= 300, 'backlog before SIGTERM');
    await proxy.reopen();
    assert.is(await server.stop(), 0, 'exit code');
    await verifyExactlyOnce(db.sql, ledger, false);
    assert.is(await countStored(db.sql, 'sigterm-backlog'), 300);
  }),
);

pipeline('restart resumes the drain: 200 events accepted while Postgres is unreachable, kill -9, restart → all in Postgres once', ({ db }) =>
  withProxiedServer(db, { PERSIST_WORKERS: '1' }, async (server, proxy) => {
    const { key } = await server.createKey('enterprise', 'pipeline resume');
    const ledger = new Ledger(key, 'resume');
    await proxy.close();
    const outcomes = await sendAll(server.url, Array.from({ length: 200 }, () => ledger.single()), 16, ledger.record);
    assert.equal(tally(outcomes), { 202: 200 });
    assert.ok((await readyBacklog(server)) >= 200);
    await server.crash();
    assert.is(await countStored(db.sql, 'resume'), 0, 'nothing reached Postgres during the outage');
    await proxy.reopen();
    await server.boot();
    await waitFor('the 200 events in Postgres after the restart', async () => (await countStored(db.sql, 'resume')) >= 200, 15_000);
    await verifyExactlyOnce(db.sql, ledger, false);
    await waitFor('backlog 0 after the restart', async () => (await readyBacklog(server)) === 0, 5_000);
    // And they read back through the API (from Postgres now).
    const [id] = ledger.accepted.keys();
    const read = await server.request('GET', `/api/events/${id}`, { key });
    assert.is(read.status, 200, read.text);
  }),
);

// ---------------------------------------------------------------------------------------------
// EXPLAIN of the inbox queries: of the very statement inboxPage (src/events/store.ts) sends for each
// shape, recorded through postgres.js's debug hook while the real function runs.
//
// Two checks per shape. (1) The plan Postgres picks on its own has no Seq Scan. (2) The design
// promise of migrations.ts: an (organization_id, ...) index serves every shape as a range scan in
// id order. On a few thousand rows the planner may legitimately prefer other plans (events_pkey,
// whose order matches the heap, or a bitmap scan and a top-N sort of a few dozen rows), so (2)
// takes seq scans, bitmap scans and sorts off the table for the session: if a Sort or a Seq Scan
// is still chosen, no index can serve the shape; the org of (2) holds ~1 % of the rows, so the
// org indexes are the only sane choice and events_pkey with a filter is not picked.

const FILTERS: InboxFilter[] = ['undelivered', 'pending', 'failed', 'delivered', 'acknowledged', 'all'];

/** A statement as postgres.js sends it: text with $1… placeholders, and the parameters' values. */
interface Statement {
  text: string;
  parameters: Array<string | number>;
}

/**
 * Runs inboxPage on a connection of its own and returns the statement it sent to Postgres (the
 * last one: a new connection first asks for the array types).
 */
function inboxStatements(databaseUrl: string): { of(query: InboxQuery): Promise<Statement>; end(): Promise<void> } {
  const sent: Statement[] = [];
  const sql = connect(databaseUrl, { max: 1, debug: (_connection, text, parameters) => void sent.push({ text, parameters }) });
  return {
    async of(query) {
      sent.length = 0;
      await inboxPage(sql, query);
      const statement = sent.at(-1);
      if (statement === undefined) throw new Error('inboxPage sent no statement');
      return statement;
    },
    end: () => sql.end(),
  };
}

function explain(sql: Sql | TransactionSql, statement: Statement) {
  return sql.unsafe(`explain (format json) ${statement.text}`, statement.parameters);
}

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

function planOf(rows: readonly Record<string, unknown>[]): PlanNode {
  return (rows[0]!['QUERY PLAN'] as Array<{ Plan: PlanNode }>)[0]!.Plan;
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

function describePlan(plan: PlanNode): string {
  return nodes(plan).map((node) => `${node['Node Type']}${node['Index Name'] ? ` using ${node['Index Name']}` : ''}`).join(' → ');
}

function assertNoSeqScan(plan: PlanNode, label: string): void {
  assert.not.ok(nodes(plan).some((node) => node['Node Type'] === 'Seq Scan'), `Seq Scan — ${label}: ${describePlan(plan)}`);
}

function assertOrgIndexRange(plan: PlanNode, label: string): void {
  const all = nodes(plan);
  const summary = `${label}: ${describePlan(plan)}`;
  const scans = all.filter((node) => node['Node Type'] === 'Index Scan' || node['Node Type'] === 'Index Only Scan');
  assert.is(scans.length, 1, `expected one index scan — ${summary}`);
  assert.ok(scans[0]!['Index Name']!.startsWith('events_org_'), `expected an (organization_id, ...) index — ${summary}`);
  for (const bad of ['Seq Scan', 'Sort', 'Incremental Sort', 'Bitmap Heap Scan']) {
    assert.not.ok(all.some((node) => node['Node Type'] === bad), `${bad} in the plan — ${summary}`);
  }
}

pipeline('EXPLAIN: every inbox query shape (default, one status, all; asc/desc; first page and cursor) is an index range scan in id order', async ({ db }) => {
  const sql = db.sql;
  await migrate(sql);
  const orgs = Array.from({ length: 30 }, () => randomUUID());
  for (const [i, org] of orgs.entries()) {
    await sql`insert into organizations (id, name, tier, api_key_digest) values (${org}, ${`explain org ${i}`}, 'free', ${randomBytes(16).toString('hex')})`;
  }
  // 6000 rows: orgs[0] holds half, orgs[1] about 1 %, the rest is spread over 28 orgs.
  const statuses = ['delivered', 'delivered', 'delivered', 'delivered', 'acknowledged', 'acknowledged', 'pending', 'pending', 'pending', 'failed'];
  const ids: string[] = [];
  const rowOrgs: string[] = [];
  const rowStatus: string[] = [];
  const start = Date.now() - 600_000;
  for (let i = 0; i < 6000; i++) {
    ids.push(v7({ msecs: start + i * 10 }));
    rowOrgs.push(i % 2 === 0 ? orgs[0]! : i % 100 === 1 ? orgs[1]! : orgs[2 + (i % 28)]!);
    rowStatus.push(statuses[(i * 7) % 10]!);
  }
  await sql`
    insert into events (id, organization_id, type, payload, status, received_at)
    select id, org, 'explain', '{"n": 1}'::jsonb, status, now()
    from unnest(${sql.array(ids)}::uuid[], ${sql.array(rowOrgs)}::uuid[], ${sql.array(rowStatus)}::text[]) as t (id, org, status)`;
  await sql`analyze events`;

  const horizon = idFloor(Date.now() + 1);
  const middle = ids[3001]!;
  let checked = 0;
  const shapes = FILTERS.flatMap((filter) => (['asc', 'desc'] as const).flatMap((order) => [null, middle].map((after) => ({ filter, order, after }))));
  const inbox = inboxStatements(db.url);
  try {
    const statement = (organizationId: string, shape: (typeof shapes)[number]) => inbox.of({ organizationId, ...shape, type: null, limit: 100, horizon });
    for (const shape of shapes) {
      const { filter, order, after } = shape;
      for (const [name, org] of [['big org', orgs[0]!], ['small org', orgs[1]!]] as const) {
        const plan = planOf(await explain(sql, await statement(org, shape)));
        assertNoSeqScan(plan, `${name} status=${filter} order=${order} cursor=${after !== null}`);
        checked++;
      }
    }
    await sql.begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      await tx`set local enable_bitmapscan = off`;
      await tx`set local enable_sort = off`;
      for (const shape of shapes) {
        const { filter, order, after } = shape;
        const plan = planOf(await explain(tx, await statement(orgs[1]!, shape)));
        assertOrgIndexRange(plan, `status=${filter} order=${order} cursor=${after !== null}`);
        checked++;
      }
      // postgres.js runs the query as a named prepared statement, which Postgres may switch to a
      // generic plan (parameter values unknown): that one must be an org index range scan too.
      await tx`set local plan_cache_mode = force_generic_plan`;
      let n = 0;
      for (const shape of shapes) {
        const { filter, order, after } = shape;
        const { text, parameters } = await statement(orgs[1]!, shape);
        const name = `inbox_generic_${n++}`;
        await tx.unsafe(`prepare ${name} as ${text}`);
        const values = parameters.map((value) => `'${String(value).replaceAll("'", "''")}'`).join(', ');
        const plan = planOf(await tx.unsafe(`explain (format json) execute ${name} (${values})`));
        assertOrgIndexRange(plan, `generic plan status=${filter} order=${order} cursor=${after !== null}`);
        await tx.unsafe(`deallocate ${name}`);
        checked++;
      }
    });
  } finally {
    await inbox.end();
  }
  assert.is(checked, 24 * 2 + 24 + 24);
});

pipeline('3 instances starting at once on a fresh database: all start, each migration applied exactly once', async () => {
  const fresh = await createTestDatabase();
  const started: TestServer[] = [];
  try {
    const results = await Promise.allSettled([0, 1, 2].map(() => TestServer.start(fresh.url)));
    for (const result of results) if (result.status === 'fulfilled') started.push(result.value);
    const failures = results.flatMap((result) => (result.status === 'rejected' ? [String(result.reason)] : []));
    assert.equal(failures, [], 'every instance starts');
    const versions = await fresh.sql<{ version: number; n: number }[]>`select version, count(*)::int as n from schema_migrations group by version order by version`;
    assert.equal(versions.map((row) => [row.version, row.n]), MIGRATION_VERSIONS.map((version) => [version, 1]));
    const appliers = started.filter((server) => server.logs.some((line) => line.includes('"msg":"migrations applied"')));
    assert.is(appliers.length, 1, 'exactly one instance applied the migrations');
    // All three serve, against the one schema: a key made on one works on the others.
    const { key } = await started[0]!.createKey('free', 'migration org');
    for (const server of started) {
      const reply = await server.request('POST', '/api/events', { key, body: { type: 'migrated', payload: {} } });
      assert.is(reply.status, 202, reply.text);
    }
  } finally {
    await Promise.all(started.map((server) => server.close()));
    await fresh.drop();
  }
});

pipeline.run();
