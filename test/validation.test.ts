// Input validation of POST /api/events against the real server: exact status, code and field for
// every kind of bad input, the boundaries that must still be accepted, body limits enforced as the
// body streams in, and proof that refused input leaves nothing behind.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  AcceptedEvents,
  assertAccepted,
  assertError,
  assertHealthy,
  assertStoredInPostgres,
  backlog,
  MAX_PAYLOAD_BYTES,
  metric,
  metricSum,
  nestedObject,
  payloadOfBytes,
  post,
  sameJsonUnordered,
  sentJson,
  type PostOptions,
} from './helpers/ingest.ts';
import { rawRequest, settlesWithin, streamPartial, type RawReply } from './helpers/raw-http.ts';
import { TestServer, useTestDatabase, waitFor, type TestDatabase } from './helpers/server.ts';

interface Ctx {
  db: TestDatabase;
  server: TestServer;
  key: string;
  otherKey: string;
}

const MiB = 1024 * 1024;
const validation = suite<Ctx>('validation');

useTestDatabase(validation, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url);
  ctx.key = (await ctx.server.createKey('enterprise', 'validation org')).key;
  ctx.otherKey = (await ctx.server.createKey('enterprise', 'validation other org')).key;
});

/** Every event this file got a 202 for, with what was sent: checked against Postgres at the end. */
const acceptedEvents = new AcceptedEvents();

async function send(ctx: Ctx, options: Omit<PostOptions, 'key'>): Promise<RawReply> {
  const reply = await post(ctx.server, '/api/events', { key: ctx.key, ...options });
  if (reply.status === 202 && typeof reply.body?.id === 'string') acceptedEvents.record(reply.body.id, sentJson(options));
  return reply;
}
const json = (body: unknown) => (ctx: Ctx) => send(ctx, { json: body });
const raw = (text: string | Buffer, contentType: string | null = 'application/json') => (ctx: Ctx) => send(ctx, { raw: text, contentType });

/** A raw event body around a payload written as JSON text (so 1e400, "\ud800" etc. reach the server verbatim). */
const rawEvent = (payloadText: string) => `{"type":"t","payload":${payloadText}}`;

/** `levels` nested arrays inside the payload object: payload depth = levels + 1. */
const nestedArrays = (levels: number) => ({ a: JSON.parse('['.repeat(levels) + ']'.repeat(levels)) });

/** Declares a body of `declared` bytes and sends none of it: the refusal must not wait for the bytes. */
const declaredTooLarge = (declared: number) => async (ctx: Ctx): Promise<RawReply> => {
  const outcome = await streamPartial(ctx.server.port, {
    path: '/api/events',
    headers: { 'x-api-key': ctx.key, 'content-type': 'application/json', 'content-length': String(declared) },
    bytes: 0,
    timeoutMs: 5_000,
  });
  outcome.destroy();
  return outcome.reply;
};

/**
 * Streams 1 MiB + 1 bytes chunked (JSON whitespace, so nothing but the size can be wrong) and never
 * sends the final chunk: only a server that refuses as the body streams in can answer, and having
 * refused it must close the connection, so the rest of a larger body (say 3 MiB) cannot even be sent.
 */
async function chunkedTooLarge(ctx: Ctx): Promise<RawReply> {
  const outcome = await streamPartial(ctx.server.port, {
    path: '/api/events',
    headers: { 'x-api-key': ctx.key, 'content-type': 'application/json' },
    bytes: MiB + 1,
    timeoutMs: 10_000,
  });
  try {
    assert.ok(await settlesWithin(outcome.closed, 5_000), 'the server kept the connection open after refusing an unfinished over-limit body');
  } finally {
    outcome.destroy();
  }
  return outcome.reply;
}

interface BadCase {
  name: string;
  status: number;
  code: string;
  field?: string;
  send: (ctx: Ctx) => Promise<RawReply>;
}

const BAD: BadCase[] = [
  // type
  { name: 'type missing', status: 400, code: 'validation_error', field: 'type', send: json({ payload: {} }) },
  { name: 'type ""', status: 400, code: 'validation_error', field: 'type', send: json({ type: '', payload: {} }) },
  { name: 'type of 256 characters', status: 400, code: 'validation_error', field: 'type', send: json({ type: 'a'.repeat(256), payload: {} }) },
  { name: 'type of 256 emoji', status: 400, code: 'validation_error', field: 'type', send: json({ type: '😀'.repeat(256), payload: {} }) },
  { name: 'type a number', status: 400, code: 'validation_error', field: 'type', send: json({ type: 42, payload: {} }) },
  { name: 'type an object', status: 400, code: 'validation_error', field: 'type', send: json({ type: { a: 'b' }, payload: {} }) },
  { name: 'type an array', status: 400, code: 'validation_error', field: 'type', send: json({ type: ['a'], payload: {} }) },
  { name: 'type a boolean', status: 400, code: 'validation_error', field: 'type', send: json({ type: true, payload: {} }) },
  { name: 'type null', status: 400, code: 'validation_error', field: 'type', send: json({ type: null, payload: {} }) },
  { name: 'type with a lone surrogate', status: 400, code: 'validation_error', field: 'type', send: raw('{"type":"a\\ud800","payload":{}}') },
  { name: 'type with U+0000', status: 400, code: 'validation_error', field: 'type', send: raw('{"type":"a\\u0000b","payload":{}}') },
  // payload
  { name: 'payload missing', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't' }) },
  { name: 'payload an array', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't', payload: [1, 2] }) },
  { name: 'payload null', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't', payload: null }) },
  { name: 'payload a string', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't', payload: '{}' }) },
  { name: 'payload a number', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't', payload: 7 }) },
  { name: 'payload a boolean', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't', payload: false }) },
  { name: 'data (alias) an array', status: 400, code: 'validation_error', field: 'data', send: json({ type: 't', data: [] }) },
  // dedup_id
  { name: 'dedup_id ""', status: 400, code: 'validation_error', field: 'dedup_id', send: json({ type: 't', payload: {}, dedup_id: '' }) },
  { name: 'dedup_id of 256 characters', status: 400, code: 'validation_error', field: 'dedup_id', send: json({ type: 't', payload: {}, dedup_id: 'd'.repeat(256) }) },
  { name: 'dedup_id of 256 emoji', status: 400, code: 'validation_error', field: 'dedup_id', send: json({ type: 't', payload: {}, dedup_id: '🎉'.repeat(256) }) },
  { name: 'dedup_id a number', status: 400, code: 'validation_error', field: 'dedup_id', send: json({ type: 't', payload: {}, dedup_id: 12345 }) },
  { name: 'dedup_id an object', status: 400, code: 'validation_error', field: 'dedup_id', send: json({ type: 't', payload: {}, dedup_id: { id: 'x' } }) },
  { name: 'dedup_id with a lone surrogate', status: 400, code: 'validation_error', field: 'dedup_id', send: raw('{"type":"t","payload":{},"dedup_id":"\\udc00"}') },
  { name: 'dedup_id with U+0000', status: 400, code: 'validation_error', field: 'dedup_id', send: raw('{"type":"t","payload":{},"dedup_id":"\\u0000"}') },
  // the body itself
  { name: 'body a JSON array', status: 400, code: 'validation_error', field: 'body', send: json([{ type: 't', payload: {} }]) },
  { name: 'body a JSON string', status: 400, code: 'validation_error', field: 'body', send: json('{"type":"t","payload":{}}') },
  { name: 'body a JSON number', status: 400, code: 'validation_error', field: 'body', send: raw('42') },
  { name: 'body JSON null', status: 400, code: 'validation_error', field: 'body', send: raw('null') },
  // numbers jsonb cannot hold
  { name: 'payload number 1e400', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"n":1e400}')) },
  { name: 'payload number -1e400', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"n":-1e400}')) },
  { name: 'payload number 1e400 nested in arrays and objects', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"a":[{"b":[1,2,{"c":1e400}]}],"z":0}')) },
  { name: 'data (alias) number 1e400', status: 400, code: 'validation_error', field: 'data', send: raw('{"type":"t","data":{"n":1E+400}}') },
  // strings jsonb cannot hold
  { name: 'lone high surrogate in a value', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"s":"\\ud800"}')) },
  { name: 'lone low surrogate in a value', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"s":"x\\udfffy"}')) },
  { name: 'reversed surrogate pair in a value', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"s":"\\ude00\\ud83d"}')) },
  { name: 'lone surrogate in a nested array value', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"a":{"b":["ok","\\ud800"]}}')) },
  { name: 'lone surrogate in a key', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"\\ud800":1}')) },
  { name: 'lone surrogate in a nested key', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"a":[{"k\\udbff":true}]}')) },
  { name: 'U+0000 in a value', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"s":"a\\u0000b"}')) },
  { name: 'U+0000 in a nested value', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"a":[[["\\u0000"]]]}')) },
  { name: 'U+0000 in a key', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"\\u0000":1}')) },
  { name: 'U+0000 in a nested key', status: 400, code: 'validation_error', field: 'payload', send: raw(rawEvent('{"a":{"b\\u0000c":null}}')) },
  // nesting
  { name: 'payload nested 65 objects deep', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't', payload: nestedObject(65) }) },
  { name: 'payload nested 65 deep through arrays', status: 400, code: 'validation_error', field: 'payload', send: json({ type: 't', payload: nestedArrays(64) }) },
  { name: 'payload nested 10,000 deep', status: 400, code: 'validation_error', field: 'body', send: raw(rawEvent('{"a":' + '['.repeat(10_000) + ']'.repeat(10_000) + '}')) },
  // Past 128 levels the body is refused on its bytes, before JSON.parse spends seconds on it.
  { name: 'body nested 10,000 deep, unclosed', status: 400, code: 'validation_error', field: 'body', send: raw('['.repeat(10_000)) },
  // not JSON
  { name: 'malformed JSON (unquoted key)', status: 400, code: 'invalid_json', send: raw('{"type":"t",payload:{}}') },
  { name: 'malformed JSON (single quotes)', status: 400, code: 'invalid_json', send: raw("{'type':'t','payload':{}}") },
  { name: 'malformed JSON (trailing garbage)', status: 400, code: 'invalid_json', send: raw('{"type":"t","payload":{}}x') },
  { name: 'malformed JSON (two documents)', status: 400, code: 'invalid_json', send: raw('{"type":"t","payload":{}}{}') },
  { name: 'malformed JSON (NaN)', status: 400, code: 'invalid_json', send: raw('{"type":"t","payload":{"n":NaN}}') },
  { name: 'empty body', status: 400, code: 'invalid_json', send: raw('') },
  { name: 'empty body without Content-Type', status: 400, code: 'invalid_json', send: raw('', null) },
  { name: 'whitespace-only body', status: 400, code: 'invalid_json', send: raw(' \r\n\t ') },
  { name: 'truncated JSON', status: 400, code: 'invalid_json', send: raw('{"type":"t","payload":{"a":[1,2') },
  { name: 'invalid UTF-8 bytes 0xff 0xfe', status: 400, code: 'invalid_json', send: raw(Buffer.from([0xff, 0xfe])) },
  {
    name: 'invalid UTF-8 inside a JSON string',
    status: 400,
    code: 'invalid_json',
    send: raw(Buffer.concat([Buffer.from('{"type":"t","payload":{"s":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}}')])),
  },
  {
    name: 'overlong UTF-8 encoding',
    status: 400,
    code: 'invalid_json',
    send: raw(Buffer.concat([Buffer.from('{"type":"t","payload":{"s":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}}')])),
  },
  {
    name: 'UTF-8-encoded surrogate (CESU-8)',
    status: 400,
    code: 'invalid_json',
    send: raw(Buffer.concat([Buffer.from('{"type":"t","payload":{"s":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}}')])),
  },
  {
    name: 'truncated multi-byte UTF-8 sequence',
    status: 400,
    code: 'invalid_json',
    send: raw(Buffer.concat([Buffer.from('{"type":"t","payload":{"s":"'), Buffer.from('€').subarray(0, 2), Buffer.from('"}}')])),
  },
  // media types
  { name: 'Content-Type text/plain', status: 415, code: 'unsupported_media_type', send: raw('{"type":"t","payload":{}}', 'text/plain') },
  { name: 'Content-Type application/x-www-form-urlencoded', status: 415, code: 'unsupported_media_type', send: raw('type=t&payload=x', 'application/x-www-form-urlencoded') },
  { name: 'Content-Type multipart/form-data', status: 415, code: 'unsupported_media_type', send: raw('{"type":"t","payload":{}}', 'multipart/form-data; boundary=x') },
  { name: 'Content-Type text/json', status: 415, code: 'unsupported_media_type', send: raw('{"type":"t","payload":{}}', 'text/json') },
  { name: 'Content-Type application/jsonx', status: 415, code: 'unsupported_media_type', send: raw('{"type":"t","payload":{}}', 'application/jsonx') },
  // sizes
  { name: 'payload of 262,145 bytes (ASCII)', status: 413, code: 'payload_too_large', send: json({ type: 't', payload: payloadOfBytes(MAX_PAYLOAD_BYTES + 1) }) },
  {
    name: 'payload of 262,145 bytes but ~131k characters (é = 2 bytes)',
    status: 413,
    code: 'payload_too_large',
    send: json({ type: 't', payload: payloadOfBytes(MAX_PAYLOAD_BYTES + 1, 'é') }),
  },
  {
    name: 'payload of 262,145 bytes but ~87k characters (€ = 3 bytes)',
    status: 413,
    code: 'payload_too_large',
    send: json({ type: 't', payload: payloadOfBytes(MAX_PAYLOAD_BYTES + 1, '€') }),
  },
  {
    name: 'payload of 262,146 bytes but ~65k emoji (4 bytes each)',
    status: 413,
    code: 'payload_too_large',
    send: json({ type: 't', payload: payloadOfBytes(MAX_PAYLOAD_BYTES + 2, '😀') }),
  },
  {
    // 43,690 × U+0001 is 43,690 characters but 262,140 bytes once re-escaped compactly as \u0001.
    name: 'payload whose compact JSON escapes control characters past the limit',
    status: 413,
    code: 'payload_too_large',
    send: json({ type: 't', payload: { s: '\u0001'.repeat(43_690) } }),
  },
  { name: 'body of 3 MiB declared by Content-Length, none of it sent', status: 413, code: 'payload_too_large', send: declaredTooLarge(3 * MiB) },
  { name: 'body of 1 MiB + 1 byte declared by Content-Length, none of it sent', status: 413, code: 'payload_too_large', send: declaredTooLarge(MiB + 1) },
  { name: 'body streamed chunked past 1 MiB and never finished', status: 413, code: 'payload_too_large', send: chunkedTooLarge },
];

for (const bad of BAD) {
  validation(`${bad.status} ${bad.code}${bad.field ? ` (${bad.field})` : ''}: ${bad.name}`, async (ctx) => {
    const reply = await bad.send(ctx);
    assertError(reply, bad.status, bad.code, bad.field);
    assert.not.ok('id' in reply.body, `a refused event got an id: ${reply.text.slice(0, 200)}`);
  });
}

// ---- what must still be accepted --------------------------------------------------------------

async function readBack(ctx: Ctx, id: string): Promise<any> {
  const reply = await ctx.server.request('GET', `/api/events/${id}`, { key: ctx.key });
  assert.is(reply.status, 200, reply.text);
  assert.is(reply.body.id, id);
  return reply.body;
}

validation('202: type of 255 characters and of 255 emoji (characters, not UTF-16 units)', async (ctx) => {
  for (const type of ['a'.repeat(255), '😀'.repeat(255), 'é'.repeat(255), `${'😀'.repeat(254)}x`]) {
    const id = assertAccepted(await send(ctx, { json: { type, payload: {} } }));
    assert.is((await readBack(ctx, id)).type, type);
  }
});

validation('202: dedup_id of 1, 255 characters and 255 emoji', async (ctx) => {
  for (const dedupId of ['1', 'k'.repeat(255), '🎉'.repeat(255)]) {
    const id = assertAccepted(await send(ctx, { json: { type: 't', payload: {}, dedup_id: dedupId } }));
    assert.is((await readBack(ctx, id)).dedup_id, dedupId);
  }
});

validation('202: application/json with parameters or other case, and a missing Content-Type', async (ctx) => {
  for (const contentType of ['application/json; charset=utf-8', 'application/json;charset=UTF-8', 'Application/JSON', ' application/json ', null]) {
    const reply = await send(ctx, { raw: '{"type":"ct","payload":{"ok":1}}', contentType });
    assertAccepted(reply);
  }
});

validation('202: payload of exactly 262,144 bytes, ASCII and multi-byte; the limit counts compact JSON bytes', async (ctx) => {
  for (const unit of ['x', 'é', '€', '😀']) {
    const payload = payloadOfBytes(MAX_PAYLOAD_BYTES, unit);
    const id = assertAccepted(await send(ctx, { json: { type: `limit.${unit}`, payload } }));
    const read = await readBack(ctx, id);
    assert.ok(read.payload.s === payload.s, `payload of ${unit} did not read back intact`);
  }
  // Pretty-printed and \u-escaped bodies are far larger than the compact payload, which is what counts.
  const compact = payloadOfBytes(MAX_PAYLOAD_BYTES, 'é');
  const escaped = `{"type":"escaped","payload":{"s":"${'\\u00e9'.repeat(compact.s.length)}"}}`;
  assert.ok(escaped.length > 2 * MAX_PAYLOAD_BYTES);
  const id = assertAccepted(await send(ctx, { raw: escaped }));
  assert.is((await readBack(ctx, id)).payload.s, compact.s);
  const pretty = JSON.stringify({ type: 'pretty', payload: { ...payloadOfBytes(MAX_PAYLOAD_BYTES - 8), n: [1] } }, null, 10);
  assert.is(Buffer.byteLength(JSON.stringify(JSON.parse(pretty).payload)), MAX_PAYLOAD_BYTES);
  assert.ok(pretty.length > MAX_PAYLOAD_BYTES + 30);
  assertAccepted(await send(ctx, { raw: pretty }));
});

validation('a body of exactly 1 MiB is read (with Content-Length or chunked); 1 MiB + 1 is refused', async (ctx) => {
  const event = '{"type":"one.mib","payload":{"a":1}}';
  const exact = event + ' '.repeat(MiB - event.length);
  assertAccepted(await send(ctx, { raw: exact }));
  // The same 1 MiB sent chunked, as a stream of unknown length.
  assertAccepted(await send(ctx, { raw: exact, headers: { 'transfer-encoding': 'chunked' } }));
  assertError(await declaredTooLarge(MiB + 1)(ctx), 413, 'payload_too_large');
  assertError(await chunkedTooLarge(ctx), 413, 'payload_too_large');
});

validation('202: payload nested exactly 64 deep (payload object = depth 1), objects and arrays; 65 is refused', async (ctx) => {
  // 64 nested objects, the innermost holding scalars (scalars do not add a level).
  const objects = nestedObject(64, { leaf: 'x', n: 1.5, b: false, z: null });
  const id = assertAccepted(await send(ctx, { json: { type: 'deep.objects', payload: objects } }));
  assert.equal((await readBack(ctx, id)).payload, objects);
  // The payload object plus 63 nested arrays.
  const arrays = nestedArrays(63);
  const arraysId = assertAccepted(await send(ctx, { json: { type: 'deep.arrays', payload: arrays } }));
  assert.equal((await readBack(ctx, arraysId)).payload, arrays);
  // The same shapes one level deeper.
  assertError(await send(ctx, { json: { type: 'deep.objects', payload: nestedObject(65) } }), 400, 'validation_error', 'payload');
  assertError(await send(ctx, { json: { type: 'deep.arrays', payload: nestedArrays(64) } }), 400, 'validation_error', 'payload');
  assertError(await send(ctx, { json: { type: 'deep.objects', payload: nestedObject(65, { a: 1 }) } }), 400, 'validation_error', 'payload');
  // The byte-level depth check before JSON.parse counts brackets outside strings only (escaped quotes included).
  const brackets = { s: '['.repeat(10_000), t: '\\"[[[{{{', u: '}'.repeat(200) };
  const bracketsId = assertAccepted(await send(ctx, { json: { type: 'deep.strings', payload: brackets } }));
  assert.equal((await readBack(ctx, bracketsId)).payload, brackets);
});

validation('202: what jsonb stores faithfully is accepted and reads back unchanged', async (ctx) => {
  const text = rawEvent(
    '{"__proto__":{"polluted":true},"constructor":{"prototype":1},"toString":"s","hasOwnProperty":null,' +
      '"pair":"\\ud83d\\ude00","emoji":"😀","big":1.7976931348623157e308,"tiny":5e-324,"neg":-12.5e-3,' +
      '"ctl":"\\u0001\\u001f","bs":"\\\\u0000","nested":{"":[{},[],""]}}',
  );
  const id = assertAccepted(await send(ctx, { raw: text }));
  const expected = JSON.parse(text).payload;
  const check = (payload: any, when: string) => {
    // jsonb keeps its own key order, so compare as JSON objects, not as text.
    assert.ok(sameJsonUnordered(payload, expected), `${when}: ${JSON.stringify(payload)}`);
    assert.ok(Object.hasOwn(payload, '__proto__'), `${when}: __proto__ was not kept as an own key`);
    assert.equal(payload['__proto__'], { polluted: true });
    assert.is(payload.pair, '😀');
    assert.is(payload.bs, '\\u0000');
    assert.is(payload.big, Number.MAX_VALUE);
    assert.is(payload.tiny, Number.MIN_VALUE);
  };
  check((await readBack(ctx, id)).payload, 'right after the 202');
  // Once drained into Postgres (and compacted out of the log) it reads back the same.
  await waitFor('the event in Postgres', async () => (await ctx.db.sql`select 1 from events where id = ${id}`).length === 1);
  check((await readBack(ctx, id)).payload, 'after the drain');
  assert.is(({} as any).polluted, undefined);
});

// ---- duplicates ---------------------------------------------------------------------------------

validation('409 duplicate_event carries the original id; the same dedup_id from another org is not a duplicate', async (ctx) => {
  const dedupId = `dup-${Date.now()}`;
  const first = assertAccepted(await send(ctx, { json: { type: 'dup', payload: { n: 1 }, dedup_id: dedupId } }));
  const again = await send(ctx, { json: { type: 'dup', payload: { n: 2 }, dedup_id: dedupId } });
  assert.is(assertError(again, 409, 'duplicate_event').id, first);
  // The original is what is stored.
  assert.equal((await readBack(ctx, first)).payload, { n: 1 });

  const other = await post(ctx.server, '/api/events', { key: ctx.otherKey, json: { type: 'dup', payload: { n: 3 }, dedup_id: dedupId } });
  const otherId = assertAccepted(other);
  assert.is.not(otherId, first);
  // Each org keeps its own original.
  assert.is(assertError(await send(ctx, { json: { type: 'dup', payload: {}, dedup_id: dedupId } }), 409, 'duplicate_event').id, first);
  const otherAgain = await post(ctx.server, '/api/events', { key: ctx.otherKey, json: { type: 'dup', payload: {}, dedup_id: dedupId } });
  assert.is(assertError(otherAgain, 409, 'duplicate_event').id, otherId);
  // A refused event does not burn its dedup_id: a valid retry with it is accepted.
  const burnt = `burnt-${Date.now()}`;
  assertError(await send(ctx, { json: { type: '', payload: {}, dedup_id: burnt } }), 400, 'validation_error', 'type');
  assertError(await send(ctx, { raw: `{"type":"t","payload":{"n":1e400},"dedup_id":"${burnt}"}` }), 400, 'validation_error', 'payload');
  assertError(await send(ctx, { json: { type: 't', payload: payloadOfBytes(MAX_PAYLOAD_BYTES + 1), dedup_id: burnt } }), 413, 'payload_too_large');
  assertAccepted(await send(ctx, { json: { type: 't', payload: {}, dedup_id: burnt } }));
});

// ---- refused input leaves nothing behind ---------------------------------------------------------

validation('bad input changes nothing: every refusal above, replayed, adds no event and counts as rejected', async (ctx) => {
  const acceptedBefore = await metric(ctx.server, 'triggers_events_accepted_total');
  const rejectedBefore = await metricSum(ctx.server, 'triggers_events_rejected_total');
  const backlogBefore = await backlog(ctx.server);
  for (const bad of BAD) {
    const reply = await bad.send(ctx);
    assert.is(reply.status, bad.status, `${bad.name}: ${reply.status} ${reply.text.slice(0, 200)}`);
  }
  assert.is(await metric(ctx.server, 'triggers_events_accepted_total'), acceptedBefore, 'a refused request was counted as accepted');
  assert.is(await metricSum(ctx.server, 'triggers_events_rejected_total'), rejectedBefore + BAD.length, 'every refusal is counted once');
  // The log holds no new entry (<= so that a drain running meanwhile cannot make this flaky).
  assert.ok((await backlog(ctx.server)) <= backlogBefore, 'a refused request added an entry to the log');
  await assertHealthy(ctx.server, ctx.key);
  assert.is(await metric(ctx.server, 'triggers_events_accepted_total'), acceptedBefore + 1);
});

validation('401 before anything else: a bad body with no key or a wrong key is still missing/invalid_api_key', async (ctx) => {
  const noKey = await rawRequest(ctx.server.port, { path: '/api/events', headers: { 'content-type': 'text/plain' }, body: '{' });
  assertError(noKey, 401, 'missing_api_key', undefined, false);
  assert.is(noKey.headers['www-authenticate'], 'ApiKey');
  const badKey = await post(ctx.server, '/api/events', { key: 'zap_live_nope', raw: Buffer.from([0xff]) });
  assertError(badKey, 401, 'invalid_api_key', undefined, false);
});

validation('nothing got a 202 and then failed to store: every accepted event above is in Postgres, intact', async (ctx) => {
  assert.ok(acceptedEvents.size >= 25, `only ${acceptedEvents.size} accepted events recorded`);
  await assertStoredInPostgres(ctx.db.sql, acceptedEvents, ctx.server);
});

validation('the server is healthy after all of it', async (ctx) => {
  await assertHealthy(ctx.server, ctx.key);
});

validation.run();
