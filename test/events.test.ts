import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { expectError, TestServer, useTestDatabase, type TestDatabase } from './helpers/server.ts';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const events = suite<{ db: TestDatabase; server: TestServer; key: string; otherKey: string }>('events');

useTestDatabase(events, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url);
  ctx.key = (await ctx.server.createKey('enterprise')).key;
  ctx.otherKey = (await ctx.server.createKey('enterprise', 'other org')).key;
});

events('202 carries a UUIDv7 id, status and received_at, plus rate-limit headers', async ({ server, key }) => {
  const before = Date.now();
  const reply = await server.request('POST', '/api/events', { key, body: { type: 'order.created', payload: { n: 1 } } });
  assert.is(reply.status, 202, reply.text);
  assert.match(reply.body.id, UUID_V7);
  assert.is(reply.body.status, 'accepted');
  const received = Date.parse(reply.body.received_at);
  assert.ok(received >= before - 5 && received <= Date.now() + 5, reply.body.received_at);
  for (const header of ['ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset', 'x-ratelimit-limit', 'x-ratelimit-remaining']) {
    assert.ok(reply.headers.get(header) !== null, `missing ${header}`);
  }
  assert.is(reply.headers.get('ratelimit-limit'), '100000');
});

events('the id of the 202 reads back the same event; another org gets 404', async ({ server, key, otherKey }) => {
  const payload = { nested: { list: [1, 2.5, 'é', null, true] }, emoji: '🚀' };
  const sent = await server.request('POST', '/api/events', { key, body: { type: 'thing.done', payload, dedup_id: 'read-back-1' } });
  assert.is(sent.status, 202);
  const read = await server.request('GET', `/api/events/${sent.body.id}`, { key });
  assert.is(read.status, 200, read.text);
  assert.is(read.body.id, sent.body.id);
  assert.is(read.body.type, 'thing.done');
  assert.equal(read.body.payload, payload);
  assert.is(read.body.dedup_id, 'read-back-1');
  assert.is(read.body.status, 'pending');
  assert.is(read.body.created_at, sent.body.received_at);
  assert.equal(read.body.attempts, []);
  expectError(await server.request('GET', `/api/events/${sent.body.id}`, { key: otherKey }), 404, 'not_found');
});

events('GET /api/events/:id: malformed id 400, unknown id 404', async ({ server, key }) => {
  expectError(await server.request('GET', '/api/events/not-a-uuid', { key }), 400, 'invalid_id');
  expectError(await server.request('GET', '/api/events/01a212e5-76c4-701a-a75e-e9a00a5b5567', { key }), 404, 'not_found');
});

events('older clients: `data` is accepted as an alias of `payload`', async ({ server, key }) => {
  const sent = await server.request('POST', '/api/events', { key, body: { type: 'legacy', data: { a: 1 } } });
  assert.is(sent.status, 202, sent.text);
  const read = await server.request('GET', `/api/events/${sent.body.id}`, { key });
  assert.equal(read.body.payload, { a: 1 });
});

events.run();
