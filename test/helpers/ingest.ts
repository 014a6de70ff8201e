// Shared bits of the ingestion tests: raw POSTs, the contract's error/rate-header checks, metrics.
import * as assert from 'uvu/assert';
import { rawRequest, type RawReply } from './raw-http.ts';
import type { Sql } from '../../src/db/postgres.ts';
import { waitFor, type TestServer } from './server.ts';

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const MAX_PAYLOAD_BYTES = 262_144;
export const RATE_HEADERS = ['ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset', 'x-ratelimit-limit', 'x-ratelimit-remaining'] as const;

export interface PostOptions {
  key: string;
  /** Exact body bytes. */
  raw?: string | Buffer;
  /** JSON-encoded when `raw` is not given. */
  json?: unknown;
  /** `null` sends no Content-Type header at all; default application/json. */
  contentType?: string | null;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/** The JSON a POST sent: its `raw` bytes parsed, or its `json` value. */
export function sentJson(options: Pick<PostOptions, 'raw' | 'json'>): any {
  return options.raw !== undefined ? JSON.parse(Buffer.from(options.raw).toString('utf8')) : options.json;
}

/**
 * Events a test file saw accepted, by id, with what was sent (type, and payload or its alias
 * `data`): for assertStoredInPostgres at the end of the file.
 */
export class AcceptedEvents extends Map<string, { type: string; payload: unknown }> {
  record(id: string, event: { type: string; payload?: unknown; data?: unknown }): void {
    this.set(id, { type: event.type, payload: event.payload !== undefined ? event.payload : event.data });
  }
}

/** POST with exact bytes and exact headers (fetch would add a Content-Type of its own). */
export function post(server: TestServer, path: string, options: PostOptions): Promise<RawReply> {
  const headers: Record<string, string> = { 'x-api-key': options.key, ...options.headers };
  const contentType = options.contentType === undefined ? 'application/json' : options.contentType;
  if (contentType !== null) headers['content-type'] = contentType;
  const body = options.raw ?? (options.json === undefined ? undefined : JSON.stringify(options.json));
  return rawRequest(server.port, { path, headers, body, ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}) });
}

export function assertRateHeaders(reply: RawReply, limit?: number): void {
  for (const name of RATE_HEADERS) {
    const value = reply.headers[name];
    assert.ok(typeof value === 'string' && /^\d+$/.test(value), `header ${name} missing or not an integer on ${reply.status} ${reply.text.slice(0, 200)}`);
  }
  assert.is(reply.headers['ratelimit-limit'], reply.headers['x-ratelimit-limit']);
  assert.is(reply.headers['ratelimit-remaining'], reply.headers['x-ratelimit-remaining']);
  if (limit !== undefined) assert.is(reply.headers['ratelimit-limit'], String(limit));
}

/**
 * The contract's error: exact status and code, a human `error` sentence, `field` when expected,
 * JSON content type, and (for an authenticated POST /api/events*) the rate-limit headers.
 */
export function assertError(reply: RawReply, status: number, code: string, field?: string, rateHeaders = true): Record<string, unknown> {
  const summary = `${reply.status} ${reply.text.slice(0, 300)}`;
  assert.is(reply.status, status, `expected ${status} ${code}, got ${summary}`);
  assert.ok(reply.body !== null && typeof reply.body === 'object', `error body is not a JSON object: ${summary}`);
  assert.is(reply.body.code, code, `expected code ${code}, got ${summary}`);
  assert.type(reply.body.error, 'string', summary);
  assert.ok(reply.body.error.length > 0, summary);
  assert.ok(String(reply.headers['content-type']).startsWith('application/json'), `content-type ${reply.headers['content-type']}`);
  if (field !== undefined) assert.is(reply.body.field, field, `expected field ${field}, got ${summary}`);
  if (rateHeaders) assertRateHeaders(reply);
  return reply.body;
}

export function assertAccepted(reply: RawReply): string {
  const summary = `${reply.status} ${reply.text.slice(0, 300)}`;
  assert.is(reply.status, 202, `expected 202, got ${summary}`);
  assert.match(reply.body?.id ?? '', UUID_V7, summary);
  assert.is(reply.body.status, 'accepted', summary);
  assertRateHeaders(reply);
  return reply.body.id;
}

/** One sample of a Prometheus metric (no labels, or the given exact label set). */
export async function metric(server: TestServer, name: string, labels = ''): Promise<number> {
  const reply = await server.request('GET', '/metrics');
  assert.is(reply.status, 200, reply.text);
  const wanted = labels === '' ? name : `${name}{${labels}}`;
  for (const line of reply.text.split('\n')) {
    const space = line.lastIndexOf(' ');
    if (space > 0 && line.slice(0, space) === wanted) return Number(line.slice(space + 1));
  }
  throw new Error(`metric ${wanted} not found in /metrics`);
}

/** The sum of all samples of a labelled metric, e.g. every `code` of triggers_events_rejected_total. */
export async function metricSum(server: TestServer, name: string): Promise<number> {
  const reply = await server.request('GET', '/metrics');
  assert.is(reply.status, 200, reply.text);
  let sum = 0;
  for (const line of reply.text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

export async function backlog(server: TestServer): Promise<number> {
  const reply = await server.request('GET', '/health/ready');
  assert.is(reply.status, 200, reply.text);
  assert.type(reply.body.backlog, 'number');
  return reply.body.backlog;
}

/** The server answers its health checks and still accepts a valid event. */
export async function assertHealthy(server: TestServer, key: string): Promise<void> {
  const live = await server.request('GET', '/health');
  assert.is(live.status, 200, live.text);
  const ready = await server.request('GET', '/health/ready');
  assert.is(ready.status, 200, ready.text);
  assert.is(ready.body.status, 'ready');
  assertAccepted(await post(server, '/api/events', { key, json: { type: 'health.probe', payload: { ok: true } } }));
}

/** `levels` nested objects: nestedObject(1) = {}, nestedObject(2) = {d: {}}, ... */
export function nestedObject(levels: number, leaf: Record<string, unknown> = {}): Record<string, unknown> {
  let value: Record<string, unknown> = leaf;
  for (let i = 1; i < levels; i++) value = { d: value };
  return value;
}

/** A payload `{s: "<filler>"}` whose compact JSON is exactly `bytes` UTF-8 bytes, filled with `unit`. */
export function payloadOfBytes(bytes: number, unit = 'x'): { s: string } {
  const overhead = Buffer.byteLength('{"s":""}');
  const unitBytes = Buffer.byteLength(unit);
  const room = bytes - overhead;
  const units = Math.floor(room / unitBytes);
  const payload = { s: unit.repeat(units) + 'x'.repeat(room - units * unitBytes) };
  assert.is(Buffer.byteLength(JSON.stringify(payload)), bytes);
  return payload;
}

/** JSON equality as jsonb sees it: object key order does not matter; -0 equals 0. */
export function sameJsonUnordered(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a === b;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === (b as unknown[]).length && a.every((item, i) => sameJsonUnordered(item, (b as unknown[])[i]));
  const keysA = Object.keys(a);
  if (keysA.length !== Object.keys(b).length) return false;
  return keysA.every((key) => Object.hasOwn(b, key) && sameJsonUnordered((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]));
}

/**
 * "Nothing may get a 202 and then fail to store": waits until every accepted event is a row in
 * Postgres (the drain casts the payload to jsonb, so one unstorable payload would stall it) and
 * checks that jsonb kept each payload (and type) intact.
 */
export async function assertStoredInPostgres(
  sql: Sql,
  expected: ReadonlyMap<string, { payload: unknown; type?: string }>,
  server?: TestServer,
  timeoutMs = 20_000,
): Promise<void> {
  const ids = [...expected.keys()];
  if (ids.length === 0) return;
  let found = 0;
  let rows: Array<{ id: string; type: string; payload: string }> = [];
  try {
    await waitFor(
      'accepted events to reach Postgres',
      async () => {
        rows = await sql<Array<{ id: string; type: string; payload: string }>>`
          select id::text as id, type, payload::text as payload from events where id = any(${sql.array(ids)}::uuid[])`;
        found = rows.length;
        return found === ids.length;
      },
      timeoutMs,
      50,
    );
  } catch (error) {
    const drainErrors = (server?.logs ?? []).filter((line) => /drain|persist/i.test(line) && /"level":(40|50|60)/.test(line)).slice(-5);
    throw new Error(`${(error as Error).message} (${found} of ${ids.length} stored)\n${drainErrors.join('\n')}`);
  }
  for (const row of rows) {
    const want = expected.get(row.id)!;
    assert.ok(sameJsonUnordered(JSON.parse(row.payload), want.payload), `event ${row.id}: jsonb holds ${row.payload.slice(0, 200)}, expected ${JSON.stringify(want.payload).slice(0, 200)}`);
    if (want.type !== undefined) assert.is(row.type, want.type, `event ${row.id}: type`);
  }
}
