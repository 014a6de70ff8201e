// Fuzzing the request parsers. (a) Properties of the pure functions in src/events/validate.ts:
// any input either parses or is refused with a 4xx ApiError, never another exception; whatever is
// accepted is exactly what jsonb can store and round-trips. (b) The live server under ~300 random
// requests: every answer is a success or a 4xx JSON error, never a 5xx or a hang.
import fc from 'fast-check';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ApiError } from '../src/errors.ts';
import { checkContentType, parseEvent, parseJsonBody, type EventInput } from '../src/events/validate.ts';
import { deep, eventBody, headerSafe, jsonish, mutatedEvent } from './fuzz/generators.ts';
import { assertHealthy, assertStoredInPostgres, MAX_PAYLOAD_BYTES, UUID_V7 } from './helpers/ingest.ts';
import { rawRequest, type RawReply } from './helpers/raw-http.ts';
import { TestServer, useTestDatabase, type TestDatabase } from './helpers/server.ts';

const MAX_DEPTH = 64;
const MAX_TEXT = 255;

interface Ctx {
  db: TestDatabase;
  server: TestServer;
  key: string;
}

const fuzz = suite<Ctx>('fuzz');

useTestDatabase(fuzz, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url);
  ctx.key = (await ctx.server.createKey('enterprise', 'fuzz org')).key;
});

// ---- an independent oracle of what the contract accepts ------------------------------------------

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const storableText = (text: string): boolean => text.isWellFormed() && !text.includes('\u0000');

/** Recursive on purpose (the code under test is iterative): depth of the payload object is 1. */
function storable(value: unknown, depth: number): boolean {
  if (typeof value === 'number') return Number.isFinite(value);
  if (typeof value === 'string') return storableText(value);
  if (value === null || typeof value === 'boolean') return true;
  if (typeof value !== 'object') return false;
  if (depth > MAX_DEPTH) return false;
  if (Array.isArray(value)) return value.every((item) => storable(item, depth + 1));
  return Object.keys(value).every((key) => storableText(key) && storable((value as Record<string, unknown>)[key], depth + 1));
}

function textOk(value: unknown, required: boolean): boolean {
  if (value === undefined || value === null) return !required;
  if (typeof value !== 'string') return false;
  const characters = [...value].length;
  return characters >= 1 && characters <= MAX_TEXT && storableText(value);
}

type Verdict = { ok: true } | { ok: false; codes: Set<string>; fields: Set<string> };

/** Every reason the body must be refused (the server may report any one of them). */
function oracle(body: unknown): Verdict {
  if (!isObject(body)) return { ok: false, codes: new Set(['validation_error']), fields: new Set(['body']) };
  const codes = new Set<string>();
  const fields = new Set<string>();
  const fail = (code: string, field: string) => {
    codes.add(code);
    fields.add(field);
  };
  if (!textOk(body.type, true)) fail('validation_error', 'type');
  const field = body.payload !== undefined ? 'payload' : 'data';
  const payload = body[field];
  if (payload === undefined) fail('validation_error', 'payload');
  else if (!isObject(payload) || !storable(payload, 1)) fail('validation_error', field);
  else if (Buffer.byteLength(JSON.stringify(payload)) > MAX_PAYLOAD_BYTES) fail('payload_too_large', field);
  if (!textOk(body.dedup_id, false)) fail('validation_error', 'dedup_id');
  return codes.size === 0 ? { ok: true } : { ok: false, codes, fields };
}

/** JSON equality that sees own keys such as __proto__, key order, and treats -0 as 0 (as JSON does). */
function sameJson(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a === b;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === (b as unknown[]).length && a.every((item, i) => sameJson(item, (b as unknown[])[i]));
  const keysA = Object.keys(a);
  const keysB = Object.keys(b);
  return (
    keysA.length === keysB.length &&
    keysA.every((key, i) => key === keysB[i] && Object.hasOwn(b, key) && sameJson((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]))
  );
}

function depthOf(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + children.reduce<number>((max, child) => Math.max(max, depthOf(child)), 0);
}

/** Runs `fn`; only an ApiError with a 4xx status may come out of it. */
function outcome<T>(fn: () => T): { value: T } | { error: ApiError } {
  try {
    return { value: fn() };
  } catch (error) {
    if (!(error instanceof ApiError)) throw new Error(`not an ApiError: ${(error as Error)?.stack ?? String(error)}`);
    if (error.status < 400 || error.status > 499) throw new Error(`ApiError with status ${error.status}: ${error.code}`);
    return { error };
  }
}

// ---- generators (shared ones in fuzz/generators.ts) -------------------------------------------------

const anyBody = fc.oneof({ weight: 8, arbitrary: eventBody }, { weight: 1, arbitrary: jsonish }, { weight: 1, arbitrary: fc.jsonValue() });

function checkAccepted(body: Record<string, unknown>, input: EventInput): void {
  const payload = body.payload !== undefined ? body.payload : body.data;
  assert.is(input.type, body.type);
  assert.is(input.dedupId, (body.dedup_id as string | undefined | null) ?? null);
  assert.is(input.payloadJson, JSON.stringify(payload));
  const stored = JSON.parse(input.payloadJson);
  assert.ok(sameJson(stored, payload), 'payload does not round-trip');
  assert.ok(Buffer.byteLength(input.payloadJson) <= MAX_PAYLOAD_BYTES, 'accepted payload over the byte limit');
  assert.ok(depthOf(stored) <= MAX_DEPTH, `accepted payload of depth ${depthOf(stored)}`);
  // What jsonb will get: finite numbers, well-formed text without U+0000, in keys and values alike.
  assert.ok(storable(stored, 1), 'accepted payload jsonb cannot store');
  assert.ok(input.payloadJson.isWellFormed());
  assert.ok(storableText(input.type) && [...input.type].length <= MAX_TEXT);
}

// ---- (a) properties of the parser functions ----------------------------------------------------------

fuzz('parseEvent: returns or throws a 4xx ApiError; accepts exactly what the oracle accepts; accepted input round-trips', () => {
  fc.assert(
    fc.property(anyBody, (body) => {
      const verdict = oracle(body);
      const result = outcome(() => parseEvent(body));
      if ('value' in result) {
        assert.ok(verdict.ok, `accepted what must be refused (${!verdict.ok ? [...verdict.codes].join() : ''}): ${fc.stringify(body).slice(0, 300)}`);
        checkAccepted(body as Record<string, unknown>, result.value);
      } else {
        assert.ok(!verdict.ok, `refused a valid event with ${result.error.code} ${result.error.message}: ${fc.stringify(body).slice(0, 300)}`);
        assert.ok(verdict.codes.has(result.error.code), `code ${result.error.code}, expected one of ${[...verdict.codes]}`);
        if (result.error.code === 'validation_error') {
          assert.ok(verdict.fields.has(result.error.fields.field as string), `field ${String(result.error.fields.field)}, expected one of ${[...verdict.fields]}`);
        }
      }
    }),
    { numRuns: 1500 },
  );
});

fuzz('parseEvent: __proto__ and constructor keys are own keys, round-trip, and pollute nothing', () => {
  const text =
    '{"type":"proto","payload":{"__proto__":{"admin":true},"constructor":{"prototype":{"admin":true}},' +
    '"nested":[{"__proto__":null,"toString":1}]},"__proto__":{"dedup_id":"sneaky"}}';
  const body = parseJsonBody(Buffer.from(text)) as Record<string, unknown>;
  const input = parseEvent(body);
  assert.is(input.dedupId, null, 'a __proto__ key of the body must not supply dedup_id');
  const stored = JSON.parse(input.payloadJson);
  assert.ok(Object.hasOwn(stored, '__proto__'));
  assert.equal(Object.keys(stored), ['__proto__', 'constructor', 'nested']);
  assert.ok(sameJson(stored, (body as { payload: unknown }).payload));
  assert.is(JSON.stringify(stored), JSON.stringify(JSON.parse(text).payload));
  assert.is(({} as Record<string, unknown>).admin, undefined);
  assert.is(Object.prototype.toString.call(stored.nested[0]), '[object Object]');
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom('__proto__', 'constructor', 'prototype'), jsonish), { minLength: 1, maxLength: 4 }), (entries) => {
      const payloadText = `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`).join(',')}}`;
      const parsedBody = parseJsonBody(Buffer.from(`{"type":"p","payload":${payloadText}}`)) as Record<string, unknown>;
      const result = outcome(() => parseEvent(parsedBody));
      if ('value' in result) {
        assert.is(result.value.payloadJson, JSON.stringify(JSON.parse(payloadText)));
        assert.ok(sameJson(JSON.parse(result.value.payloadJson), parsedBody.payload));
      }
      assert.is(({} as Record<string, unknown>).admin, undefined);
    }),
    { numRuns: 300 },
  );
});

fuzz('parseEvent: the depth boundary is exact (payload object = depth 1; 64 accepted, 65 refused)', () => {
  fc.assert(
    fc.property(deep, (payload) => {
      const depth = depthOf(payload);
      const result = outcome(() => parseEvent({ type: 't', payload }));
      const clean = storable(payload, 1) || depth > MAX_DEPTH;
      if (!clean) return; // the leaf itself is bad (NaN, lone surrogate...): covered by the oracle property
      if (depth <= MAX_DEPTH) assert.ok('value' in result, `depth ${depth} refused`);
      else assert.ok('error' in result && result.error.code === 'validation_error' && result.error.fields.field === 'payload', `depth ${depth} accepted`);
    }),
    { numRuns: 400 },
  );
});

fuzz('parseJsonBody: arbitrary bytes parse or give 400 invalid_json; what parses is strict UTF-8 JSON', () => {
  const strict = new TextDecoder('utf-8', { fatal: true });
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    // Valid JSON with bytes flipped, cut or inserted.
    fc
      .tuple(fc.json(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'insert')), { maxLength: 3 }))
      .map(([text, edits]) => {
        let buffer = Buffer.from(text);
        for (const [at, byte, op] of edits) {
          const i = buffer.length === 0 ? 0 : at % buffer.length;
          if (op === 'set' && buffer.length > 0) buffer[i] = byte;
          else if (op === 'cut') buffer = buffer.subarray(0, i);
          else buffer = Buffer.concat([buffer.subarray(0, i), Buffer.from([byte]), buffer.subarray(i)]);
        }
        return new Uint8Array(buffer);
      }),
    fc.constantFrom(
      Uint8Array.from([0xff, 0xfe]),
      Uint8Array.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), // BOM + {}
      Uint8Array.from([0x22, 0xed, 0xa0, 0x80, 0x22]), // "<CESU surrogate>"
      Uint8Array.from([0x22, 0xc0, 0xaf, 0x22]), // overlong
      Uint8Array.from([0x22, 0xf4, 0x90, 0x80, 0x80, 0x22]), // above U+10FFFF
      new Uint8Array(0),
    ),
  );
  fc.assert(
    fc.property(bytes, (raw) => {
      const body = Buffer.from(raw);
      const result = outcome(() => parseJsonBody(body));
      let expected: { ok: true; value: unknown } | { ok: false };
      try {
        expected = { ok: true, value: JSON.parse(strict.decode(body)) };
      } catch {
        expected = { ok: false };
      }
      if ('value' in result) {
        assert.ok(expected.ok, `parsed what is not strict UTF-8 JSON: ${body.toString('hex')}`);
        assert.ok(sameJson(result.value, (expected as { value: unknown }).value));
      } else {
        assert.is(result.error.code, 'invalid_json');
        assert.is(result.error.status, 400);
        assert.not.ok(expected.ok, `refused valid JSON ${body.toString('hex')}`);
      }
    }),
    { numRuns: 2000 },
  );
  // Any JSON value survives encoding and parsing unchanged.
  fc.assert(
    fc.property(fc.jsonValue({ stringUnit: 'grapheme' }), (value) => {
      assert.ok(sameJson(parseJsonBody(Buffer.from(JSON.stringify(value))), value));
    }),
    { numRuns: 500 },
  );
});

fuzz('checkContentType: returns for application/json (any case, any parameters, or none), else a 415', () => {
  const header = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 20 }),
    fc.tuple(fc.constantFrom('application/json', 'APPLICATION/JSON', 'Application/Json'), fc.string({ maxLength: 20 })).map(([media, rest]) => media + rest),
    fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data', 'application/jsonp', 'application/ld+json', 'json', '*/*'),
  );
  fc.assert(
    fc.property(header, (value) => {
      const result = outcome(() => checkContentType(value));
      const media = value.split(';')[0]!.trim().toLowerCase();
      const shouldAccept = value === '' || media === 'application/json';
      if ('value' in result) assert.ok(shouldAccept, `accepted Content-Type ${JSON.stringify(value)}`);
      else {
        assert.is(result.error.code, 'unsupported_media_type');
        assert.is(result.error.status, 415);
        assert.not.ok(shouldAccept, `refused Content-Type ${JSON.stringify(value)}`);
      }
    }),
    { numRuns: 1000 },
  );
  for (const ok of ['', 'application/json', 'application/json; charset=utf-8', 'application/json;charset=UTF-8', 'APPLICATION/JSON']) {
    assert.ok('value' in outcome(() => checkContentType(ok)), ok);
  }
});

// ---- (b) the live server ---------------------------------------------------------------------------------

const contentTypeArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant('application/json') },
  { weight: 2, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.constantFrom('application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'APPLICATION/JSON;x=y', '') },
  { weight: 1, arbitrary: headerSafe },
);

/** Events that must be accepted: clean type, payload and (sometimes) a random dedup_id. */
const validEventText = fc
  .record(
    {
      type: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }),
      payload: fc.dictionary(fc.string({ unit: 'grapheme', maxLength: 8 }), fc.jsonValue({ stringUnit: 'grapheme', maxDepth: 4 }), { maxKeys: 6 }),
      dedup_id: fc.uuid(),
    },
    { requiredKeys: ['type', 'payload'] },
  )
  .map((event) => Buffer.from(JSON.stringify(event)));

/** Event-shaped bodies as JSON text: JSON.stringify writes lone surrogates as \udXXX escapes, which JSON.parse restores. */
const eventText = eventBody.map((body) => Buffer.from(JSON.stringify(body)));
const nastyNumbers = fc
  .tuple(fc.constantFrom('1e400', '-1e400', '1E+999', '1e-400', '123456789012345678901234567890', '-0', '0.1e1'), fc.boolean())
  .map(([num, nested]) => Buffer.from(`{"type":"n","payload":${nested ? `{"a":[{"b":${num}}]}` : `{"n":${num}}`}}`));
const batchText = fc.array(fc.oneof(eventBody, jsonish), { maxLength: 20 }).map((events) => Buffer.from(JSON.stringify({ events })));

const liveRequest = fc.record({
  path: fc.constantFrom('/api/events', '/api/events', '/api/events', '/api/events/batch'),
  contentType: contentTypeArb,
  body: fc.oneof(
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)) },
    { weight: 2, arbitrary: fc.json().map((text) => Buffer.from(text)) },
    { weight: 3, arbitrary: mutatedEvent },
    { weight: 4, arbitrary: eventText },
    { weight: 1, arbitrary: nastyNumbers },
    { weight: 2, arbitrary: batchText },
  ),
  /** When set, `body` is replaced by an event that must be accepted. */
  valid: fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: validEventText }),
});

/** Content types the contract accepts as JSON. */
const JSON_TYPES = new Set([null, 'application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON;x=y']);

function checkLiveReply(reply: RawReply, path: string): void {
  const summary = `${reply.status} ${reply.text.slice(0, 300)}`;
  assert.ok(reply.status < 500, `server error: ${summary}`);
  assert.ok(String(reply.headers['content-type']).startsWith('application/json'), `content-type ${reply.headers['content-type']}: ${summary}`);
  assert.ok(reply.body !== undefined && reply.body !== null && typeof reply.body === 'object', `not JSON: ${summary}`);
  if (reply.status >= 400) {
    assert.type(reply.body.error, 'string', summary);
    assert.type(reply.body.code, 'string', summary);
    assert.match(reply.body.code, /^[a-z]+(_[a-z]+)*$/, summary);
  } else if (path === '/api/events') {
    assert.is(reply.status, 202, summary);
    assert.match(reply.body.id, UUID_V7, summary);
  } else {
    assert.is(reply.status, 200, summary);
    assert.ok(Array.isArray(reply.body.results), summary);
    assert.is(reply.body.accepted + reply.body.rejected, reply.body.results.length, summary);
  }
}

fuzz('live server: ~300 random requests answer 2xx or a 4xx JSON error, never a 5xx or a hang', async (ctx) => {
  const started = Date.now();
  const statuses = new Map<number, number>();
  const accepted = new Map<string, { type: string; payload: unknown }>();
  await fc.assert(
    fc.asyncProperty(liveRequest, async ({ path, contentType, body, valid }) => {
      const headers: Record<string, string> = { 'x-api-key': ctx.key };
      if (contentType !== null) headers['content-type'] = contentType;
      const reply = await rawRequest(ctx.server.port, { path, headers, body: valid ?? body, timeoutMs: 5_000 });
      statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
      checkLiveReply(reply, path);
      if (reply.status === 202 || reply.status === 200) {
        // Accepted: the bytes were strict UTF-8 JSON; remember what the server must store.
        const sent = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(valid ?? body));
        const remember = (id: string, event: Record<string, unknown>) =>
          accepted.set(id, { type: event.type as string, payload: event.payload !== undefined ? event.payload : event.data });
        if (reply.status === 202) remember(reply.body.id, sent);
        else for (const result of reply.body.results) if (result.status === 'accepted') remember(result.id, sent.events[result.index]);
      }
      if (valid !== null && path === '/api/events' && JSON_TYPES.has(contentType)) {
        assert.is(reply.status, 202, `a valid event was refused: ${reply.text.slice(0, 300)} for ${valid.toString().slice(0, 300)}`);
      }
    }),
    { numRuns: 300, endOnFailure: true },
  );
  // The run must have exercised both sides.
  const total = [...statuses.values()].reduce((a, b) => a + b, 0);
  assert.is(total, 300);
  assert.ok((statuses.get(202) ?? 0) + (statuses.get(200) ?? 0) > 10, `too few accepted: ${JSON.stringify([...statuses])}`);
  assert.ok((statuses.get(400) ?? 0) > 10, `too few refused: ${JSON.stringify([...statuses])}`);
  assert.ok(Date.now() - started < 20_000, `the run took ${Date.now() - started} ms`);
  // Nothing reached the unexpected-error boundary (it would log even if it answered 4xx).
  const unexpected = ctx.server.logs.filter((line) => line.includes('unexpected error') || line.includes('"level":50') || line.includes('"level":60'));
  assert.equal(unexpected, [], unexpected.join('\n'));
  await assertHealthy(ctx.server, ctx.key);
  // Nothing got a 202 and then failed to store: every accepted event is in Postgres, intact.
  assert.ok(accepted.size > 10);
  await assertStoredInPostgres(ctx.db.sql, accepted, ctx.server);
});

fuzz.run();
