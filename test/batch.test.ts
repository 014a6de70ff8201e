// POST /api/events/batch against the real server: per-index results, counts, dedup inside a batch
// and against earlier events, the 1000-event and 5 MiB limits, rate-limit headers on every answer,
// and a free-tier batch that runs out of tokens half-way.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  AcceptedEvents,
  assertError,
  assertAccepted,
  assertHealthy,
  assertRateHeaders,
  assertStoredInPostgres,
  MAX_PAYLOAD_BYTES,
  metric,
  nestedObject,
  payloadOfBytes,
  post,
  sentJson,
  UUID_V7,
} from './helpers/ingest.ts';
import { settlesWithin, streamPartial, type RawReply } from './helpers/raw-http.ts';
import { useTestDatabase, TestServer, type TestDatabase } from './helpers/server.ts';

interface Ctx {
  db: TestDatabase;
  server: TestServer;
  key: string;
  otherKey: string;
}

interface Result {
  index: number;
  id?: string;
  status?: string;
  code?: string;
  error?: string;
  field?: string;
}

const MiB = 1024 * 1024;
const batch = suite<Ctx>('batch');

useTestDatabase(batch, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url);
  ctx.key = (await ctx.server.createKey('enterprise', 'batch org')).key;
  ctx.otherKey = (await ctx.server.createKey('enterprise', 'batch other org')).key;
});

/** Every event this file saw accepted, with what was sent: checked against Postgres at the end. */
const acceptedEvents = new AcceptedEvents();

/** POSTs a batch; every answer, whatever its status, must carry the rate-limit headers. */
async function sendBatch(ctx: Ctx, body: { json?: unknown; raw?: string | Buffer; contentType?: string | null }, key = ctx.key): Promise<RawReply> {
  const reply = await post(ctx.server, '/api/events/batch', { key, timeoutMs: 30_000, ...body });
  assertRateHeaders(reply);
  if (reply.status === 200 && Array.isArray(reply.body?.results)) {
    const sent = sentJson(body) as { events: any[] };
    for (const result of reply.body.results as Result[]) {
      if (result.status === 'accepted') acceptedEvents.record(result.id!, sent.events[result.index]);
    }
  }
  return reply;
}

/** Checks the 200 answer's shape and returns its results, indexed as sent. */
function results(reply: RawReply, count: number): Result[] {
  const summary = `${reply.status} ${reply.text.slice(0, 500)}`;
  assert.is(reply.status, 200, summary);
  const { accepted, rejected, results } = reply.body as { accepted: number; rejected: number; results: Result[] };
  assert.ok(Array.isArray(results), summary);
  assert.is(results.length, count, summary);
  assert.is(accepted + rejected, count, summary);
  results.forEach((result, i) => {
    assert.is(result.index, i, `results[${i}] has index ${result.index}`);
    if (result.status === 'accepted') {
      assert.match(result.id ?? '', UUID_V7, `results[${i}]`);
      assert.is(result.code, undefined, `accepted results[${i}] carries a code`);
    } else {
      assert.type(result.code, 'string', `results[${i}]: ${JSON.stringify(result)}`);
      assert.type(result.error, 'string', `results[${i}]: ${JSON.stringify(result)}`);
      assert.ok(result.error!.length > 0);
      assert.is(result.status, undefined, `rejected results[${i}] carries a status`);
    }
  });
  assert.is(results.filter((result) => result.status === 'accepted').length, accepted, 'accepted count');
  assert.is(results.filter((result) => result.status !== 'accepted').length, rejected, 'rejected count');
  return results;
}

function rejected(result: Result | undefined, code: string, field?: string): Result {
  assert.ok(result, 'missing result');
  assert.is(result!.code, code, JSON.stringify(result));
  if (field !== undefined) assert.is(result!.field, field, JSON.stringify(result));
  return result!;
}

async function readBack(ctx: Ctx, id: string, key = ctx.key): Promise<any> {
  const reply = await ctx.server.request('GET', `/api/events/${id}`, { key });
  assert.is(reply.status, 200, `GET ${id}: ${reply.status} ${reply.text}`);
  return reply.body;
}

batch('results per index: accepted with id and status, rejected with code, error and field', async (ctx) => {
  const events = [
    { type: 'ok.0', payload: { n: 0 } },
    { payload: {} },
    { type: 'ok.2', payload: { n: 2 }, dedup_id: 'batch-shape-2' },
    { type: 'bad.payload', payload: [1] },
    { type: 'x'.repeat(256), payload: {} },
    { type: 'ok.5', data: { legacy: true } },
    'not an object',
    { type: 't', payload: {}, dedup_id: 7 },
    { type: 'big', payload: payloadOfBytes(MAX_PAYLOAD_BYTES + 1) },
    { type: 'deep', payload: nestedObject(65) },
    { type: 'ok.10', payload: nestedObject(64) },
    null,
  ];
  const list = results(await sendBatch(ctx, { json: { events } }), events.length);
  assert.is(list.filter((r) => r.status === 'accepted').length, 4);
  rejected(list[1], 'validation_error', 'type');
  rejected(list[3], 'validation_error', 'payload');
  rejected(list[4], 'validation_error', 'type');
  rejected(list[6], 'validation_error');
  rejected(list[7], 'validation_error', 'dedup_id');
  rejected(list[8], 'payload_too_large');
  rejected(list[9], 'validation_error', 'payload');
  rejected(list[11], 'validation_error');
  // Every accepted id reads back as the event sent at that index.
  for (const index of [0, 2, 5, 10]) {
    const result = list[index]!;
    assert.is(result.status, 'accepted', `results[${index}]: ${JSON.stringify(result)}`);
    const read = await readBack(ctx, result.id!);
    const sent = events[index] as { type: string; payload?: unknown; data?: unknown; dedup_id?: string };
    assert.is(read.id, result.id);
    assert.is(read.type, sent.type);
    assert.equal(read.payload, sent.payload ?? sent.data);
    assert.is(read.dedup_id, sent.dedup_id ?? null);
  }
  assert.is(new Set(list.filter((r) => r.id).map((r) => r.id)).size, 4, 'accepted ids are distinct');
});

batch('items jsonb cannot store (1e400, lone surrogates, U+0000) are rejected one by one', async (ctx) => {
  const raw =
    '{"events":[' +
    '{"type":"a","payload":{"n":1e400}},' +
    '{"type":"b","payload":{"s":"\\ud800"}},' +
    '{"type":"c","payload":{"\\u0000":1}},' +
    '{"type":"d\\u0000","payload":{}},' +
    '{"type":"e","payload":{"a":[{"b":-1e400}]}},' +
    '{"type":"f","payload":{"\\udfff":true}},' +
    '{"type":"ok","payload":{"pair":"\\ud83d\\ude00","n":1e308}}' +
    ']}';
  const list = results(await sendBatch(ctx, { raw }), 7);
  for (const index of [0, 1, 2, 4, 5]) rejected(list[index], 'validation_error', 'payload');
  rejected(list[3], 'validation_error', 'type');
  assert.is(list[6]!.status, 'accepted', JSON.stringify(list[6]));
  assert.equal((await readBack(ctx, list[6]!.id!)).payload, { pair: '😀', n: 1e308 });
});

batch('within one batch the first of two equal dedup_ids wins; the second gets duplicate_event with its id', async (ctx) => {
  const events = [
    { type: 'first', payload: { n: 1 }, dedup_id: 'same-in-batch' },
    { type: 'plain', payload: {} },
    { type: 'second', payload: { n: 2 }, dedup_id: 'same-in-batch' },
    { type: 'third', payload: { n: 3 }, dedup_id: 'same-in-batch' },
  ];
  const list = results(await sendBatch(ctx, { json: { events } }), 4);
  assert.is(list[0]!.status, 'accepted');
  assert.is(list[1]!.status, 'accepted');
  assert.is(rejected(list[2], 'duplicate_event').id, list[0]!.id);
  assert.is(rejected(list[3], 'duplicate_event').id, list[0]!.id);
  const read = await readBack(ctx, list[0]!.id!);
  assert.is(read.type, 'first');
  assert.equal(read.payload, { n: 1 });
  // And later: a single POST with that dedup_id is a 409 naming the batch's event.
  const single = await post(ctx.server, '/api/events', { key: ctx.key, json: { type: 'late', payload: {}, dedup_id: 'same-in-batch' } });
  assert.is(assertError(single, 409, 'duplicate_event').id, list[0]!.id);
});

batch('a dedup_id already used by an earlier single POST is a duplicate_event carrying that id', async (ctx) => {
  const original = assertAccepted(await post(ctx.server, '/api/events', { key: ctx.key, json: { type: 'single', payload: { n: 1 }, dedup_id: 'earlier-single' } }));
  const list = results(
    await sendBatch(ctx, { json: { events: [{ type: 'retry', payload: { n: 2 }, dedup_id: 'earlier-single' }, { type: 'fresh', payload: {}, dedup_id: 'earlier-fresh' }] } }),
    2,
  );
  assert.is(rejected(list[0], 'duplicate_event').id, original);
  assert.is(list[1]!.status, 'accepted');
  assert.equal((await readBack(ctx, original)).payload, { n: 1 });
});

batch('an earlier dedup_id sent twice in one batch: both copies name the original event, never a phantom id', async (ctx) => {
  const original = assertAccepted(await post(ctx.server, '/api/events', { key: ctx.key, json: { type: 'single', payload: {}, dedup_id: 'earlier-twice' } }));
  const events = [
    { type: 'retry.1', payload: {}, dedup_id: 'earlier-twice' },
    { type: 'retry.2', payload: {}, dedup_id: 'earlier-twice' },
  ];
  const list = results(await sendBatch(ctx, { json: { events } }), 2);
  assert.is(rejected(list[0], 'duplicate_event').id, original);
  // The id of a duplicate must be an event the client can read.
  const second = rejected(list[1], 'duplicate_event');
  assert.is(second.id, original, `the second copy names ${second.id}, which is not the stored original ${original}`);
});

batch('the same dedup_id from another org is not a duplicate', async (ctx) => {
  const mine = results(await sendBatch(ctx, { json: { events: [{ type: 't', payload: {}, dedup_id: 'cross-org' }] } }), 1);
  const theirs = results(await sendBatch(ctx, { json: { events: [{ type: 't', payload: {}, dedup_id: 'cross-org' }] } }, ctx.otherKey), 1);
  assert.is(mine[0]!.status, 'accepted');
  assert.is(theirs[0]!.status, 'accepted', JSON.stringify(theirs[0]));
  assert.is.not(theirs[0]!.id, mine[0]!.id);
  await readBack(ctx, theirs[0]!.id!, ctx.otherKey);
  const foreign = await ctx.server.request('GET', `/api/events/${theirs[0]!.id}`, { key: ctx.key });
  assert.is(foreign.status, 404);
});

batch('1000 events are accepted, each durable and readable by its id', async (ctx) => {
  const events = Array.from({ length: 1000 }, (_, i) => ({ type: `bulk.${i % 7}`, payload: { i, tag: 'bulk' }, ...(i % 3 === 0 ? { dedup_id: `bulk-${i}` } : {}) }));
  const acceptedBefore = await metric(ctx.server, 'triggers_events_accepted_total');
  const reply = await sendBatch(ctx, { json: { events } });
  const list = results(reply, 1000);
  assert.is(reply.body.accepted, 1000);
  assert.is(reply.body.rejected, 0);
  assert.is(new Set(list.map((r) => r.id)).size, 1000, 'ids are distinct');
  assert.is(await metric(ctx.server, 'triggers_events_accepted_total'), acceptedBefore + 1000);
  // Read every one back, 25 at a time.
  for (let start = 0; start < 1000; start += 25) {
    await Promise.all(
      list.slice(start, start + 25).map(async (result) => {
        const read = await readBack(ctx, result.id!);
        const sent = events[result.index]!;
        assert.is(read.type, sent.type);
        assert.equal(read.payload, sent.payload);
        assert.is(read.dedup_id, sent.dedup_id ?? null);
      }),
    );
  }
});

batch('more than 1000 events → 400 validation_error (field events) and nothing is accepted', async (ctx) => {
  const acceptedBefore = await metric(ctx.server, 'triggers_events_accepted_total');
  const events = Array.from({ length: 1001 }, (_, i) => ({ type: 'over', payload: { i } }));
  assertError(await sendBatch(ctx, { json: { events } }), 400, 'validation_error', 'events');
  assert.is(await metric(ctx.server, 'triggers_events_accepted_total'), acceptedBefore);
});

batch('a body that is not {events: [...]} → 400 validation_error (field events)', async (ctx) => {
  const acceptedBefore = await metric(ctx.server, 'triggers_events_accepted_total');
  const bodies: unknown[] = [
    [{ type: 't', payload: {} }],
    {},
    { events: { 0: { type: 't', payload: {} } } },
    { events: 'x' },
    { events: null },
    { event: [{ type: 't', payload: {} }] },
    { type: 't', payload: {} },
    'events',
    42,
    null,
  ];
  for (const body of bodies) {
    const reply = await sendBatch(ctx, { json: body });
    assertError(reply, 400, 'validation_error', 'events');
  }
  assert.is(await metric(ctx.server, 'triggers_events_accepted_total'), acceptedBefore);
});

batch('an empty batch is a 200 with nothing in it', async (ctx) => {
  const reply = await sendBatch(ctx, { json: { events: [] } });
  results(reply, 0);
  assert.equal(reply.body, { accepted: 0, rejected: 0, results: [] });
});

batch('invalid JSON, invalid UTF-8 and a wrong Content-Type are refused as for single events', async (ctx) => {
  assertError(await sendBatch(ctx, { raw: '{"events":[' }), 400, 'invalid_json');
  assertError(await sendBatch(ctx, { raw: '' }), 400, 'invalid_json');
  assertError(await sendBatch(ctx, { raw: Buffer.from([0xff, 0xfe]) }), 400, 'invalid_json');
  assertError(await sendBatch(ctx, { raw: '{"events":[]}', contentType: 'text/plain' }), 415, 'unsupported_media_type');
  assertError(await sendBatch(ctx, { raw: 'events=1', contentType: 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
  // Accepted without a Content-Type and with parameters.
  results(await sendBatch(ctx, { raw: '{"events":[{"type":"t","payload":{}}]}', contentType: null }), 1);
  results(await sendBatch(ctx, { raw: '{"events":[{"type":"t","payload":{}}]}', contentType: 'application/json; charset=utf-8' }), 1);
});

batch('a batch body between 1 MiB and 5 MiB is read (the batch limit is 5 MiB, not 1 MiB)', async (ctx) => {
  const events = Array.from({ length: 19 }, (_, i) => ({ type: 'large', payload: payloadOfBytes(MAX_PAYLOAD_BYTES - 1000 + i) }));
  const raw = JSON.stringify({ events });
  assert.ok(raw.length > 4 * MiB && raw.length < 5 * MiB, String(raw.length));
  const reply = await sendBatch(ctx, { raw });
  results(reply, 19);
  assert.is(reply.body.accepted, 19);
  // Exactly 5 MiB (whitespace-padded) is still read.
  const padded = '{"events":[{"type":"t","payload":{}}]}';
  results(await sendBatch(ctx, { raw: padded + ' '.repeat(5 * MiB - padded.length) }), 1);
});

batch('a body over 5 MiB → 413, declared or streamed, and the server stays healthy', async (ctx) => {
  const headers = { 'x-api-key': ctx.key, 'content-type': 'application/json' };
  // Declared and never sent: refused without waiting for the bytes.
  for (const declaredBytes of [5 * MiB + 1, 50 * MiB]) {
    const declared = await streamPartial(ctx.server.port, { path: '/api/events/batch', headers: { ...headers, 'content-length': String(declaredBytes) }, bytes: 0 });
    declared.destroy();
    assertRateHeaders(declared.reply);
    assertError(declared.reply, 413, 'payload_too_large');
  }
  // Streamed chunked past 5 MiB and never finished: only a refusal while streaming can answer,
  // and the server then closes the connection.
  const streamed = await streamPartial(ctx.server.port, { path: '/api/events/batch', headers, bytes: 5 * MiB + 1 });
  try {
    assertRateHeaders(streamed.reply);
    assertError(streamed.reply, 413, 'payload_too_large');
    assert.ok(await settlesWithin(streamed.closed, 5_000), 'the connection stayed open after the 413');
  } finally {
    streamed.destroy();
  }
  await assertHealthy(ctx.server, ctx.key);
});

batch('free tier: a batch of 150 valid events → HTTP 200, 100 accepted, the last 50 rate_limited', async (ctx) => {
  const { key } = await ctx.server.createKey('free', 'batch free org');
  const events = Array.from({ length: 150 }, (_, i) => ({ type: 'free', payload: { i } }));
  const reply = await sendBatch(ctx, { json: { events } }, key);
  const list = results(reply, 150);
  assert.is(reply.body.accepted, 100);
  assert.is(reply.body.rejected, 50);
  list.slice(0, 100).forEach((result) => assert.is(result.status, 'accepted', JSON.stringify(result)));
  list.slice(100).forEach((result) => rejected(result, 'rate_limited'));
  assert.is(reply.headers['ratelimit-limit'], '100');
  assert.is(reply.headers['ratelimit-remaining'], '0');
  // The quota is spent: the next single event is a 429 with the contract's headers and fields.
  const single = await post(ctx.server, '/api/events', { key, json: { type: 'free', payload: {} } });
  const body = assertError(single, 429, 'rate_limited');
  assert.is(body.limit, 100);
  assert.ok(Number(single.headers['retry-after']) >= 1, `retry-after ${single.headers['retry-after']}`);
  assert.is(String(body.retry_after), single.headers['retry-after']);
});

batch('free tier: invalid items take no tokens (validation runs before the rate limit)', async (ctx) => {
  const { key } = await ctx.server.createKey('free', 'batch free org 2');
  const events = Array.from({ length: 150 }, (_, i) => (i % 3 === 0 ? { type: '', payload: { i } } : { type: 'free', payload: { i } }));
  const reply = await sendBatch(ctx, { json: { events } }, key);
  const list = results(reply, 150);
  assert.is(reply.body.accepted, 100);
  list.forEach((result, i) => {
    if (i % 3 === 0) rejected(result, 'validation_error', 'type');
    else assert.is(result.status, 'accepted', JSON.stringify(result));
  });
});

batch('every event a batch accepted is in Postgres, intact (nothing got accepted and then failed to store)', async (ctx) => {
  assert.ok(acceptedEvents.size > 1200, `only ${acceptedEvents.size} accepted events recorded`);
  await assertStoredInPostgres(ctx.db.sql, acceptedEvents, ctx.server);
});

batch.run();
