// The pull side: GET /api/inbox (read-your-writes, filters, validation, cursors, exactly-once
// paging under concurrent inserts), POST /api/ack/:id and POST /api/ack, tenancy, and
// injection-shaped parameters.
import { open } from 'lmdb';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freshRequest } from './helpers/http.ts';
import { sendOne } from './helpers/load.ts';
import { expectError, TestServer, useTestDatabase, waitFor, type Reply, type TestDatabase } from './helpers/server.ts';

interface Ctx {
  db: TestDatabase;
  server: TestServer;
  /**
   * Same database, PERSIST_LINGER=60s: an event stays in the log (not in Postgres) after its 202
   * until a read-your-writes read asks the drain to ship it.
   */
  slow: TestServer;
  key: string;
  org: string;
  otherKey: string;
}

const inbox = suite<Ctx>('inbox');

useTestDatabase(inbox, async (ctx) => {
  [ctx.server, ctx.slow] = await Promise.all([
    TestServer.start(ctx.db.url, { ACCEPTOR_THREADS: '2' }),
    TestServer.start(ctx.db.url, { PERSIST_LINGER: '60s' }),
  ]);
  ({ key: ctx.key, organizationId: ctx.org } = await ctx.server.createKey('enterprise', 'inbox org'));
  ctx.otherKey = (await ctx.server.createKey('enterprise', 'inbox other org')).key;
});

const UNKNOWN_ID = '01a212e5-76c4-701a-a75e-e9a00a5b5567';
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

interface InboxEvent {
  id: string;
  type: string;
  payload: unknown;
  dedup_id: string | null;
  status: string;
  attempts: unknown;
  created_at: string;
}

interface InboxBody {
  events: InboxEvent[];
  next_cursor: string | null;
}

async function newKey(server: TestServer, name: string): Promise<string> {
  return (await server.createKey('enterprise', name)).key;
}

async function send(server: TestServer, key: string, type: string, payload: Record<string, unknown> = {}, dedupId?: string): Promise<string> {
  const reply = await server.request('POST', '/api/events', { key, body: { type, payload, ...(dedupId ? { dedup_id: dedupId } : {}) } });
  assert.is(reply.status, 202, reply.text);
  return reply.body.id;
}

async function sendBatch(server: TestServer, key: string, events: Array<{ type: string; payload: Record<string, unknown> }>): Promise<string[]> {
  const reply = await server.request('POST', '/api/events/batch', { key, body: { events } });
  assert.is(reply.status, 200, reply.text);
  assert.is(reply.body.accepted, events.length, reply.text);
  return (reply.body.results as Array<{ id: string }>).map((result) => result.id);
}

async function list(server: TestServer, key: string, query: string): Promise<Reply<InboxBody>> {
  return server.request<InboxBody>('GET', `/api/inbox${query === '' ? '' : `?${query}`}`, { key });
}

async function listOk(server: TestServer, key: string, query: string): Promise<InboxBody> {
  const reply = await list(server, key, query);
  assert.is(reply.status, 200, `GET /api/inbox?${query}: ${reply.status} ${reply.text}`);
  assert.ok(Array.isArray(reply.body.events), reply.text);
  assert.ok(reply.body.next_cursor === null || typeof reply.body.next_cursor === 'string', reply.text);
  return reply.body;
}

/** Every event of the listing, following next_cursor to the end. */
async function listAll(server: TestServer, key: string, query: string, limit = 1000): Promise<InboxEvent[]> {
  const all: InboxEvent[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 1000; pages++) {
    const page = await listOk(server, key, `${query}&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    all.push(...page.events);
    cursor = page.next_cursor;
    if (cursor === null) return all;
  }
  throw new Error('listing did not end');
}

const ids = (events: readonly InboxEvent[]) => events.map((event) => event.id);
const sorted = (list: readonly string[]) => [...list].sort();

function cursorOf(parts: unknown[]): string {
  return Buffer.from(JSON.stringify(parts)).toString('base64url');
}

/** The events table exists; returns its row count and that of one org. */
async function eventsTable(db: TestDatabase, org: string): Promise<{ total: number; org: number }> {
  const [row] = await db.sql<{ table: string | null }[]>`select to_regclass('public.events')::text as table`;
  assert.is(row!.table, 'events', 'the events table is gone');
  const [count] = await db.sql<{ total: number; org: number }[]>`
    select count(*)::int as total, (count(*) filter (where organization_id = ${org}))::int as org from events`;
  return count!;
}

/**
 * Which of `ids` are still in the server's LMDB log (accepted, not yet drained to Postgres and
 * compacted): the `ids` database of the layout documented in src/log/event-log.ts.
 */
function stillInLog(dataDir: string, wanted: readonly string[]): string[] {
  const root = open({ path: path.join(dataDir, 'log'), readOnly: true, maxDbs: 16 });
  try {
    const index = root.openDB<unknown, string>({ name: 'ids' });
    return wanted.filter((id) => index.get(id) !== undefined);
  } finally {
    void root.close();
  }
}

/** Diagnosis for accepted events a read did not return: are they in Postgres, or still only in the log? */
async function whereAre(server: TestServer, db: TestDatabase, wanted: readonly string[]): Promise<string> {
  const stored = wanted.length === 0 ? [] : await db.sql<{ id: string }[]>`select id::text as id from events where id in ${db.sql(wanted as string[])}`;
  const inLog = stillInLog(server.dataDir, wanted);
  const ready = await server.request('GET', '/health/ready');
  return `${stored.length} of them in Postgres now, ${inLog.length} still in the log; backlog ${ready.body?.backlog}; ids ${wanted.slice(0, 5).join(', ')}`;
}

// ---------------------------------------------------------------------------------------------

inbox('read-your-writes: right after each 202 the inbox (status=all, desc, limit 1) shows the event, and GET reads it', async ({ server }) => {
  const key = await newKey(server, 'ryw org');
  for (let i = 0; i < 50; i++) {
    // Fresh connections: the POST and the reads land on either acceptor thread.
    const sent = await freshRequest(server.port, 'POST', '/api/events', { key, body: { type: 'ryw', payload: { i } } });
    assert.is(sent.status, 202, sent.text);
    const id = sent.body.id as string;
    const page = await freshRequest<InboxBody>(server.port, 'GET', '/api/inbox?status=all&order=desc&limit=1', { key });
    assert.is(page.status, 200, page.text);
    assert.is(page.body.events.length, 1, `round ${i}: ${page.text}`);
    assert.is(page.body.events[0]!.id, id, `round ${i}: the newest event is not the one just accepted`);
    assert.equal(page.body.events[0]!.payload, { i });
    const read = await freshRequest(server.port, 'GET', `/api/events/${id}`, { key });
    assert.is(read.status, 200, read.text);
    assert.is(read.body.id, id);
  }
  // The default listing (pending + failed) has them all too, oldest first.
  const all = await listAll(server, key, 'order=asc');
  assert.is(all.length, 50);
  assert.equal(all.map((event) => (event.payload as { i: number }).i), Array.from({ length: 50 }, (_, i) => i));
});

inbox('read-your-writes under concurrency: 40 parallel clients each see their own 202 in the inbox at once', async ({ server, db }) => {
  const key = await newKey(server, 'ryw concurrent org');
  const problems: string[] = [];
  const missed: string[] = [];
  await Promise.all(Array.from({ length: 40 }, async (_, client) => {
    for (let i = 0; i < 5; i++) {
      const sent = await freshRequest(server.port, 'POST', '/api/events', { key, body: { type: `ryw.c${client}`, payload: { client, i } } });
      if (sent.status !== 202) return void problems.push(`POST ${sent.status} ${sent.text}`);
      const page = await freshRequest<InboxBody>(server.port, 'GET', `/api/inbox?status=all&order=desc&limit=1&type=ryw.c${client}`, { key });
      if (page.status !== 200 || page.body.events[0]?.id !== sent.body.id) {
        missed.push(sent.body.id);
        problems.push(`client ${client} round ${i}: ${page.status} ${page.text.slice(0, 200)}`);
      }
    }
  }));
  if (problems.length > 0) assert.unreachable(`${problems.length} reads missed their own write — ${await whereAre(server, db, missed)}\n${problems.slice(0, 3).join('\n')}`);
});

inbox('filters: default = pending + failed; each status; all; type; order; limit; event shape', async ({ server, db }) => {
  const key = await newKey(server, 'filter org');
  const created = await sendBatch(server, key, Array.from({ length: 8 }, (_, i) => ({ type: i % 2 === 0 ? 'alpha' : 'beta', payload: { i } })));
  // Read-your-writes puts them in Postgres before this answer.
  assert.equal(sorted(ids(await listAll(server, key, 'status=all'))), sorted(created));
  const [e0, e1, e2, e3, e4, e5, e6, e7] = created as [string, string, string, string, string, string, string, string];
  // Delivery is not under test here: set the delivery outcomes directly.
  await db.sql`update events set status = 'delivered', delivered_at = now(), attempt_count = 1 where id = ${e1}`;
  await db.sql`update events set status = 'failed', attempt_count = 8 where id in ${db.sql([e2, e5])}`;
  for (const id of [e3, e6]) assert.is((await server.request('POST', `/api/ack/${id}`, { key })).status, 200);
  const pending = [e0, e4, e7];
  const expected: Record<string, string[]> = {
    '': [e0, e2, e4, e5, e7],
    'status=pending': pending,
    'status=failed': [e2, e5],
    'status=delivered': [e1],
    'status=acknowledged': [e3, e6],
    'status=all': created,
  };
  for (const [query, want] of Object.entries(expected)) {
    const page = await listOk(server, key, query);
    assert.equal(ids(page.events), want, `?${query}`);
    assert.is(page.next_cursor, null, `?${query}: a short page has no next_cursor`);
    for (const event of page.events) {
      if (query !== '' && query !== 'status=all') assert.is(event.status, query.slice('status='.length));
      if (query === '') assert.ok(event.status === 'pending' || event.status === 'failed', event.status);
    }
  }
  // Type filter, with the default status filter and with status=all.
  assert.equal(ids((await listOk(server, key, 'type=alpha')).events), [e0, e2, e4]);
  assert.equal(ids((await listOk(server, key, 'type=beta&status=all')).events), [e1, e3, e5, e7]);
  assert.equal((await listOk(server, key, 'type=gamma&status=all')).events, []);
  // Order.
  assert.equal(ids((await listOk(server, key, 'status=all&order=asc')).events), created);
  assert.equal(ids((await listOk(server, key, 'status=all&order=desc')).events), [...created].reverse());
  // Limit: 1 and 1000 are valid; a full page carries a cursor.
  const one = await listOk(server, key, 'status=all&limit=1');
  assert.equal(ids(one.events), [e0]);
  assert.type(one.next_cursor, 'string');
  assert.equal(ids((await listOk(server, key, 'status=all&limit=1000')).events), created);
  const eight = await listOk(server, key, 'status=all&limit=8');
  assert.type(eight.next_cursor, 'string', 'a full page has a cursor');
  const after = await listOk(server, key, `limit=8&cursor=${eight.next_cursor}`);
  assert.equal(after, { events: [], next_cursor: null });
  // The shape of one event.
  const [first] = (await listOk(server, key, 'status=all&limit=1')).events;
  assert.equal(Object.keys(first!).sort(), ['attempts', 'created_at', 'dedup_id', 'id', 'payload', 'status', 'type']);
  assert.equal(first!.payload, { i: 0 });
  assert.is(first!.type, 'alpha');
  assert.is(first!.dedup_id, null);
  assert.match(first!.created_at, ISO);
  const read = await server.request('GET', `/api/events/${e0}`, { key });
  assert.is(first!.created_at, read.body.created_at, 'inbox and GET agree on created_at');
  assert.ok(typeof first!.attempts === 'number' || Array.isArray(first!.attempts), `attempts: ${JSON.stringify(first!.attempts)}`);
});

inbox('validation: limit, status, order → 400 validation_error with field; never 500', async ({ server, key }) => {
  for (const limit of ['0', '1001', '-1', '1.5', 'abc', '', '1e3', ' 5', '99999']) {
    const reply = await list(server, key, `limit=${encodeURIComponent(limit)}`);
    assert.is(expectError(reply, 400, 'validation_error').field, 'limit', `limit=${limit}: ${reply.text}`);
  }
  for (const status of ['bogus', 'PENDING', 'undelivered', '']) {
    const reply = await list(server, key, `status=${encodeURIComponent(status)}`);
    assert.is(expectError(reply, 400, 'validation_error').field, 'status', `status=${status}: ${reply.text}`);
  }
  for (const order of ['up', 'ASC', '']) {
    const reply = await list(server, key, `order=${encodeURIComponent(order)}`);
    assert.is(expectError(reply, 400, 'validation_error').field, 'order', `order=${order}: ${reply.text}`);
  }
  assert.is(expectError(await list(server, key, 'limit=5&limit=6'), 400, 'validation_error').field, 'limit');
  expectError(await server.request('GET', '/api/inbox'), 401, 'missing_api_key');
});

inbox('cursors: malformed or forged → 400 invalid_cursor; a cursor reused with other filters → 400 invalid_cursor', async ({ server, key }) => {
  await sendBatch(server, key, Array.from({ length: 3 }, (_, i) => ({ type: 'cursor', payload: { i } })));
  const page = await listOk(server, key, 'status=all&order=asc&limit=1&type=cursor');
  const cursor = page.next_cursor!;
  assert.type(cursor, 'string');
  const bad = [
    'abc',
    '!!!!',
    'null',
    cursor.slice(0, -3),
    cursor + 'AAAA',
    'x'.repeat(10_000),
    cursorOf([]),
    Buffer.from(JSON.stringify({ id: UNKNOWN_ID })).toString('base64url'),
    cursorOf([2, UNKNOWN_ID, 'asc', 'all', null]),
    cursorOf([1, 'not-a-uuid', 'asc', 'all', null]),
    cursorOf([1, "' OR 1=1--", 'asc', 'all', null]),
    cursorOf([1, UNKNOWN_ID, 'sideways', 'all', null]),
    cursorOf([1, UNKNOWN_ID, 'asc', 'bogus', null]),
    cursorOf([1, UNKNOWN_ID, 'asc', 'all', 42]),
    cursorOf([1, UNKNOWN_ID, 'asc', "all' OR '1'='1", null]),
    // Fields a real cursor can never carry: a type the type filter refuses.
    cursorOf([1, UNKNOWN_ID, 'asc', 'all', 'a\u0000b']),
    cursorOf([1, UNKNOWN_ID, 'asc', 'all', 't'.repeat(300)]),
  ];
  for (const raw of bad) {
    const reply = await list(server, key, `cursor=${encodeURIComponent(raw)}`);
    assert.ok(reply.status !== 500, `cursor ${JSON.stringify(raw.slice(0, 80))}: 500 ${reply.text}`);
    expectError(reply, 400, 'invalid_cursor');
  }
  // The cursor continues its own listing; the same filters may be repeated, other ones may not.
  assert.is((await list(server, key, `cursor=${cursor}`)).status, 200);
  assert.is((await list(server, key, `status=all&order=asc&type=cursor&limit=2&cursor=${cursor}`)).status, 200);
  for (const other of ['status=pending', 'status=acknowledged', 'order=desc', 'type=other', 'status=all&order=desc']) {
    expectError(await list(server, key, `${other}&cursor=${cursor}`), 400, 'invalid_cursor');
  }
  // A cursor of one org's listing is just a position for another org: nothing of the first leaks.
  const foreign = await list(server, (await newKey(server, 'cursor other org')), `cursor=${cursor}`);
  assert.is(foreign.status, 200, foreign.text);
  assert.equal(foreign.body.events, []);
});

inbox('paging with next_cursor (limit 37) visits every event exactly once while new events keep arriving: asc and desc', async ({ server, db }) => {
  const key = await newKey(server, 'paging org');
  const seeded: string[] = [];
  for (let b = 0; b < 3; b++) seeded.push(...(await sendBatch(server, key, Array.from({ length: 100 }, (_, i) => ({ type: 'page', payload: { seed: b * 100 + i } })))));

  for (const order of ['asc', 'desc'] as const) {
    const inserted: string[] = [];
    /** When each insert's 202 arrived. */
    const acceptedAt = new Map<string, number>();
    let inserting = true;
    const inserter = (async () => {
      while (inserting) {
        const outcome = await sendOne(server.url, { path: '/api/events', key, body: { type: 'page', payload: { order, n: inserted.length } } });
        if (outcome.reply?.status !== 202) throw new Error(`insert during paging: ${outcome.error ?? outcome.reply?.text}`);
        inserted.push(outcome.reply.body.id);
        acceptedAt.set(outcome.reply.body.id, outcome.reply.at);
      }
    })();
    const visited: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    let lastPageSentAt = 0;
    try {
      do {
        const query = `status=all&order=${order}&limit=37${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
        lastPageSentAt = Date.now();
        const page = await listOk(server, key, query);
        assert.ok(page.events.length <= 37);
        visited.push(...ids(page.events));
        cursor = page.next_cursor;
        // asc: once past the seeded events, stop inserting so the listing can reach its end.
        const seenAll = order === 'asc' ? visited.includes(sorted(seeded).at(-1)!) : cursor === null;
        if (seenAll && inserting) {
          inserting = false;
          await inserter;
        }
      } while (cursor !== null && ++pages < 500);
    } finally {
      inserting = false;
      await inserter;
    }
    assert.ok(inserted.length > 0, `${order}: nothing was inserted while paging`);
    const dupes = visited.filter((id, i) => visited.indexOf(id) !== i);
    assert.equal(dupes, [], `${order}: visited twice`);
    const inOrder = order === 'asc' ? sorted(visited) : sorted(visited).reverse();
    assert.equal(visited, inOrder, `${order}: pages out of order`);
    const seen = new Set(visited);
    const missed = seeded.filter((id) => !seen.has(id));
    if (missed.length > 0) assert.unreachable(`${order}: ${missed.length} earlier events never visited — ${await whereAre(server, db, missed)}`);
    if (order === 'asc') {
      // Every insert whose 202 came before the last page was requested lies above an earlier
      // cursor (ids are time ordered) and is visible to that request (read-your-writes): visited.
      const due = inserted.filter((id) => acceptedAt.get(id)! < lastPageSentAt);
      assert.ok(due.length > 0, 'no insert was accepted before the last page');
      const missedInserts = due.filter((id) => !seen.has(id));
      if (missedInserts.length > 0) {
        assert.unreachable(`asc: ${missedInserts.length} of ${due.length} concurrent inserts never listed — ${await whereAre(server, db, missedInserts)}`);
      }
    }
    const listed = new Set([...seeded, ...inserted]);
    const strangers = visited.filter((id) => !listed.has(id));
    assert.equal(strangers, [], `${order}: visited events that were never sent to this org`);
    // The desc round lists the asc round's inserts as well.
    seeded.push(...inserted);
  }
});

// ---------------------------------------------------------------------------------------------

inbox('ack: 200 with acknowledged_at; idempotent (same acknowledged_at); leaves the default inbox; GET shows it', async ({ server, key }) => {
  const id = await send(server, key, 'ack.one', { a: 1 });
  assert.ok(ids(await listAll(server, key, 'type=ack.one')).includes(id));
  const first = await server.request('POST', `/api/ack/${id}`, { key });
  assert.is(first.status, 200, first.text);
  assert.equal(Object.keys(first.body).sort(), ['acknowledged_at', 'id', 'status']);
  assert.is(first.body.id, id);
  assert.is(first.body.status, 'acknowledged');
  assert.match(first.body.acknowledged_at, ISO);
  const again = await server.request('POST', `/api/ack/${id}`, { key });
  assert.is(again.status, 200, again.text);
  assert.is(again.body.acknowledged_at, first.body.acknowledged_at, 'a second ack keeps the first acknowledged_at');
  assert.not.ok(ids(await listAll(server, key, 'type=ack.one')).includes(id), 'acked event still in the default inbox');
  assert.ok(ids(await listAll(server, key, 'type=ack.one&status=acknowledged')).includes(id));
  const read = await server.request('GET', `/api/events/${id}`, { key });
  assert.is(read.status, 200, read.text);
  assert.is(read.body.status, 'acknowledged');
  assert.is(read.body.acknowledged_at, first.body.acknowledged_at);
  // Upper-case spelling of the same id.
  const upper = await server.request('POST', `/api/ack/${id.toUpperCase()}`, { key });
  assert.is(upper.status, 200, upper.text);
  assert.is(upper.body.id, id);
  assert.is(upper.body.acknowledged_at, first.body.acknowledged_at);
});

inbox('ack: unknown id → 404 not_found; malformed → 400 invalid_id; no key → 401', async ({ server, key }) => {
  expectError(await server.request('POST', `/api/ack/${UNKNOWN_ID}`, { key }), 404, 'not_found');
  for (const bad of ['not-a-uuid', '123', `${UNKNOWN_ID}0`, UNKNOWN_ID.replaceAll('-', '')]) {
    expectError(await server.request('POST', `/api/ack/${bad}`, { key }), 400, 'invalid_id');
  }
  expectError(await server.request('POST', `/api/ack/${UNKNOWN_ID}`), 401, 'missing_api_key');
});

inbox('a read-your-writes read does not wait out PERSIST_LINGER: it has the drain ship the log at once', async ({ slow, key }) => {
  const id = await send(slow, key, 'linger.cut');
  assert.equal(stillInLog(slow.dataDir, [id]), [id], 'the event left the log before the read: the scenario was not exercised');
  // Without the cut the drain would wait 60 s, and the read would give up after 5 s with a 503.
  const listed = await listOk(slow, key, 'type=linger.cut');
  assert.equal(listed.events.map((event) => event.id), [id]);
});

inbox('ack right after the 202, while the event is still only in the log, acknowledges it (single and batch)', async ({ slow, key, db }) => {
  let inLogAtAck = 0;
  for (let i = 0; i < 5; i++) {
    const sent = await slow.request('POST', '/api/events', { key, body: { type: 'ack.early', payload: { i } } });
    assert.is(sent.status, 202, sent.text);
    const id = sent.body.id as string;
    inLogAtAck += stillInLog(slow.dataDir, [id]).length;
    const acked = await slow.request('POST', `/api/ack/${id}`, { key });
    assert.is(acked.status, 200, `ack right after 202: ${acked.text}`);
    assert.is(acked.body.status, 'acknowledged');
    const read = await slow.request('GET', `/api/events/${id}`, { key });
    assert.is(read.body.status, 'acknowledged', read.text);
    const [row] = await db.sql<{ status: string }[]>`select status from events where id = ${id}`;
    assert.is(row?.status, 'acknowledged');
  }
  const batchIds = [await send(slow, key, 'ack.early.batch'), await send(slow, key, 'ack.early.batch')];
  inLogAtAck += stillInLog(slow.dataDir, batchIds).length;
  const batch = await slow.request('POST', '/api/ack', { key, body: { ids: batchIds } });
  assert.is(batch.status, 200, batch.text);
  assert.equal(batch.body, { acknowledged: batchIds, not_found: [] });
  assert.ok(inLogAtAck > 0, 'no ack ran before the drain: the scenario was not exercised');
});

inbox('ack immediately after each 202, 400 times over 32 parallel clients: never a 404 for an accepted event', async ({ server, db }) => {
  const key = await newKey(server, 'ack race org');
  const problems: string[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < 400) {
      next++;
      const sent = await sendOne(server.url, { path: '/api/events', key, body: { type: 'ack.race', payload: {} } });
      if (sent.reply?.status !== 202) {
        problems.push(`POST: ${sent.error ?? sent.reply?.text}`);
        continue;
      }
      const id = sent.reply.body.id as string;
      const acked = await sendOne(server.url, { path: `/api/ack/${id}`, key });
      if (acked.reply?.status !== 200) problems.push(`ack ${id}: ${acked.error ?? `${acked.reply?.status} ${acked.reply?.text}`}`);
    }
  }));
  if (problems.length > 0) {
    // Tell the failure modes apart: never drained (still only in the log) or in Postgres.
    const failedIds = problems.map((problem) => /^ack (\S+):/.exec(problem)?.[1]).filter((id): id is string => id !== undefined);
    assert.unreachable(`${problems.length} of 400 acks failed — ${await whereAre(server, db, failedIds)}\n${problems.slice(0, 5).join('\n')}`);
  }
});

inbox('batch ack: {acknowledged, not_found} for own, unknown and foreign ids; limits and body shape', async ({ server, key, otherKey }) => {
  const own = [await send(server, key, 'ack.batch'), await send(server, key, 'ack.batch')];
  const foreign = await send(server, otherKey, 'ack.batch');
  const reply = await server.request('POST', '/api/ack', { key, body: { ids: [own[0], UNKNOWN_ID, foreign, own[1], own[0]] } });
  assert.is(reply.status, 200, reply.text);
  assert.equal(sorted(reply.body.acknowledged), sorted(own));
  assert.equal(sorted(reply.body.not_found), sorted([UNKNOWN_ID, foreign]));
  // Acking again: still acknowledged (idempotent).
  const again = await server.request('POST', '/api/ack', { key, body: { ids: own } });
  assert.equal(sorted(again.body.acknowledged), sorted(own));
  assert.equal(again.body.not_found, []);
  // The foreign event was not touched.
  const theirs = await server.request('GET', `/api/events/${foreign}`, { key: otherKey });
  assert.is(theirs.body.status, 'pending', theirs.text);
  // Empty list.
  const empty = await server.request('POST', '/api/ack', { key, body: { ids: [] } });
  assert.is(empty.status, 200, empty.text);
  assert.equal(empty.body, { acknowledged: [], not_found: [] });
  // 1000 ids is the maximum; 1001 is refused.
  const thousand = Array.from({ length: 1000 }, (_, i) => `01a212e5-76c4-701a-a75e-${String(i).padStart(12, '0')}`);
  const max = await server.request('POST', '/api/ack', { key, body: { ids: thousand } });
  assert.is(max.status, 200, max.text);
  assert.is(max.body.not_found.length, 1000);
  const over = await server.request('POST', '/api/ack', { key, body: { ids: [...thousand, UNKNOWN_ID] } });
  assert.is(expectError(over, 400, 'validation_error').field, 'ids');
  for (const body of [{ ids: 'x' }, { ids: { 0: UNKNOWN_ID } }, {}, [UNKNOWN_ID], { ids: null }, { ids: [42] }, { ids: ['not-a-uuid'] }]) {
    const bad = await server.request('POST', '/api/ack', { key, body });
    assert.is(bad.status, 400, `${JSON.stringify(body)}: ${bad.status} ${bad.text}`);
    assert.is(bad.body.field, 'ids', `${JSON.stringify(body)}: ${bad.text}`);
  }
  expectError(await server.request('POST', '/api/ack', { key, raw: '{"ids": [', headers: { 'content-type': 'application/json' } }), 400, 'invalid_json');
  expectError(await server.request('POST', '/api/ack', { body: { ids: [] } }), 401, 'missing_api_key');
});

inbox('tenancy: another org\'s event is 404 on GET and ack, not_found in batch ack, and never in this org\'s inbox', async ({ server, key, otherKey }) => {
  const theirs = await send(server, otherKey, 'tenant.secret', { secret: true });
  const ours = await send(server, key, 'tenant.mine');
  expectError(await server.request('GET', `/api/events/${theirs}`, { key }), 404, 'not_found');
  expectError(await server.request('POST', `/api/ack/${theirs}`, { key }), 404, 'not_found');
  const batch = await server.request('POST', '/api/ack', { key, body: { ids: [theirs] } });
  assert.equal(batch.body, { acknowledged: [], not_found: [theirs] });
  for (const query of ['status=all', 'status=all&order=desc', '', 'status=pending', 'type=tenant.secret&status=all']) {
    const visible = await listAll(server, key, query);
    assert.not.ok(ids(visible).includes(theirs), `?${query} shows another org's event`);
    assert.not.ok(visible.some((event) => event.type === 'tenant.secret'), `?${query}`);
  }
  assert.ok(ids(await listAll(server, key, 'status=all')).includes(ours));
  // The owner still sees it, pending (not acknowledged by the other org's attempts).
  const owner = await listAll(server, otherKey, 'type=tenant.secret');
  assert.equal(ids(owner), [theirs]);
  assert.is(owner[0]!.status, 'pending');
});

inbox('injection-shaped strings in every parameter: 400s as appropriate (a type is just a value), never 500; events table intact', async ({ server, key, db }) => {
  const { key: canaryKey, organizationId: canaryOrg } = await server.createKey('enterprise', 'injection canary org');
  const canaries = await sendBatch(server, canaryKey, Array.from({ length: 5 }, (_, i) => ({ type: 'injection.canary', payload: { i } })));
  // Read-your-writes: listed means in Postgres. Other orgs' rows may still be draining in, so the
  // total can only grow; the canary org's count must stay exactly the same.
  assert.is((await listAll(server, canaryKey, 'status=all')).length, 5);
  const before = await eventsTable(db, canaryOrg);
  const q = (name: string, value: string) => `${name}=${encodeURIComponent(value)}`;
  const cases: Array<[string, number, string, string?]> = [
    [q('status', "pending' OR '1'='1"), 400, 'validation_error', 'status'],
    [q('status', "all; drop table events;--"), 400, 'validation_error', 'status'],
    [q('limit', '1;select'), 400, 'validation_error', 'limit'],
    [q('limit', '1 OR 1=1'), 400, 'validation_error', 'limit'],
    [q('order', 'asc;'), 400, 'validation_error', 'order'],
    [q('order', 'asc, (select 1)'), 400, 'validation_error', 'order'],
    [q('cursor', "' OR 1=1--"), 400, 'invalid_cursor'],
    [q('type', 'x\u0000y'), 400, 'validation_error', 'type'],
  ];
  for (const [query, status, code, field] of cases) {
    const reply = await list(server, key, query);
    const body = expectError(reply, status, code);
    if (field) assert.is(body.field, field, `${query}: ${reply.text}`);
  }
  for (const type of ["x'; drop table events;--", "' OR '1'='1", 'injection.canary\' OR type <> \'', '%', '_', '\\']) {
    for (const status of ['', '&status=all']) {
      const reply = await list(server, key, `${q('type', type)}${status}`);
      assert.is(reply.status, 200, `type=${type}: ${reply.text}`);
      assert.equal(reply.body.events, [], `type=${type}${status} matched events`);
    }
  }
  const path = encodeURIComponent("1' OR '1'='1");
  expectError(await server.request('GET', `/api/events/${path}`, { key }), 400, 'invalid_id');
  expectError(await server.request('POST', `/api/ack/${path}`, { key }), 400, 'invalid_id');
  expectError(await server.request('GET', `/api/events/${encodeURIComponent(`${UNKNOWN_ID}' OR '1'='1`)}`, { key }), 400, 'invalid_id');
  const batch = await server.request('POST', '/api/ack', { key, body: { ids: ["1' OR '1'='1", `${UNKNOWN_ID}'); delete from events;--`] } });
  assert.is(batch.status, 400, batch.text);
  const after = await eventsTable(db, canaryOrg);
  assert.is(after.org, before.org, 'rows of the canary org changed');
  assert.ok(after.total >= before.total, `the events table lost rows: ${before.total} → ${after.total}`);
  assert.equal(sorted(ids(await listAll(server, canaryKey, 'status=all'))), sorted(canaries), 'the canary events are still listed, unchanged');
  const statuses = await db.sql<{ status: string }[]>`select distinct status from events where organization_id = ${canaryOrg}`;
  assert.equal(statuses.map((row) => row.status), ['pending'], 'the canary events were modified');
});

inbox.run();
