// Security checks against live servers: tenancy (another org's ids are 404 on every id route, and
// its state is untouched), rotated keys refused on every acceptor thread, admin token comparison,
// no secret in any log line (LOG_LEVEL=trace), the SSRF matrix without WEBHOOK_ALLOW_PRIVATE, and
// response headers (no version banner beyond uWS's major version, nosniff, no stack traces).
//
// Two servers on two databases: `open` (WEBHOOK_ALLOW_PRIVATE, so an org can have a webhook endpoint
// on a local receiver) and `strict` (4 acceptor threads, no WEBHOOK_ALLOW_PRIVATE, its Postgres
// behind a proxy that can cut it off).
import { randomBytes } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fillTemplate, ROUTES } from './fuzz/routes.ts';
import { BLOCKED_URLS } from './helpers/blocked-urls.ts';
import { freshRequest, freshRequests, rawExchange } from './helpers/http.ts';
import { PgProxy } from './helpers/pg-proxy.ts';
import { configureEndpoint, Receiver, sendEvent } from './helpers/receiver.ts';
import { createTestDatabase, expectError, TestServer, waitFor, type Reply, type TestDatabase } from './helpers/server.ts';

const ADMIN_TOKEN = `admin_${randomBytes(24).toString('base64url')}`;
const WEBHOOK_SECRET_KEY = randomBytes(32).toString('base64');
/** Keys presented that were never issued: they must not be logged either. */
const WRONG_KEY = `zap_live_${randomBytes(32).toString('base64url')}`;

interface Org {
  key: string;
  id: string;
}

interface Ctx {
  db: TestDatabase;
  strictDb: TestDatabase;
  proxy: PgProxy;
  receiver: Receiver;
  open: TestServer;
  strict: TestServer;
  /** Every API key, webhook secret and token issued or presented: none may reach a log line. */
  secrets: Set<string>;
}

const security = suite<Ctx>('security');

security.before(async (ctx) => {
  try {
    [ctx.db, ctx.strictDb, ctx.receiver] = await Promise.all([createTestDatabase(), createTestDatabase(), Receiver.start()]);
    ctx.proxy = await PgProxy.forDatabase(ctx.strictDb.url);
    const common = { LOG_LEVEL: 'trace', ADMIN_TOKEN, WEBHOOK_SECRET_KEY };
    [ctx.open, ctx.strict] = await Promise.all([
      TestServer.start(ctx.db.url, { ...common, WEBHOOK_ALLOW_PRIVATE: 'true' }),
      TestServer.start(ctx.proxy.urlFor(ctx.strictDb.url), { ...common, ACCEPTOR_THREADS: '4' }),
    ]);
    ctx.secrets = new Set([ADMIN_TOKEN, WEBHOOK_SECRET_KEY, WRONG_KEY]);
  } catch (error) {
    console.error('security: setup failed:', error);
    throw error;
  }
});

security.after(async (ctx) => {
  await Promise.all([ctx.open?.close(), ctx.strict?.close(), ctx.receiver?.close()]);
  await ctx.proxy?.stop();
  await Promise.all([ctx.db?.drop(), ctx.strictDb?.drop()]);
});

async function org(ctx: Ctx, server: TestServer, name: string): Promise<Org> {
  const { key, organizationId } = await server.createKey('pro', name);
  ctx.secrets.add(key);
  return { key, id: organizationId };
}

const describeReply = (reply: Reply) => `${reply.status} ${reply.text.slice(0, 300)}`;

// ---------------------------------------------------------------- tenancy

security('tenancy: every id route answers 404 for another org\'s event ids, and that org\'s state is unchanged', async (ctx) => {
  const { open, db } = ctx;
  const [victim, attacker] = await Promise.all([org(ctx, open, 'victim'), org(ctx, open, 'attacker')]);
  // The attacker has an active endpoint, so redeliver gets past its 409 no_webhook_endpoint to the id.
  ctx.secrets.add((await configureEndpoint(open, attacker.key, ctx.receiver)).secret);
  const victimIds: string[] = [];
  for (let i = 0; i < 3; i++) {
    const reply = await open.request('POST', '/api/events', { key: victim.key, body: { type: 'victim.secret', payload: { i }, dedup_id: `victim-dedup-${i}` } });
    assert.is(reply.status, 202, reply.text);
    victimIds.push(reply.body.id);
  }
  assert.is((await open.request('POST', `/api/ack/${victimIds[2]}`, { key: victim.key })).status, 200);
  await waitFor('the victim\'s events in Postgres', async () => (await db.sql`select count(*)::int as n from events where organization_id = ${victim.id}`)[0]!.n === 3);
  const victimState = () => db.sql`
    select id, status, acknowledged_at, next_attempt_at, schedule_step, attempt_count from events where organization_id = ${victim.id} order by id`;
  const before = await victimState();
  const unknown = '01900000-0000-7000-8000-000000000000';
  const notFound = await open.request('GET', `/api/events/${unknown}`, { key: attacker.key });

  const problems: string[] = [];
  const expect404 = (what: string, reply: Reply) => {
    if (reply.status !== 404 || reply.body?.code !== 'not_found') problems.push(`${what}: ${describeReply(reply)}`);
    // Exactly the answer an id that exists nowhere gets: nothing tells the two apart.
    else if (reply.text !== notFound.text) problems.push(`${what}: answer differs from an unknown id's: ${reply.text}`);
  };
  for (const id of victimIds) {
    for (const form of [id, id.toUpperCase()]) {
      expect404(`GET /api/events/${form}`, await open.request('GET', `/api/events/${form}`, { key: attacker.key }));
      const head = await open.request('HEAD', `/api/events/${form}`, { key: attacker.key });
      if (head.status !== 404) problems.push(`HEAD /api/events/${form}: ${head.status}`);
      expect404(`POST /api/ack/${form}`, await open.request('POST', `/api/ack/${form}`, { key: attacker.key }));
      expect404(`POST /api/events/${form}/redeliver`, await open.request('POST', `/api/events/${form}/redeliver`, { key: attacker.key }));
    }
  }
  const batchAck = await open.request('POST', '/api/ack', { key: attacker.key, body: { ids: [...victimIds, ...victimIds.map((id) => id.toUpperCase())] } });
  if (batchAck.status !== 200 || batchAck.body.acknowledged.length !== 0 || batchAck.body.not_found.length !== victimIds.length) {
    problems.push(`POST /api/ack with the victim's ids: ${describeReply(batchAck)}`);
  }
  for (const query of ['', '?status=all', '?status=pending', '?status=acknowledged', '?status=delivered', '?status=failed', '?type=victim.secret&status=all', '?order=desc&status=all']) {
    const inbox = await open.request('GET', `/api/inbox${query}`, { key: attacker.key });
    if (inbox.status !== 200 || inbox.text.includes('victim')) problems.push(`GET /api/inbox${query}: ${describeReply(inbox)}`);
  }
  // dedup_id is per organization: the victim's dedup_ids neither collide with nor reveal its events.
  const dedup = await open.request('POST', '/api/events', { key: attacker.key, body: { type: 'attacker', payload: {}, dedup_id: 'victim-dedup-0' } });
  if (dedup.status !== 202 || victimIds.some((id) => dedup.text.includes(id))) problems.push(`POST /api/events with the victim's dedup_id: ${describeReply(dedup)}`);
  // The attacker's own config and key show only its own organization.
  const info = await open.request('GET', '/api/keys', { key: attacker.key });
  if (info.body?.organization_id !== attacker.id) problems.push(`GET /api/keys: ${describeReply(info)}`);
  assert.equal(problems, [], problems.join('\n'));

  assert.equal(await victimState(), before, 'the victim\'s events changed');
  for (const id of victimIds) assert.is((await open.request('GET', `/api/events/${id}`, { key: victim.key })).status, 200);
});

// ---------------------------------------------------------------- rotation on every thread

security('rotate with ACCEPTOR_THREADS=4: the old key is refused by every authenticated route on fresh connections, the new one accepted', async (ctx) => {
  const { strict } = ctx;
  const authenticated = ROUTES.filter((route) => route.auth === 'apiKey' && route.template !== '/api/keys/rotate');
  const someId = '01900000-0000-7000-8000-000000000000';
  // Each route on CONNECTIONS_PER_ROUTE fresh connections: SO_REUSEPORT spreads them over the 4
  // threads (all landing on one thread would take (1/4)^(n-1) odds).
  const CONNECTIONS_PER_ROUTE = 6;
  const sweep = (key: string) =>
    freshRequests(authenticated.length * CONNECTIONS_PER_ROUTE, 8, (i) => {
      const route = authenticated[i % authenticated.length]!;
      return freshRequest(strict.port, route.method, fillTemplate(route.template, someId), { key });
    });
  const subject = await org(ctx, strict, 'rotating');
  let key = subject.key;
  for (let round = 0; round < 2; round++) {
    // Warm: every thread caches the key.
    for (const reply of await sweep(key)) assert.is.not(reply.status, 401, `round ${round}, warm: ${describeReply(reply)}`);
    const rotated = await freshRequest(strict.port, 'POST', '/api/keys/rotate', { key });
    assert.is(rotated.status, 200, rotated.text);
    const oldKey = key;
    key = rotated.body.api_key;
    ctx.secrets.add(key);
    const stale = await sweep(oldKey);
    stale.forEach((reply, i) => {
      const route = authenticated[i % authenticated.length]!;
      if (reply.status !== 401 || reply.body?.code !== 'invalid_api_key') {
        throw new Error(`round ${round}: the rotated-away key on ${route.method} ${route.template} (connection ${i}): ${describeReply(reply)}`);
      }
    });
    for (const reply of await sweep(key)) assert.is.not(reply.status, 401, `round ${round}, new key: ${describeReply(reply)}`);
  }
});

// ---------------------------------------------------------------- comparisons of secrets

security('admin token: wrong tokens of the same and of other lengths → 401; only the exact token is accepted', async (ctx) => {
  const body = { organization_name: 'admin check' };
  const last = ADMIN_TOKEN.at(-1) === 'A' ? 'B' : 'A';
  const wrong = [
    `${ADMIN_TOKEN.slice(0, -1)}${last}`, // same length, last byte differs
    `${last}${ADMIN_TOKEN.slice(1)}`, // same length, first byte differs
    'x'.repeat(ADMIN_TOKEN.length),
    ADMIN_TOKEN.slice(0, -1),
    `${ADMIN_TOKEN}${ADMIN_TOKEN}`,
    'a',
  ];
  for (const token of wrong) {
    const reply = await ctx.strict.request('POST', '/api/keys/generate', { body, headers: { authorization: `Bearer ${token}` } });
    expectError(reply, 401, 'admin_token_required');
  }
  const ok = await ctx.strict.request('POST', '/api/keys/generate', { body, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.is(ok.status, 201, ok.text);
  ctx.secrets.add(ok.body.api_key);
  // An API key differing from a real one in its last character is just an unknown key.
  const near = `${ok.body.api_key.slice(0, -1)}${ok.body.api_key.at(-1) === 'A' ? 'B' : 'A'}`;
  ctx.secrets.add(near);
  expectError(await ctx.strict.request('GET', '/api/keys', { key: near }), 401, 'invalid_api_key');
});

// ---------------------------------------------------------------- SSRF

security('SSRF: without WEBHOOK_ALLOW_PRIVATE every blocked URL class → 400 blocked_webhook_url on the live server', async (ctx) => {
  const subject = await org(ctx, ctx.strict, 'ssrf');
  const problems: string[] = [];
  for (const url of BLOCKED_URLS) {
    const reply = await ctx.strict.request('POST', '/api/webhook/config', { key: subject.key, body: { webhook_url: url } });
    if (reply.status !== 400 || reply.body?.code !== 'blocked_webhook_url' || reply.body?.field !== 'webhook_url') problems.push(`${url}: ${describeReply(reply)}`);
  }
  assert.equal(problems, [], problems.join('\n'));
  expectError(await ctx.strict.request('GET', '/api/webhook/config', { key: subject.key }), 404, 'not_found');
  assert.is((await ctx.strictDb.sql`select count(*)::int as n from webhook_endpoints`)[0]!.n, 0);
});

// ---------------------------------------------------------------- headers and error bodies

/** Fields an error body may have besides error and code (see src/errors.ts and the routes). */
const ERROR_FIELDS = new Set(['error', 'code', 'field', 'id', 'limit', 'retry_after']);

function checkHeaders(what: string, reply: Reply, problems: string[]): void {
  for (const banner of ['server', 'x-powered-by']) {
    if (reply.headers.get(banner) !== null) problems.push(`${what}: ${banner}: ${reply.headers.get(banner)}`);
  }
  // uWS writes `uWebSockets: 20` on every answer and this build cannot turn it off from JS (see
  // README): at least it names only the major version.
  const mark = reply.headers.get('uwebsockets');
  if (mark !== null && mark !== '20') problems.push(`${what}: uWebSockets: ${mark}`);
  // (GET /docs sets it once more itself: fetch joins the two as "nosniff, nosniff".)
  const nosniff = reply.headers.get('x-content-type-options')?.split(',').every((value) => value.trim() === 'nosniff');
  if (reply.status !== 204 && !nosniff) problems.push(`${what}: no X-Content-Type-Options: nosniff`);
  if (reply.status >= 400) {
    const extra = Object.keys(reply.body ?? {}).filter((name) => !ERROR_FIELDS.has(name));
    if (extra.length > 0) problems.push(`${what}: unexpected error fields ${extra.join(', ')}`);
    if (/\n\s+at |\.ts:\d+|node:internal|\/src\//.test(reply.text)) problems.push(`${what}: a stack trace or source path in the body: ${reply.text.slice(0, 300)}`);
  }
}

security('headers: no Server/X-Powered-By banner, nosniff on every answer, error bodies without stack traces (also a 5xx)', async (ctx) => {
  const { strict, open } = ctx;
  const subject = await org(ctx, strict, 'headers');
  const problems: string[] = [];
  const sent: Array<[string, Reply]> = [
    ['GET /health', await strict.request('GET', '/health')],
    ['GET /health/ready', await strict.request('GET', '/health/ready')],
    ['GET /metrics', await strict.request('GET', '/metrics')],
    ['GET /openapi.json', await strict.request('GET', '/openapi.json')],
    ['GET /docs', await strict.request('GET', '/docs')],
    ['GET /api/keys', await strict.request('GET', '/api/keys', { key: subject.key })],
    ['GET /api/keys without key', await strict.request('GET', '/api/keys')],
    ['HEAD /api/keys', await strict.request('HEAD', '/api/keys', { key: subject.key })],
    ['POST /api/events', await strict.request('POST', '/api/events', { key: subject.key, body: { type: 'h', payload: {} } })],
    ['POST /api/events invalid', await strict.request('POST', '/api/events', { key: subject.key, raw: '{', headers: { 'content-type': 'application/json' } })],
    ['GET /nowhere', await strict.request('GET', '/nowhere')],
    ['PUT /api/keys', await strict.request('PUT', '/api/keys')],
    ['DELETE /api/webhook/config', await open.request('DELETE', '/api/webhook/config', { key: (await org(ctx, open, 'no endpoint')).key })],
  ];
  // The body never comes: the 413 waits for it up to 5 s (src/http/exchange.ts), then closes.
  const declared = await rawExchange(strict.port, ['POST /api/events HTTP/1.1', 'Host: x', `X-API-Key: ${subject.key}`, `Content-Length: ${2 * 1024 * 1024}`], '', 15_000);
  sent.push(['413 declared', declared]);
  for (const [what, reply] of sent) checkHeaders(what, reply, problems);

  // A 5xx: Postgres cut off, and a key no thread has cached (its lookup fails). An event of a cached
  // key drains into the outage, so the server logs an error object (the log test scans those too).
  await ctx.proxy.close();
  try {
    const failed = await freshRequest(strict.port, 'GET', '/api/keys', { key: WRONG_KEY });
    assert.ok(failed.status >= 500, `expected a 5xx with Postgres unreachable, got ${describeReply(failed)}`);
    assert.equal(Object.keys(failed.body).sort(), ['code', 'error'], failed.text);
    checkHeaders('GET /api/keys with Postgres unreachable', failed, problems);
    assert.is((await strict.request('POST', '/api/events', { key: subject.key, body: { type: 'outage', payload: {} } })).status, 202);
    await waitFor('the drain to log its failure', () => strict.logs.some((line) => line.includes('drain batch failed')));
  } finally {
    await ctx.proxy.reopen();
  }
  assert.equal(problems, [], problems.join('\n'));
});

// ---------------------------------------------------------------- logs (runs last: it collects from every test above)

security('no API key, webhook secret, admin token or presented key in any log line (LOG_LEVEL=trace)', async (ctx) => {
  const { open, strict } = ctx;
  // What has not been exercised above: webhook secret rotation, failed auth with a wrong key and a wrong admin token, deliveries.
  const subject = await org(ctx, open, 'log check');
  ctx.secrets.add((await configureEndpoint(open, subject.key, ctx.receiver)).secret);
  const rotated = await open.request('POST', '/api/webhook/rotate-secret', { key: subject.key });
  assert.is(rotated.status, 200, rotated.text);
  ctx.secrets.add(rotated.body.secret);
  const sent = await sendEvent(open, subject.key, 'log.check', { hello: 'world' });
  await ctx.receiver.until('a delivery of the log check event', (requests) => requests.some((request) => request.body?.id === sent.id));
  const keyRotation = await open.request('POST', '/api/keys/rotate', { key: subject.key });
  ctx.secrets.add(keyRotation.body.api_key);
  for (const server of [open, strict]) {
    await server.request('GET', '/api/keys', { key: WRONG_KEY });
    await server.request('GET', '/api/keys', { headers: { authorization: `Bearer ${WRONG_KEY}` } });
    await server.request('POST', '/api/keys/generate', { body: { organization_name: 'x' }, headers: { authorization: `Bearer ${ADMIN_TOKEN}x` } });
  }

  const forms = (secret: string) => {
    // The secret itself and, for whsec_ secrets, the base64 key inside it.
    const inner = /^whsec_(.+)$/.exec(secret)?.[1];
    return inner ? [secret, inner] : [secret];
  };
  const logs = [...open.logs, ...strict.logs];
  // The servers log little per request; the lines that matter are the ones carrying an error
  // object (here from the Postgres outage of the headers test), which are scanned too.
  assert.ok(logs.filter((line) => line.includes('"msg":"listening"')).length === 2, 'the logs of both servers were not captured');
  assert.ok(logs.some((line) => line.includes('"err":')), 'no log line with an error was captured');
  assert.ok(ctx.secrets.size > 15, `only ${ctx.secrets.size} secrets collected`);
  const leaks: string[] = [];
  for (const secret of ctx.secrets) {
    for (const form of forms(secret)) {
      const line = logs.find((candidate) => candidate.includes(form));
      if (line) leaks.push(`${form.slice(0, 12)}… in: ${line.slice(0, 300)}`);
    }
  }
  assert.equal(leaks, [], leaks.join('\n'));
});

security.run();
