// Dedup is exact: racing requests with one dedup_id give one 202 and 409s that name its id, on one
// thread or across acceptor threads, singles racing batches; and a dedup_id is forgotten after
// DEDUP_WINDOW (the original event stays readable).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { burst, tally, type LoadRequest, type Outcome } from './helpers/load.ts';
import { expectError, TestServer, useTestDatabase, waitFor, type TestDatabase } from './helpers/server.ts';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Ctx {
  db: TestDatabase;
  single: TestServer;
  threaded: TestServer;
  windowed: TestServer;
}

const dedup = suite<Ctx>('dedup');

useTestDatabase(dedup, async (ctx) => {
  // Settled one by one, so that the servers that did start are in ctx (and closed) if one fails.
  const started = await Promise.allSettled([
    TestServer.start(ctx.db.url),
    TestServer.start(ctx.db.url, { ACCEPTOR_THREADS: '2' }),
    TestServer.start(ctx.db.url, { DEDUP_WINDOW: '2s' }),
  ]);
  const [single, threaded, windowed] = started.map((result) => (result.status === 'fulfilled' ? result.value : undefined));
  Object.assign(ctx, { single, threaded, windowed });
  const failed = started.find((result) => result.status === 'rejected');
  if (failed) throw failed.reason;
});

let orgs = 0;
const newKey = async (server: TestServer) => (await server.createKey('enterprise', `dedup org ${++orgs}`)).key;

/** Asserts one 202 and only 409 duplicate_event naming its id; returns the winner's id. */
function oneWinner(outcomes: readonly Outcome[], what: string): string {
  const counts = tally(outcomes);
  const winners = outcomes.filter((outcome) => outcome.reply?.status === 202);
  assert.is(winners.length, 1, `${what}: ${JSON.stringify(counts)}`);
  assert.is(counts['409'], outcomes.length - 1, `${what}: ${JSON.stringify(counts)}`);
  const id = winners[0]!.reply!.body.id as string;
  assert.match(id, UUID_V7);
  for (const { reply } of outcomes) {
    if (reply!.status !== 409) continue;
    assert.is(reply!.body.code, 'duplicate_event', reply!.text);
    assert.type(reply!.body.error, 'string');
    assert.is(reply!.body.id, id, `${what}: a 409 names another id than the 202`);
  }
  return id;
}

async function readBack(server: TestServer, key: string, id: string, dedupId: string): Promise<any> {
  const read = await server.request('GET', `/api/events/${id}`, { key });
  assert.is(read.status, 200, read.text);
  assert.is(read.body.id, id);
  assert.is(read.body.dedup_id, dedupId);
  return read.body;
}

dedup('100 concurrent requests with one dedup_id over 100 connections: one 202, 99 × 409 with its id', async ({ single }) => {
  const key = await newKey(single);
  const requests: LoadRequest[] = Array.from({ length: 100 }, (_, n) => ({ path: '/api/events', key, body: { type: 'dedup.race', payload: { n }, dedup_id: 'race-1' } }));
  const outcomes = await burst(single.url, requests);
  const id = oneWinner(outcomes, 'single thread');
  const stored = await readBack(single, key, id, 'race-1');
  // The stored event is the winner's own request, not one of the losers'.
  const winner = outcomes.find((outcome) => outcome.reply?.status === 202)!;
  assert.equal(stored.payload, (winner.request.body as { payload: unknown }).payload);
});

dedup('cross-thread race (ACCEPTOR_THREADS=2): 10 dedup_ids × 30 racing requests, one winner each', async ({ threaded }) => {
  const key = await newKey(threaded);
  const ids = Array.from({ length: 10 }, (_, i) => `cross-${i}`);
  // Interleaved so that requests for the same dedup_id sit on different connections and threads.
  const requests: LoadRequest[] = Array.from({ length: 300 }, (_, n) => ({
    path: '/api/events',
    key,
    body: { type: 'dedup.cross', payload: { n }, dedup_id: ids[n % ids.length] },
  }));
  const outcomes = await burst(threaded.url, requests);
  assert.equal(tally(outcomes), { 202: 10, 409: 290 });
  for (const dedupId of ids) {
    const group = outcomes.filter((outcome) => (outcome.request.body as { dedup_id: string }).dedup_id === dedupId);
    const id = oneWinner(group, dedupId);
    await readBack(threaded, key, id, dedupId);
  }
});

dedup('batches racing singles (2 threads): each dedup_id is accepted once, every duplicate names the winner', async ({ threaded }) => {
  const key = await newKey(threaded);
  const ids = Array.from({ length: 8 }, (_, i) => `mixed-${i}`);
  const requests: LoadRequest[] = [];
  for (let b = 0; b < 20; b++) {
    // Each batch holds every dedup_id, the first one twice (first of two equal ids wins in a batch).
    const events = [...ids, ids[0]!].map((dedupId, i) => ({ type: 'dedup.batch', payload: { b, i }, dedup_id: dedupId }));
    requests.push({ path: '/api/events/batch', key, body: { events } });
  }
  for (let n = 0; n < 80; n++) {
    requests.push({ path: '/api/events', key, body: { type: 'dedup.single', payload: { n }, dedup_id: ids[n % ids.length] } });
  }
  // Shuffle deterministically so batches and singles interleave on the wire.
  const order = requests.map((request, i) => ({ request, sortKey: (i * 7919) % requests.length }));
  order.sort((a, b) => a.sortKey - b.sortKey);
  const outcomes = await burst(threaded.url, order.map((o) => o.request));

  type Verdict = { dedupId: string; accepted: boolean; id: string | undefined; where: string };
  const verdicts: Verdict[] = [];
  for (const { request, reply, error } of outcomes) {
    assert.ok(reply, `transport error: ${error}`);
    const body = request.body as any;
    if (request.path === '/api/events') {
      assert.ok(reply.status === 202 || reply.status === 409, reply.text);
      verdicts.push({ dedupId: body.dedup_id, accepted: reply.status === 202, id: reply.body.id, where: `single ${reply.text}` });
    } else {
      assert.is(reply.status, 200, reply.text);
      const sent = body.events as Array<{ dedup_id: string }>;
      assert.is(reply.body.results.length, sent.length);
      for (const result of reply.body.results) {
        const dedupId = sent[result.index]!.dedup_id;
        if (result.status === 'accepted') verdicts.push({ dedupId, accepted: true, id: result.id, where: `batch ${JSON.stringify(result)}` });
        else {
          assert.is(result.code, 'duplicate_event', JSON.stringify(result));
          verdicts.push({ dedupId, accepted: false, id: result.id, where: `batch ${JSON.stringify(result)}` });
        }
      }
    }
  }
  for (const dedupId of ids) {
    const group = verdicts.filter((verdict) => verdict.dedupId === dedupId);
    const winners = group.filter((verdict) => verdict.accepted);
    assert.is(winners.length, 1, `${dedupId} accepted ${winners.length} times`);
    const winnerId = winners[0]!.id!;
    for (const verdict of group) {
      if (!verdict.accepted) assert.is(verdict.id, winnerId, `${dedupId}: duplicate names ${verdict.id}, winner is ${winnerId} (${verdict.where})`);
    }
    await readBack(threaded, key, winnerId, dedupId);
  }
});

dedup('a batch repeating a dedup_id already accepted: both entries are 409 naming the original id', async ({ single }) => {
  const key = await newKey(single);
  const original = await single.request('POST', '/api/events', { key, body: { type: 'a', payload: {}, dedup_id: 'seen' } });
  assert.is(original.status, 202, original.text);
  const batch = await single.request('POST', '/api/events/batch', {
    key,
    body: { events: [{ type: 'b', payload: {}, dedup_id: 'seen' }, { type: 'c', payload: {}, dedup_id: 'seen' }, { type: 'd', payload: {}, dedup_id: 'fresh' }, { type: 'e', payload: {}, dedup_id: 'fresh' }] },
  });
  assert.is(batch.status, 200, batch.text);
  const [first, second, third, fourth] = batch.body.results;
  assert.is(first.code, 'duplicate_event');
  assert.is(first.id, original.body.id);
  assert.is(second.code, 'duplicate_event');
  assert.is(second.id, original.body.id, 'the second copy in the batch must name the stored event, not a never-stored id');
  assert.is(third.status, 'accepted');
  assert.is(fourth.code, 'duplicate_event');
  assert.is(fourth.id, third.id);
  assert.is(batch.body.accepted, 1);
  assert.is(batch.body.rejected, 3);
  await readBack(single, key, third.id, 'fresh');
});

dedup('a dedup_id still holds after its event drained to Postgres and left the log', async ({ single, db }) => {
  const key = await newKey(single);
  const sent = await single.request('POST', '/api/events', { key, body: { type: 'drained', payload: { v: 1 }, dedup_id: 'drained-1' } });
  assert.is(sent.status, 202, sent.text);
  await waitFor('the event in Postgres and the log backlog drained', async () => {
    const [row] = await db.sql`select count(*)::int as n from events where id = ${sent.body.id}`;
    const ready = await single.request('GET', '/health/ready');
    return row?.n === 1 && ready.body?.backlog === 0;
  });
  const again = await single.request('POST', '/api/events', { key, body: { type: 'drained', payload: { v: 2 }, dedup_id: 'drained-1' } });
  expectError(again, 409, 'duplicate_event');
  assert.is(again.body.id, sent.body.id);
  const stored = await readBack(single, key, sent.body.id, 'drained-1');
  assert.equal(stored.payload, { v: 1 });
});

dedup('DEDUP_WINDOW=2s: the dedup_id is refused inside the window, accepted again after it with a new id', async ({ windowed }) => {
  const key = await newKey(windowed);
  const sent = await windowed.request('POST', '/api/events', { key, body: { type: 'window', payload: { round: 1 }, dedup_id: 'expiring' } });
  assert.is(sent.status, 202, sent.text);
  const originalId: string = sent.body.id;
  const acceptedAt = Date.parse(sent.body.received_at);

  const duplicate = await windowed.request('POST', '/api/events', { key, body: { type: 'window', payload: { round: 2 }, dedup_id: 'expiring' } });
  expectError(duplicate, 409, 'duplicate_event');
  assert.is(duplicate.body.id, originalId);

  // waitFor swallows probe errors, so 409s naming a wrong id are collected and checked after.
  const wrongIds: string[] = [];
  const again = await waitFor('the dedup_id to expire', async () => {
    const reply = await windowed.request('POST', '/api/events', { key, body: { type: 'window', payload: { round: 3 }, dedup_id: 'expiring' } });
    if (reply.status === 409) {
      if (reply.body?.id !== originalId) wrongIds.push(reply.text);
      return null;
    }
    return reply;
  }, 8_000, 50);
  assert.equal(wrongIds, [], 'every 409 inside the window names the original id');
  assert.is(again.status, 202, again.text);
  assert.is.not(again.body.id, originalId);
  const elapsed = Date.parse(again.body.received_at) - acceptedAt;
  assert.ok(elapsed >= 2_000, `accepted again after ${elapsed} ms, inside the 2 s window`);

  // The original event is untouched and still readable; the new one too.
  const original = await readBack(windowed, key, originalId, 'expiring');
  assert.equal(original.payload, { round: 1 });
  const renewed = await readBack(windowed, key, again.body.id, 'expiring');
  assert.equal(renewed.payload, { round: 3 });

  // A new window starts with the new event.
  const after = await windowed.request('POST', '/api/events', { key, body: { type: 'window', payload: { round: 4 }, dedup_id: 'expiring' } });
  expectError(after, 409, 'duplicate_event');
  assert.is(after.body.id, again.body.id);
});

dedup.run();
