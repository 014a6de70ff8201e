// One fuzzing batch against a live server, shared by test/fuzz-raw.test.ts (a short batch in
// `npm test`) and scripts/fuzz.ts (batches for as long as asked). A batch: snapshot the state,
// start slowloris connections and a watcher that keeps using the server as a normal client, send
// raw-socket attacks and then HTTP requests with garbage to every route, wait until the server
// has closed every quiet connection, and check that nothing changed and the server still serves.
//
// The oracle, for every answer: never a 5xx; an error is a JSON `{error, code}` (the code the input
// calls for, where it is certain), with no stack trace; a success to a POST/DELETE only where
// garbage cannot change anything (a batch that accepted nothing, an ack of nothing, a rotation);
// a protocol violation may instead get no answer, but its connection must then be closed.
import fc from 'fast-check';
import type { Sql } from '../../src/db/postgres.ts';
import { assertHealthy } from '../helpers/ingest.ts';
import { documentedTemplate } from '../helpers/openapi.ts';
import { rawRequest, type RawReply } from '../helpers/raw-http.ts';
import { waitFor, type TestServer } from '../helpers/server.ts';
import { EARLY_ANSWERS, Lingering, rawAttack, sendAttack, SERVER_CLOSE_DEADLINE_MS, slowloris, type ParsedReply, type SlowOutcome } from './attacks.ts';
import { brokenJson, eventBody, flatBody, headerSafe, injection, inUrl, invalidUtf8, invalidValue, jsonish, protoShaped } from './generators.ts';
import { BODY_ROUTES, fillTemplate, HARMLESS_SUCCESS, ROUTES, type RouteSpec } from './routes.ts';
import { snapshot, stateChanges } from './state.ts';

export interface FuzzTarget {
  server: TestServer;
  sql: Sql;
  adminToken: string;
  /** The fuzzing organization's key; replaced when a fuzzed POST /api/keys/rotate succeeds. */
  key: string;
  /** Another organization's key, used only by the watcher (never fuzzed, never rotated). */
  watchKey: string;
  /** Event ids of a third organization: every id route must answer them as unknown. */
  foreignIds: readonly string[];
}

/**
 * Three organizations on `server`: the fuzzer, the watcher, and a foreign one with a few events
 * in Postgres (their ids are what the fuzzer must never reach).
 */
export async function prepareTarget(server: TestServer, sql: Sql, adminToken: string): Promise<FuzzTarget> {
  const [fuzzer, watcher, foreign] = await Promise.all([
    server.createKey('enterprise', 'fuzzer'),
    server.createKey('pro', 'watcher'),
    server.createKey('pro', 'foreign'),
  ]);
  const foreignIds: string[] = [];
  for (let i = 0; i < 4; i++) {
    const reply = await rawRequest(server.port, { path: '/api/events', headers: { 'x-api-key': foreign.key, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'foreign.event', payload: { i } }) });
    if (reply.status !== 202) throw new Error(`a foreign event was refused: ${reply.status} ${reply.text}`);
    foreignIds.push(reply.body.id);
  }
  await waitFor('the foreign events in Postgres', async () => (await sql<{ n: number }[]>`select count(*)::int as n from events where id = any(${sql.array(foreignIds)}::uuid[])`)[0]!.n === foreignIds.length);
  return { server, sql, adminToken, key: fuzzer.key, watchKey: watcher.key, foreignIds };
}

export interface BatchOptions {
  /** HTTP requests with garbage (sequential, fast-check). */
  requests: number;
  /** Raw-socket attacks (8 at a time). */
  attacks: number;
  /** Slowloris connections held during the batch (0: none). */
  slowConnections: number;
  seed: number;
}

export interface BatchReport {
  seed: number;
  /** Inputs tried, by kind. */
  tried: Map<string, number>;
  /** Requests sent per route (`METHOD template`, or `unrouted`). */
  routes: Map<string, number>;
  /** Outcomes: `http <status>`, `raw answered`, `raw closed at once`, `raw left quiet`. */
  outcomes: Map<string, number>;
  /** Longest time the server kept a quiet connection (protocol violation, idle keep-alive). */
  longestQuietMs: number;
  slow: SlowOutcome[];
  /** Slowest answer the watcher got while the attacks ran. */
  watcherMaxMs: number;
  watcherRequests: number;
  problems: string[];
  durationMs: number;
}

const bump = (map: Map<string, number>, key: string, by = 1) => map.set(key, (map.get(key) ?? 0) + by);

/** A stack frame, a source path or a Node internal: none may reach a client. */
const STACK_TRACE = /\n\s+at |node:internal|\.ts:\d+|\/src\/|\/node_modules\//;

// ---- HTTP probes -------------------------------------------------------------------------------------------

type AuthVariant = 'key' | 'bearer' | 'wrong-key' | 'no-key' | 'garbage-key' | 'admin' | 'wrong-admin';

export interface HttpProbe {
  /** What kind of input this is (for the report). */
  kind: string;
  /** `METHOD template` of the route aimed at, or `unrouted`. */
  route: string;
  method: string;
  path: string;
  auth: AuthVariant;
  contentType: string | null;
  headers: Record<string, string>;
  body?: Buffer;
  /** With valid credentials, an error answer must carry one of these codes (undefined: any). */
  expectCodes?: readonly string[];
}

const AUTH_CHOICES: Record<RouteSpec['auth'], Array<{ weight: number; arbitrary: fc.Arbitrary<AuthVariant> }>> = {
  apiKey: [
    { weight: 8, arbitrary: fc.constant('key') },
    { weight: 2, arbitrary: fc.constant('bearer') },
    { weight: 1, arbitrary: fc.constantFrom('wrong-key', 'no-key', 'garbage-key', 'admin') },
  ],
  adminToken: [
    { weight: 8, arbitrary: fc.constant('admin') },
    { weight: 2, arbitrary: fc.constantFrom('wrong-admin', 'no-key', 'key') },
  ],
  none: [
    { weight: 3, arbitrary: fc.constant('no-key') },
    { weight: 1, arbitrary: fc.constantFrom('key', 'garbage-key') },
  ],
};

const authFor = (route: RouteSpec) => fc.oneof(...AUTH_CHOICES[route.auth]);

function credentialsValid(route: RouteSpec, auth: AuthVariant): boolean {
  if (route.auth === 'none') return true;
  if (route.auth === 'adminToken') return auth === 'admin';
  return auth === 'key' || auth === 'bearer';
}

const contentTypeArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant<string | null>('application/json') },
  { weight: 2, arbitrary: fc.constant<string | null>(null) },
  { weight: 1, arbitrary: fc.constantFrom<string | null>('application/json; charset=utf-8', 'APPLICATION/JSON', '') },
  {
    weight: 2,
    arbitrary: fc.oneof(fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', 'json'), headerSafe)
      .filter((value) => value.trim() !== '' && value.split(';', 1)[0]!.trim().toLowerCase() !== 'application/json'),
  },
);

const jsonContentType = (value: string | null) => value === null || value === '' || value.split(';', 1)[0]!.trim().toLowerCase() === 'application/json';

/** Where an invalid value goes in each JSON route's body (all of them refuse it). */
const EMBED: Record<string, (value: string) => string> = {
  'POST /api/keys/generate': (value) => `{"organization_name":${value}}`,
  'POST /api/webhook/config': (value) => `{"webhook_url":${value}}`,
  'POST /api/events': (value) => `{"type":"fuzz","payload":{"v":${value}}}`,
  'POST /api/events/batch': (value) => `{"events":[{"type":"fuzz","payload":{"v":${value}}},${value},{"type":${value},"payload":{}}]}`,
  'POST /api/ack': (value) => `{"ids":[${value}]}`,
};

/** Texts to break: event-shaped JSON, arbitrary JSON, and the route's own fields. */
const breakable = (route: RouteSpec) =>
  fc.oneof(
    eventBody.map((body) => Buffer.from(JSON.stringify(body))),
    fc.json().map((text) => Buffer.from(text)),
    fc.constant(Buffer.from(JSON.stringify(route.body!.fields))),
  );

function bodyProbe(route: RouteSpec & { body: NonNullable<RouteSpec['body']> }): fc.Arbitrary<HttpProbe> {
  const name = `${route.method} ${route.template}`;
  const bodies: Array<fc.Arbitrary<{ kind: string; body: Buffer; codes?: readonly string[] }>> = [
    brokenJson(breakable(route)).map((body) => ({ kind: 'malformed JSON', body, codes: ['invalid_json'] })),
    invalidUtf8(breakable(route)).map((body) => ({ kind: 'invalid UTF-8', body, codes: ['invalid_json'] })),
    invalidValue.map((value) => ({
      kind: value.startsWith('[') || value.startsWith('{') ? 'nesting past the limit' : value.startsWith('"') ? 'NUL / lone surrogate text' : 'overflowing number',
      body: Buffer.from(EMBED[name]!(value)),
      // A batch reports bad events one by one in a 200 (checked: nothing accepted).
      codes: name === 'POST /api/events/batch' ? undefined : name === 'POST /api/webhook/config' ? ['validation_error', 'invalid_webhook_url'] : ['validation_error'],
    })),
    protoShaped(route.body.fields).map((body) => ({ kind: '__proto__ / constructor keys', body, codes: ['validation_error'] })),
    jsonish.filter((value) => typeof value !== 'object' || value === null || Array.isArray(value))
      .map((value) => ({ kind: 'not a JSON object', body: Buffer.from(JSON.stringify(value) ?? 'null'), codes: ['validation_error'] })),
    fc.integer({ min: 1, max: 4096 }).map((extra) => ({ kind: 'body over the limit', body: flatBody(route.body.limit + extra), codes: ['payload_too_large'] })),
    fc.constant({ kind: 'empty body', body: Buffer.alloc(0), codes: ['invalid_json'] }),
  ];
  return fc
    .record({ auth: authFor(route), contentType: contentTypeArb, chosen: fc.oneof(...bodies), noise: headerNoise })
    .map(({ auth, contentType, chosen, noise }) => {
      // The size is checked first, then the Content-Type, then the JSON.
      const codes = !credentialsValid(route, auth)
        ? undefined
        : chosen.body.length > route.body.limit ? ['payload_too_large'] : !jsonContentType(contentType) ? ['unsupported_media_type'] : chosen.codes;
      return { kind: `body: ${chosen.kind}`, route: name, method: route.method, path: route.template, auth, contentType, headers: noise, body: chosen.body, expectCodes: codes };
    });
}

/** Extra request headers: usually none; else big, odd or conflicting ones (printable, as any client sends). */
const headerNoise: fc.Arbitrary<Record<string, string>> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({}) },
  {
    weight: 1,
    arbitrary: fc.dictionary(
      fc.constantFrom('x-forwarded-for', 'x-real-ip', 'x-original-url', 'x-http-method-override', 'origin', 'cookie', 'user-agent', 'accept', 'accept-encoding', 'content-encoding', 'x-request-id', 'x-big'),
      fc.oneof(headerSafe, injection.map((text) => inUrl(text, false)), fc.integer({ min: 1000, max: 30_000 }).map((n) => 'h'.repeat(n))),
      { maxKeys: 4 },
    ),
  },
  { weight: 1, arbitrary: fc.constant({ expect: '100-continue' }) },
);

/** A value for a path parameter; `foreign`: a well-formed id that is not the caller's (so only 404 is right). */
function idValue(foreignIds: readonly string[]): fc.Arbitrary<{ kind: string; value: string; foreign: boolean }> {
  const variants: Array<fc.Arbitrary<{ kind: string; value: string; foreign: boolean }>> = [
    fc.tuple(injection, fc.boolean()).map(([text, raw]) => ({ kind: `injection (${raw ? 'raw' : 'encoded'})`, value: inUrl(text, raw), foreign: false })),
    fc.uuid({ version: [4, 7] }).map((value) => ({ kind: 'unknown uuid', value, foreign: true })),
    fc.constantFrom('00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff').map((value) => ({ kind: 'edge uuid', value, foreign: true })),
    fc.uuid().chain((uuid) =>
      fc.constantFrom(`{${uuid}}`, `${uuid}x`, uuid.replaceAll('-', ''), `${uuid}%00`, ` ${uuid}`.replace(' ', '%20'), `${uuid};select`, uuid.slice(0, -1), `urn:uuid:${uuid}`),
    ).map((value) => ({ kind: 'malformed uuid', value, foreign: false })),
  ];
  if (foreignIds.length > 0) {
    variants.push(fc.constantFrom(...foreignIds).chain((id) => fc.constantFrom(id, id.toUpperCase())).map((value) => ({ kind: "another org's event id", value, foreign: true })));
  }
  return fc.oneof(...variants);
}

function idRequest(route: RouteSpec, auth: AuthVariant, id: { kind: string; value: string; foreign: boolean }): HttpProbe {
  let codes: readonly string[] | undefined;
  if (credentialsValid(route, auth) && route.auth === 'apiKey') {
    // The fuzzing org has no webhook endpoint: redeliver answers 409 before looking the id up.
    codes = route.template.endsWith('/redeliver') ? ['no_webhook_endpoint', 'invalid_id', 'not_found'] : id.foreign ? ['not_found'] : ['invalid_id', 'not_found'];
  } else if (route.auth === 'none') {
    codes = ['not_found'];
  }
  return { kind: `id: ${id.kind}`, route: `${route.method} ${route.template}`, method: route.method, path: fillTemplate(route.template, id.value), auth, contentType: null, headers: {}, expectCodes: codes };
}

/** Any id-like value in the path: 400 invalid_id or 404, never another org's event. */
function idProbe(route: RouteSpec, foreignIds: readonly string[]): fc.Arbitrary<HttpProbe> {
  return fc.record({ auth: authFor(route), id: idValue(foreignIds) }).map(({ auth, id }) => idRequest(route, auth, id));
}

/** Every id route with each of another org's event ids, as the fuzzing org. */
function foreignIdRequests(foreignIds: readonly string[]): HttpProbe[] {
  return ROUTES.filter((route) => route.auth === 'apiKey' && route.template.includes('{'))
    .flatMap((route) => foreignIds.map((value) => idRequest(route, 'key', { kind: "another org's event id", value, foreign: true })));
}

const QUERY_NAMES = ['status', 'type', 'limit', 'order', 'cursor', '__proto__', 'constructor', 'status[]', '__proto__[admin]', 'x'];

const queryString = fc
  .array(
    fc.tuple(fc.constantFrom(...QUERY_NAMES), fc.oneof(injection, fc.constantFrom('all', 'pending', '0', '1001', '-1', '1e3', 'asc', 'DESC', '')), fc.boolean()),
    { minLength: 1, maxLength: 5 },
  )
  .map((pairs) => pairs.map(([name, value, raw]) => `${inUrl(name, false)}=${inUrl(value, raw)}`).join('&'));

/** A stand-in for path parameters where the probe is about something else. */
const SOME_ID = '0190a1b2-0000-7000-8000-000000000000';

function queryProbe(route: RouteSpec): fc.Arbitrary<HttpProbe> {
  return fc.record({ auth: authFor(route), query: queryString, noise: headerNoise }).map(({ auth, query, noise }) => ({
    kind: route.template === '/api/inbox' ? 'query: inbox filters' : 'query: ignored parameters',
    route: `${route.method} ${route.template}`,
    method: route.method,
    path: `${fillTemplate(route.template, SOME_ID)}?${query}`,
    auth,
    contentType: null,
    headers: noise,
  }));
}

/** Paths next to the route's: extra segments, dot segments, case, encoding, doubled slashes, length (uWS matches exactly: 404, or 405 where another template matches). */
function pathProbe(route: RouteSpec): fc.Arbitrary<HttpProbe> {
  const real = fillTemplate(route.template, SOME_ID);
  const variants: Record<string, string> = {
    suffix: `${real}/extra`,
    slash: `${real}/`,
    dots: `${real}/./../${real.split('/').pop()}`,
    case: real.toUpperCase(),
    encoded: real.replace(/[a-z]/, (c) => `%${c.charCodeAt(0).toString(16)}`),
    double: real.replace('/', '//'),
    long: `${real}/${'seg/'.repeat(2000)}`,
    traversal: `/api/../../../../etc/passwd?x=${real}`,
  };
  return fc.tuple(fc.constantFrom(...Object.keys(variants)), fc.constantFrom('GET', 'POST', 'DELETE', 'HEAD')).map(([how, method]) => ({
    kind: `path: ${how}`, route: 'unrouted', method, path: variants[how]!, auth: 'key' as const, contentType: null, headers: {},
    // A variant can land on another route's template (/api/events/extra is GET /api/events/{id}): a bad id there.
    expectCodes: ['not_found', 'method_not_allowed', ...(matchesIdTemplate(method, variants[how]!) ? ['invalid_id'] : [])],
  }));
}

/** True when `path` lands on a route with an {id} segment for `method` (HEAD answers as GET). */
function matchesIdTemplate(method: string, path: string): boolean {
  const wanted = method === 'HEAD' ? 'GET' : method;
  const template = documentedTemplate(path.split('?', 1)[0]!);
  return template !== undefined && template.includes('{') && ROUTES.some((route) => route.method === wanted && route.template === template);
}

function methodProbe(route: RouteSpec): fc.Arbitrary<HttpProbe> {
  // Methods uWS knows; others (PROPFIND, PURGE, made-up ones) get the connection closed: see attacks.ts.
  return fc.constantFrom('PUT', 'PATCH', 'OPTIONS', 'TRACE').map((method) => ({
    kind: 'method: not allowed',
    route: 'unrouted',
    method,
    path: fillTemplate(route.template, SOME_ID),
    auth: 'key' as const,
    contentType: null,
    headers: {},
    expectCodes: ['method_not_allowed'],
  }));
}

/** Credentials odd in form (huge, latin1, other schemes, empty) and never valid: every protected route refuses. */
function authProbe(route: RouteSpec): fc.Arbitrary<HttpProbe> {
  return fc
    .tuple(
      fc.oneof(
        fc.constantFrom('Bearer', 'Bearer ', 'Basic Og==', 'Bearer a b', 'Digest x', 'bearer\tzap_live_x', 'Bearer zap_live_\u00e9\u00ff'),
        fc.integer({ min: 1000, max: 30_000 }).map((n) => `Bearer zap_live_${'k'.repeat(n)}`),
        headerSafe.map((text) => `Bearer ${text}`),
      ),
      fc.option(fc.oneof(headerSafe, fc.constant('zap_live_\u00e9\u00e8'), fc.integer({ min: 1000, max: 30_000 }).map((n) => 'x'.repeat(n)))),
    )
    .map(([authorization, apiKey]) => ({
      kind: 'auth: malformed credentials',
      route: `${route.method} ${route.template}`,
      method: route.method,
      path: fillTemplate(route.template, SOME_ID),
      auth: 'no-key' as const,
      contentType: null,
      headers: { authorization, ...(apiKey === null ? {} : { 'x-api-key': apiKey }) },
      expectCodes: ['missing_api_key', 'invalid_api_key', 'admin_token_required'],
    }));
}

/** Every kind of probe that applies to `route`. */
function routeProbe(route: RouteSpec, foreignIds: readonly string[]): fc.Arbitrary<HttpProbe> {
  const kinds: Array<{ weight: number; arbitrary: fc.Arbitrary<HttpProbe> }> = [
    { weight: 3, arbitrary: queryProbe(route) },
    { weight: 1, arbitrary: pathProbe(route) },
    { weight: 1, arbitrary: methodProbe(route) },
  ];
  if (route.auth !== 'none') kinds.push({ weight: 2, arbitrary: authProbe(route) });
  if (route.template.includes('{')) kinds.push({ weight: 4, arbitrary: idProbe(route, foreignIds) });
  if (route.body) kinds.push({ weight: 10, arbitrary: bodyProbe(route as RouteSpec & { body: NonNullable<RouteSpec['body']> }) });
  return fc.oneof(...kinds);
}

function httpProbe(foreignIds: readonly string[]): fc.Arbitrary<HttpProbe> {
  return fc.oneof(
    { weight: 1, arbitrary: fc.constantFrom(...ROUTES).chain((route) => routeProbe(route, foreignIds)) },
    // JSON bodies are where most of the parsing is: half of the requests go there.
    { weight: 1, arbitrary: fc.constantFrom(...BODY_ROUTES).chain((route) => bodyProbe(route)) },
  );
}

function credentials(target: FuzzTarget, auth: AuthVariant): Record<string, string> {
  switch (auth) {
    case 'key': return { 'x-api-key': target.key };
    case 'bearer': return { authorization: `Bearer ${target.key}` };
    case 'wrong-key': return { 'x-api-key': `zap_live_${'A'.repeat(43)}` };
    case 'garbage-key': return { 'x-api-key': `k${target.key.slice(1)}` };
    case 'admin': return { authorization: `Bearer ${target.adminToken}` };
    case 'wrong-admin': return { authorization: `Bearer ${target.adminToken.slice(0, -1)}x` };
    case 'no-key': return {};
  }
}

/** What is wrong with `reply` as an answer to `probe`, or null. */
function replyProblem(probe: Pick<HttpProbe, 'route' | 'method' | 'expectCodes'>, reply: Pick<ParsedReply, 'status' | 'text' | 'body'> & { contentType: string }): string | null {
  if (reply.status >= 500) return `server error ${reply.status}`;
  if (STACK_TRACE.test(reply.text)) return 'a stack trace or source path in the body';
  if (probe.method === 'HEAD' || reply.status === 204) return null;
  if (reply.status >= 400) {
    if (!reply.contentType.startsWith('application/json')) return `error with content-type ${reply.contentType}`;
    const body = reply.body;
    if (typeof body !== 'object' || body === null || typeof body.error !== 'string' || typeof body.code !== 'string' || !/^[a-z]+(_[a-z]+)*$/.test(body.code)) {
      return 'error body is not {error, code}';
    }
    if (probe.expectCodes && !probe.expectCodes.includes(body.code)) return `code ${body.code}, expected ${probe.expectCodes.join(' or ')}`;
    return null;
  }
  if (probe.method === 'GET' || probe.method === 'HEAD') return null;
  if (!HARMLESS_SUCCESS.has(probe.route)) return `${reply.status} to garbage on ${probe.route}: something was created or changed`;
  if (probe.route === 'POST /api/events/batch' && reply.body?.accepted !== 0) return `the batch accepted ${reply.body?.accepted} garbage events`;
  if (probe.route === 'POST /api/ack' && reply.body?.acknowledged?.length !== 0) return `ack acknowledged ${JSON.stringify(reply.body?.acknowledged)}`;
  if (probe.expectCodes && probe.route !== 'POST /api/keys/rotate') return `success ${reply.status}, expected ${probe.expectCodes.join(' or ')}`;
  return null;
}

function describe(probe: HttpProbe): string {
  const body = probe.body === undefined ? '' : ` body(${probe.body.length} B)=${JSON.stringify(probe.body.subarray(0, 160).toString('latin1'))}`;
  const headers = Object.entries(probe.headers).map(([name, value]) => `${name}=${JSON.stringify(value.slice(0, 80))}${value.length > 80 ? `(${value.length} chars)` : ''}`).join(' ');
  return `${probe.kind}: ${probe.method} ${probe.path.slice(0, 200)} auth=${probe.auth} content-type=${JSON.stringify(probe.contentType)}${headers ? ` headers: ${headers}` : ''}${body}`;
}

/** Below uWS's 4 KiB for a head in pieces, less what node:http adds (request line, host, content-length). */
const UWS_SPLIT_HEAD_LIMIT = 4096 - 128;

function headBytes(path: string, headers: Record<string, string>): number {
  return Object.entries(headers).reduce((sum, [name, value]) => sum + name.length + value.length + 4, path.length);
}

async function sendProbe(target: FuzzTarget, probe: HttpProbe, report: BatchReport): Promise<void> {
  const headers: Record<string, string> = { ...probe.headers, ...credentials(target, probe.auth) };
  if (probe.contentType !== null) headers['content-type'] = probe.contentType;
  // A big body refused early with a 401 on a `Connection: close` request gets its connection closed
  // by uWS at once, and a client still writing sees EPIPE instead of the answer: keep-alive, as
  // real clients send, lets the server read and drop the rest and the answer be seen.
  if ((probe.body?.length ?? 0) > 256 * 1024) headers.connection = 'keep-alive';
  let reply: RawReply;
  try {
    reply = await rawRequest(target.server.port, { method: probe.method, path: probe.path, headers, ...(probe.body ? { body: probe.body } : {}), timeoutMs: 10_000 });
  } catch (error) {
    // A body over the route's limit (whatever else is wrong with it) is refused with a 413 that
    // closes the connection at once: a client still writing the rest may see the reset before the
    // answer (node:http reports a reset before any answer as "socket hang up", code ECONNRESET).
    const code = (error as NodeJS.ErrnoException).code ?? '';
    const reset = /EPIPE|ECONNRESET/.test(`${code} ${(error as Error).message}`);
    const limit = BODY_ROUTES.find((route) => `${route.method} ${route.template}` === probe.route)?.body.limit ?? Number.POSITIVE_INFINITY;
    if ((probe.body?.length ?? 0) > limit && reset) {
      bump(report.outcomes, 'over-limit body cut off while sending');
      return;
    }
    // uWS keeps at most 4 KiB of a request head that arrives in more than one read (a compile-time
    // buffer); past that it closes the connection without an answer. Under load big heads get split.
    if (headBytes(probe.path, headers) > UWS_SPLIT_HEAD_LIMIT && reset) {
      bump(report.outcomes, 'oversized head arriving in pieces: closed by uWS');
      return;
    }
    // No answer in time, a broken connection, or (from the shared helper) an answer off the OpenAPI document.
    throw new Error(`${describe(probe)}\n  → ${(error as Error).message}`);
  }
  bump(report.outcomes, `http ${reply.status}`);
  const contentType = String(reply.headers['content-type'] ?? '');
  const problem = replyProblem(probe, { status: reply.status, text: reply.text, body: reply.body, contentType });
  if (problem) throw new Error(`${describe(probe)}\n  → ${reply.status} ${reply.text.slice(0, 300)}\n  → ${problem}`);
  if (probe.route === 'POST /api/keys/rotate' && reply.status === 200) target.key = reply.body.api_key;
}

// ---- the batch ------------------------------------------------------------------------------------------------

/** Uses the server as an ordinary client would, every 100 ms, until stopped; records failures and the slowest answer. */
function watch(target: FuzzTarget, report: BatchReport): () => Promise<void> {
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const [path, key] of [['/health/ready', undefined], ['/api/inbox?limit=1', target.watchKey]] as const) {
        const started = Date.now();
        try {
          const reply = await rawRequest(target.server.port, { method: 'GET', path, headers: key ? { 'x-api-key': key } : {}, timeoutMs: 5_000 });
          if (reply.status !== 200) report.problems.push(`watcher: GET ${path} answered ${reply.status} ${reply.text.slice(0, 200)} during the attacks`);
        } catch (error) {
          report.problems.push(`watcher: GET ${path} failed during the attacks: ${(error as Error).message}`);
        }
        report.watcherMaxMs = Math.max(report.watcherMaxMs, Date.now() - started);
        report.watcherRequests++;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return async () => {
    running = false;
    await loop;
  };
}

async function runAttacks(target: FuzzTarget, options: BatchOptions, lingering: Lingering, report: BatchReport): Promise<void> {
  const attacks = [...EARLY_ANSWERS, ...fc.sample(rawAttack, { numRuns: options.attacks, seed: options.seed })];
  let next = 0;
  const lane = async () => {
    while (next < attacks.length) {
      const attack = attacks[next++]!;
      bump(report.tried, `raw: ${attack.label.replace(/\d+/g, 'N')}`);
      const outcome = await sendAttack(target.server.port, attack, target.key);
      bump(report.outcomes, outcome.replies.length > 0 ? 'raw answered' : outcome.closed ? 'raw closed at once' : 'raw left quiet');
      const where = `raw attack "${attack.label}" (seed ${options.seed})`;
      for (const reply of outcome.replies) {
        const problem = replyProblem({ route: 'raw', method: 'GET', expectCodes: undefined }, { ...reply, contentType: reply.headers['content-type'] ?? '' });
        if (problem) report.problems.push(`${where}: ${reply.status} ${reply.text.slice(0, 200)}: ${problem}`);
      }
      if (outcome.junk !== '' && !outcome.closed) report.problems.push(`${where}: unparseable bytes from the server: ${JSON.stringify(outcome.junk)}`);
      if (attack.maxReplies !== undefined && outcome.replies.length > attack.maxReplies) {
        report.problems.push(`${where}: ${outcome.replies.length} answers, at most ${attack.maxReplies} allowed (a request inside a body was answered?)`);
      }
      if (attack.minReplies !== undefined && outcome.replies.length < attack.minReplies) {
        // uWS cuts a connection that pipelines a request behind an answer still pending (any route
        // that awaits I/O), dropping that answer: a client that pipelines gets a closed connection.
        if (outcome.closed) bump(report.outcomes, 'raw pipeline cut by the server');
        else report.problems.push(`${where}: ${outcome.replies.length} answers to ${attack.minReplies} valid requests, and the connection is still open`);
      }
      if (outcome.socket) lingering.add(outcome.socket, attack.label);
    }
  };
  await Promise.all(Array.from({ length: 8 }, lane));
}

export async function fuzzBatch(target: FuzzTarget, options: BatchOptions): Promise<BatchReport> {
  const started = Date.now();
  const report: BatchReport = {
    seed: options.seed, tried: new Map(), routes: new Map(), outcomes: new Map(), longestQuietMs: 0, slow: [], watcherMaxMs: 0, watcherRequests: 0, problems: [], durationMs: 0,
  };
  const logsBefore = target.server.logs.length;
  const before = await snapshot(target.server, target.sql);
  const lingering = new Lingering();
  const slow = options.slowConnections > 0 ? slowloris(target.server.port, target.key, options.slowConnections) : Promise.resolve([]);
  const stopWatching = watch(target, report);
  try {
    await runAttacks(target, options, lingering, report);
    const send = async (probe: HttpProbe) => {
      bump(report.tried, probe.kind);
      bump(report.routes, probe.route);
      await sendProbe(target, probe, report);
    };
    try {
      // First a sweep, so that every route gets requests and every id route every foreign id,
      // whatever the random draw.
      for (const route of ROUTES) {
        const sweep = [...fc.sample(queryProbe(route), { numRuns: 1, seed: options.seed }), ...fc.sample(routeProbe(route, target.foreignIds), { numRuns: 2, seed: options.seed })];
        for (const probe of sweep) await send(probe);
      }
      for (const probe of foreignIdRequests(target.foreignIds)) await send(probe);
      await fc.assert(fc.asyncProperty(httpProbe(target.foreignIds), send), { numRuns: options.requests, seed: options.seed, endOnFailure: true });
    } catch (error) {
      // fast-check puts the property's own error (the request and its answer) in `cause`.
      const cause = (error as Error).cause;
      report.problems.push(`${(error as Error).message}${cause instanceof Error ? `\n${cause.message}` : ''}`);
    }
    const { leftOpen, longestMs } = await lingering.drain();
    report.longestQuietMs = longestMs;
    report.problems.push(...leftOpen.map((line) => `the server kept a quiet connection open: ${line}`));
    report.slow = await slow;
    for (const outcome of report.slow) {
      if (outcome.closedAfterMs === null) report.problems.push(`slowloris (${outcome.mode}): still open after ${SERVER_CLOSE_DEADLINE_MS} ms (${outcome.bytesSent} bytes trickled)`);
      for (const reply of outcome.replies) {
        const problem = replyProblem({ route: 'raw', method: 'GET', expectCodes: undefined }, { ...reply, contentType: reply.headers['content-type'] ?? '' });
        if (problem) report.problems.push(`slowloris (${outcome.mode}): ${reply.status}: ${problem}`);
      }
    }
  } finally {
    lingering.destroyAll();
    await stopWatching();
  }

  const after = await snapshot(target.server, target.sql);
  report.problems.push(...stateChanges(before, after).map((change) => `state changed by garbage: ${change}`));
  const errors = target.server.logs.slice(logsBefore).filter((line) => line.includes('unexpected error') || /"level":(50|60)/.test(line));
  report.problems.push(...errors.map((line) => `server logged an error: ${line.slice(0, 500)}`));
  try {
    await assertHealthy(target.server, target.key);
  } catch (error) {
    report.problems.push(`not healthy after the batch: ${(error as Error).message}`);
  }
  report.durationMs = Date.now() - started;
  return report;
}

/** A few lines for a person: inputs tried by kind, outcomes, quiet connections, slowloris, watcher. */
export function summarize(report: BatchReport): string {
  const list = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]).map(([name, count]) => `${name} ×${count}`).join(', ');
  const closed = report.slow.filter((outcome) => outcome.closedAfterMs !== null).map((outcome) => outcome.closedAfterMs!);
  return [
    `seed ${report.seed}, ${(report.durationMs / 1000).toFixed(1)} s`,
    `  tried: ${list(report.tried)}`,
    `  outcomes: ${list(report.outcomes)}`,
    `  quiet connections closed by the server after at most ${report.longestQuietMs} ms`,
    report.slow.length ? `  slowloris: ${closed.length}/${report.slow.length} closed by the server after ${Math.min(...closed)}..${Math.max(...closed)} ms` : '  slowloris: none',
    `  watcher: ${report.watcherRequests} requests during the attacks, slowest ${report.watcherMaxMs} ms`,
    report.problems.length ? `  PROBLEMS (${report.problems.length}):\n${report.problems.map((line) => `    - ${line}`).join('\n')}` : '  no problems',
  ].join('\n');
}
