// API keys: POST /api/keys/generate (and ADMIN_TOKEN), GET /api/keys, POST /api/keys/rotate,
// key transport (X-API-Key / Bearer), and the contract's 404/405 answers.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connect } from '../src/db/postgres.ts';
import { freshRequest, freshRequests, rawExchange } from './helpers/http.ts';
import { expectError, TestServer, useTestDatabase, waitFor, type Reply, type TestDatabase } from './helpers/server.ts';

const ADMIN_TOKEN = 'test-admin-token-7f3c9a1e5b2d4c6e8f0a';
const KEY_FORMAT = /^zap_live_[A-Za-z0-9_-]{43}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LIMITS = { free: 100, pro: 1000, business: 10000, enterprise: 100000 } as const;

interface Context {
  db: TestDatabase;
  /** ADMIN_TOKEN unset, one acceptor thread. */
  server: TestServer;
  /** ADMIN_TOKEN set. */
  admin: TestServer;
  /** ACCEPTOR_THREADS=2. */
  threaded: TestServer;
}

const keys = suite<Context>('keys');

useTestDatabase(keys, async (ctx) => {
  // Started together on one database: also exercises concurrent migrations.
  [ctx.server, ctx.admin, ctx.threaded] = await Promise.all([
    TestServer.start(ctx.db.url),
    TestServer.start(ctx.db.url, { ADMIN_TOKEN }),
    TestServer.start(ctx.db.url, { ACCEPTOR_THREADS: '2' }),
  ]);
});

function isIsoTimestamp(value: unknown): boolean {
  return typeof value === 'string' && !Number.isNaN(Date.parse(value)) && new Date(value).toISOString() === value;
}

/** The contract's error shape (JSON, error + code) plus the JSON content type. */
function expectJsonError(reply: Reply, status: number, code: string): Record<string, unknown> {
  const body = expectError(reply, status, code);
  assert.match(reply.headers.get('content-type') ?? '', /^application\/json/, `content-type of the ${status}`);
  return body;
}

function expectValidation(reply: Reply, field?: string): void {
  const body = expectJsonError(reply, 400, 'validation_error');
  assert.type(body.field, 'string', `validation_error without field: ${reply.text}`);
  if (field !== undefined) assert.is(body.field, field, reply.text);
}

async function generate(server: TestServer, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return server.request('POST', '/api/keys/generate', { body, headers });
}

/** Every row of every table in the public schema, as text. */
async function databaseText(db: TestDatabase): Promise<string> {
  const tables = await db.sql<{ name: string }[]>`
    select table_name as name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'`;
  const parts: string[] = [];
  for (const { name } of tables) {
    const rows = await db.sql<{ row: string }[]>`select t::text as row from ${db.sql(name)} t`;
    parts.push(...rows.map((row) => row.row));
  }
  return parts.join('\n');
}

/** Forms a leaked key could take in storage: as sent, its random part, and its 32 bytes in hex/base64. */
function keyForms(apiKey: string): string[] {
  const random = apiKey.slice('zap_live_'.length);
  const bytes = Buffer.from(random, 'base64url');
  return [apiKey, random, bytes.toString('hex'), bytes.toString('base64').replace(/=+$/, '')];
}

// ---------------------------------------------------------------- POST /api/keys/generate

keys('generate: 201 with every field; default tier free; key is zap_live_ + 256 bits base64url', async ({ server }) => {
  const before = Date.now();
  const reply = await generate(server, { organization_name: 'Acme Inc' });
  assert.is(reply.status, 201, reply.text);
  assert.match(reply.headers.get('content-type') ?? '', /^application\/json/);
  const body = reply.body;
  assert.match(body.organization_id, UUID);
  assert.is(body.organization_name, 'Acme Inc');
  assert.match(body.api_key, KEY_FORMAT);
  assert.is(Buffer.from(body.api_key.slice('zap_live_'.length), 'base64url').length, 32, 'the key carries 256 bits');
  assert.is(body.tier, 'free');
  assert.is(body.rate_limit_per_minute, 100);
  assert.ok(isIsoTimestamp(body.created_at), `created_at not ISO 8601: ${body.created_at}`);
  const created = Date.parse(body.created_at);
  // The database clock may be a little off the test's; a generous bound still catches nonsense.
  assert.ok(Math.abs(created - before) < 60_000, `created_at ${body.created_at} far from now`);
  const fields = Object.keys(body).sort();
  for (const field of ['api_key', 'created_at', 'organization_id', 'organization_name', 'rate_limit_per_minute', 'tier']) {
    assert.ok(fields.includes(field), `missing ${field}`);
  }
});

keys('generate: each tier gets its rate limit, and GET /api/keys and the events route agree', async ({ server }) => {
  for (const [tier, limit] of Object.entries(LIMITS)) {
    const reply = await generate(server, { organization_name: `tier ${tier}`, tier });
    assert.is(reply.status, 201, reply.text);
    assert.is(reply.body.tier, tier);
    assert.is(reply.body.rate_limit_per_minute, limit);
    const info = await server.request('GET', '/api/keys', { key: reply.body.api_key });
    assert.is(info.status, 200, info.text);
    assert.is(info.body.tier, tier);
    assert.is(info.body.rate_limit_per_minute, limit);
    const event = await server.request('POST', '/api/events', { key: reply.body.api_key, body: { type: 'tier.check', payload: {} } });
    assert.is(event.status, 202, event.text);
    assert.is(event.headers.get('ratelimit-limit'), String(limit), `events limit of tier ${tier}`);
  }
});

keys('generate: keys and organization ids are unique', async ({ server }) => {
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => generate(server, { organization_name: `unique ${i}` })));
  for (const reply of replies) assert.is(reply.status, 201, reply.text);
  assert.is(new Set(replies.map((reply) => reply.body.api_key)).size, 20);
  assert.is(new Set(replies.map((reply) => reply.body.organization_id)).size, 20);
});

keys('generate: organization_name of 255 characters (also astral ones) is accepted and round-trips', async ({ server }) => {
  for (const name of ['n'.repeat(255), '😀'.repeat(255), 'Ünïcödé 名前 ✓']) {
    const reply = await generate(server, { organization_name: name });
    assert.is(reply.status, 201, `${[...name].length} chars: ${reply.text.slice(0, 200)}`);
    assert.is(reply.body.organization_name, name);
    const info = await server.request('GET', '/api/keys', { key: reply.body.api_key });
    assert.is(info.body.organization_name, name);
  }
});

keys('generate: bad organization_name → 400 validation_error with field organization_name', async ({ server }) => {
  const cases: unknown[] = [
    {},
    { tier: 'pro' },
    { organization_name: '' },
    { organization_name: 'n'.repeat(256) },
    { organization_name: '😀'.repeat(256) },
    { organization_name: null },
    { organization_name: 42 },
    { organization_name: true },
    { organization_name: ['Acme'] },
    { organization_name: { name: 'Acme' } },
    // Postgres text cannot hold U+0000 or lone surrogates: refused up front, never a 500.
    { organization_name: 'nul\u0000byte' },
    { organization_name: 'lone \ud800 surrogate' },
  ];
  for (const body of cases) {
    const reply = await generate(server, body);
    try {
      expectValidation(reply, 'organization_name');
    } catch (error) {
      throw new Error(`${JSON.stringify(body).slice(0, 80)}: ${(error as Error).message}`);
    }
  }
});

keys('generate: bad tier → 400 validation_error with field tier', async ({ server }) => {
  for (const tier of ['gold', 'FREE', 'Pro', '', 5, true, ['free'], { tier: 'free' }]) {
    const reply = await generate(server, { organization_name: 'Acme', tier });
    try {
      expectValidation(reply, 'tier');
    } catch (error) {
      throw new Error(`tier ${JSON.stringify(tier)}: ${(error as Error).message}`);
    }
  }
});

keys('generate: a body that is not a JSON object → 400 validation_error with a field', async ({ server }) => {
  for (const raw of ['[]', '[{"organization_name":"Acme"}]', '"Acme"', '42', 'null', 'true']) {
    const reply = await server.request('POST', '/api/keys/generate', { raw: Buffer.from(raw), headers: { 'content-type': 'application/json' } });
    try {
      expectValidation(reply);
    } catch (error) {
      throw new Error(`body ${raw}: ${(error as Error).message}`);
    }
  }
});

keys('generate: invalid JSON → 400 invalid_json', async ({ server }) => {
  const bodies: Array<string | Buffer> = ['{"organization_name":', '{organization_name: "Acme"}', "{'organization_name':'Acme'}", '', Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])];
  for (const raw of bodies) {
    const reply = await server.request('POST', '/api/keys/generate', { raw: Buffer.from(raw), headers: { 'content-type': 'application/json' } });
    try {
      expectJsonError(reply, 400, 'invalid_json');
    } catch (error) {
      throw new Error(`body ${JSON.stringify(String(raw))}: ${(error as Error).message}`);
    }
  }
});

keys('generate: Content-Type other than application/json → 415; missing or parameterised application/json accepted', async ({ server }) => {
  const body = JSON.stringify({ organization_name: 'Media' });
  for (const contentType of ['text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'application/jsonx']) {
    const reply = await freshRequest(server.port, 'POST', '/api/keys/generate', { raw: body, headers: { 'content-type': contentType } });
    try {
      expectJsonError(reply, 415, 'unsupported_media_type');
    } catch (error) {
      throw new Error(`content-type ${contentType}: ${(error as Error).message}`);
    }
  }
  // freshRequest sends exactly these headers: here, no Content-Type at all.
  const missing = await freshRequest(server.port, 'POST', '/api/keys/generate', { raw: body });
  assert.is(missing.status, 201, `missing Content-Type: ${missing.text}`);
  for (const contentType of ['application/json; charset=utf-8', 'Application/JSON']) {
    const reply = await freshRequest(server.port, 'POST', '/api/keys/generate', { raw: body, headers: { 'content-type': contentType } });
    assert.is(reply.status, 201, `content-type ${contentType}: ${reply.text}`);
  }
});

keys('generate: an oversized body is refused with a JSON 4xx before it is read, never a 5xx', async ({ server }) => {
  // A declared Content-Length far over any sane limit and no body behind it: the server must
  // answer without waiting for the 2 MiB (a raw socket, as no HTTP client sends this).
  const reply = await rawExchange(server.port, [
    'POST /api/keys/generate HTTP/1.1',
    'Host: 127.0.0.1',
    'Content-Type: application/json',
    `Content-Length: ${2 * 1024 * 1024}`,
  ]);
  assert.ok(reply.status === 413 || reply.status === 400, `got ${reply.status} ${reply.text.slice(0, 200)}`);
  assert.type(reply.body?.code, 'string', reply.text.slice(0, 200));
  assert.type(reply.body?.error, 'string');
});

keys('keys are stored only as digests: no form of the raw key is anywhere in the database', async ({ server, db }) => {
  const reply = await generate(server, { organization_name: 'Digest Only' });
  assert.is(reply.status, 201, reply.text);
  const { api_key: apiKey, organization_id: id } = reply.body;
  const [row] = await db.sql<{ row: string }[]>`select o::text as row from organizations o where o.id = ${id}`;
  assert.ok(row, 'organization row not found in the organizations table');
  for (const form of keyForms(apiKey)) assert.not.ok(row.row.includes(form), `organizations row holds ${form}`);
  const rotated = await server.request('POST', '/api/keys/rotate', { key: apiKey });
  assert.is(rotated.status, 200, rotated.text);
  const everything = await databaseText(db);
  assert.ok(everything.includes(id), 'the dump must contain the organization (else this check is vacuous)');
  for (const key of [apiKey, rotated.body.api_key]) {
    for (const form of keyForms(key)) assert.not.ok(everything.includes(form), `the database holds ${form}`);
  }
});

keys('keys and the admin token never appear in server logs', async ({ server, admin, threaded }) => {
  const issued = await generate(server, { organization_name: 'Log Check' });
  assert.is(issued.status, 201);
  await server.request('GET', '/api/keys', { key: issued.body.api_key });
  await server.request('GET', '/api/keys', { key: 'zap_live_not-a-real-key-but-must-not-be-logged-either' });
  for (const instance of [server, admin, threaded]) {
    const logs = instance.logs.join('\n');
    assert.not.ok(logs.includes(issued.body.api_key), 'an API key was logged');
    assert.not.ok(logs.includes('not-a-real-key-but-must-not-be-logged'), 'a presented key was logged');
    assert.not.ok(logs.includes(ADMIN_TOKEN), 'the admin token was logged');
  }
});

keys('more organizations than RATE_LIMIT_SLOTS: generate never 500s, and every issued key works', async ({ db }) => {
  // The rate-limit table holds RATE_LIMIT_SLOTS organisations (16 is the smallest allowed). With
  // ADMIN_TOKEN unset anyone can create organisations, so filling it must not break the server.
  const small = await TestServer.start(db.url, { RATE_LIMIT_SLOTS: '16' });
  try {
    const problems: string[] = [];
    for (let i = 0; i < 24; i++) {
      const issued = await generate(small, { organization_name: `Slot ${i}` });
      if (issued.status !== 201) {
        problems.push(`generate ${i}: ${issued.status} ${issued.text}`);
        continue;
      }
      const info = await small.request('GET', '/api/keys', { key: issued.body.api_key });
      if (info.status !== 200) problems.push(`GET /api/keys of org ${i}: ${info.status} ${info.text}`);
    }
    assert.is(problems.length, 0, problems.join('\n'));
  } finally {
    await small.close();
  }
});

// ---------------------------------------------------------------- ADMIN_TOKEN

keys('ADMIN_TOKEN unset: the server warns at start; set: it does not', async ({ server, admin }) => {
  const warning = (logs: string[]) =>
    logs.find((line) => {
      try {
        const entry = JSON.parse(line);
        return entry.level === 40 && /ADMIN_TOKEN/.test(entry.msg);
      } catch {
        return false;
      }
    });
  assert.ok(warning(server.logs), `no warn-level line naming ADMIN_TOKEN in:\n${server.logs.slice(0, 10).join('\n')}`);
  assert.not.ok(warning(admin.logs), 'a warning about ADMIN_TOKEN although it is set');
});

keys('ADMIN_TOKEN set: generate needs Authorization: Bearer <ADMIN_TOKEN>', async ({ admin }) => {
  const body = { organization_name: 'Admin Made', tier: 'pro' };
  const refused: Array<[string, Record<string, string>]> = [
    ['no Authorization', {}],
    ['wrong token', { authorization: 'Bearer wrong-token' }],
    ['token prefix', { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}` }],
    ['token plus suffix', { authorization: `Bearer ${ADMIN_TOKEN}x` }],
    ['other scheme', { authorization: `Basic ${ADMIN_TOKEN}` }],
    ['bare token', { authorization: ADMIN_TOKEN }],
    ['token in X-API-Key', { 'x-api-key': ADMIN_TOKEN }],
  ];
  for (const [what, headers] of refused) {
    const reply = await generate(admin, body, headers);
    try {
      expectJsonError(reply, 401, 'admin_token_required');
    } catch (error) {
      throw new Error(`${what}: ${(error as Error).message}`);
    }
  }
  const ok = await generate(admin, body, { authorization: `Bearer ${ADMIN_TOKEN}` });
  assert.is(ok.status, 201, ok.text);
  assert.match(ok.body.api_key, KEY_FORMAT);
  assert.is(ok.body.tier, 'pro');
  // The issued key is an ordinary API key: it works without the admin token, and is not one.
  const info = await admin.request('GET', '/api/keys', { key: ok.body.api_key });
  assert.is(info.status, 200, info.text);
  assert.is(info.body.organization_id, ok.body.organization_id);
  expectJsonError(await generate(admin, body, { authorization: `Bearer ${ok.body.api_key}` }), 401, 'admin_token_required');
});

keys('ADMIN_TOKEN set: the token is checked before the body (a bad body without the token is a 401)', async ({ admin }) => {
  const reply = await admin.request('POST', '/api/keys/generate', { raw: Buffer.from('{not json'), headers: { 'content-type': 'application/json' } });
  expectJsonError(reply, 401, 'admin_token_required');
  const withToken = await admin.request('POST', '/api/keys/generate', {
    raw: Buffer.from('{not json'),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  expectJsonError(withToken, 400, 'invalid_json');
  expectValidation(await generate(admin, { organization_name: '' }, { authorization: `Bearer ${ADMIN_TOKEN}` }), 'organization_name');
});

// ---------------------------------------------------------------- GET /api/keys and key transport

keys('GET /api/keys: 200 with the organization, webhook_url null, and never the key', async ({ server }) => {
  const issued = await generate(server, { organization_name: 'Info Org', tier: 'business' });
  const reply = await server.request('GET', '/api/keys', { key: issued.body.api_key });
  assert.is(reply.status, 200, reply.text);
  assert.match(reply.headers.get('content-type') ?? '', /^application\/json/);
  assert.is(reply.body.organization_id, issued.body.organization_id);
  assert.is(reply.body.organization_name, 'Info Org');
  assert.is(reply.body.tier, 'business');
  assert.is(reply.body.rate_limit_per_minute, 10000);
  assert.ok('webhook_url' in reply.body, 'webhook_url must be present (null)');
  assert.is(reply.body.webhook_url, null);
  assert.is(reply.body.created_at, issued.body.created_at);
  assert.not.ok('api_key' in reply.body, 'GET /api/keys must not show the key again');
  assert.not.ok(reply.text.includes(issued.body.api_key.slice(9)), 'GET /api/keys leaks the key');
});

keys('GET /api/keys: each key sees its own organization', async ({ server }) => {
  const a = await generate(server, { organization_name: 'Org A' });
  const b = await generate(server, { organization_name: 'Org B' });
  const infoA = await server.request('GET', '/api/keys', { key: a.body.api_key });
  const infoB = await server.request('GET', '/api/keys', { key: b.body.api_key });
  assert.is(infoA.body.organization_id, a.body.organization_id);
  assert.is(infoA.body.organization_name, 'Org A');
  assert.is(infoB.body.organization_id, b.body.organization_id);
  assert.is(infoB.body.organization_name, 'Org B');
});

keys('missing key → 401 missing_api_key with WWW-Authenticate: ApiKey', async ({ server }) => {
  const cases: Array<[string, Record<string, string>]> = [
    ['no header', {}],
    ['empty X-API-Key', { 'x-api-key': '' }],
    ['Bearer without a key', { authorization: 'Bearer ' }],
  ];
  for (const [what, headers] of cases) {
    for (const [method, route] of [['GET', '/api/keys'], ['POST', '/api/keys/rotate']] as const) {
      const reply = await freshRequest(server.port, method, route, { headers });
      try {
        expectJsonError(reply, 401, 'missing_api_key');
        assert.is(reply.headers.get('www-authenticate'), 'ApiKey');
      } catch (error) {
        throw new Error(`${method} ${route}, ${what}: ${(error as Error).message}`);
      }
    }
  }
});

keys('unknown key → 401 invalid_api_key with WWW-Authenticate: ApiKey (X-API-Key and Bearer)', async ({ server }) => {
  const unknown = `zap_live_${Buffer.alloc(32, 7).toString('base64url')}`;
  const presented: Array<Record<string, string>> = [{ 'x-api-key': unknown }, { 'x-api-key': 'garbage' }, { authorization: `Bearer ${unknown}` }];
  for (const headers of presented) {
    // Twice: the second answer may come from a cache and must be the same.
    for (let i = 0; i < 2; i++) {
      for (const [method, route] of [['GET', '/api/keys'], ['POST', '/api/keys/rotate']] as const) {
        const reply = await server.request(method, route, { headers });
        expectJsonError(reply, 401, 'invalid_api_key');
        assert.is(reply.headers.get('www-authenticate'), 'ApiKey');
      }
    }
  }
});

keys('Authorization: Bearer <key> is accepted (any case of "Bearer")', async ({ server }) => {
  const issued = await generate(server, { organization_name: 'Bearer Org' });
  for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
    const reply = await server.request('GET', '/api/keys', { headers: { authorization: `${scheme} ${issued.body.api_key}` } });
    assert.is(reply.status, 200, `${scheme}: ${reply.text}`);
    assert.is(reply.body.organization_id, issued.body.organization_id);
  }
});

keys('both X-API-Key and Bearer sent: X-API-Key wins', async ({ server }) => {
  const a = await generate(server, { organization_name: 'Header Org A' });
  const b = await generate(server, { organization_name: 'Header Org B' });
  const bogus = `zap_live_${Buffer.alloc(32, 9).toString('base64url')}`;
  const validHeader = await server.request('GET', '/api/keys', { key: a.body.api_key, headers: { authorization: `Bearer ${bogus}` } });
  assert.is(validHeader.status, 200, validHeader.text);
  assert.is(validHeader.body.organization_id, a.body.organization_id);
  const bogusHeader = await server.request('GET', '/api/keys', { key: bogus, headers: { authorization: `Bearer ${a.body.api_key}` } });
  expectJsonError(bogusHeader, 401, 'invalid_api_key');
  assert.is(bogusHeader.headers.get('www-authenticate'), 'ApiKey');
  // Two valid keys: the X-API-Key's organization is the one served.
  const both = await server.request('GET', '/api/keys', { key: b.body.api_key, headers: { authorization: `Bearer ${a.body.api_key}` } });
  assert.is(both.body.organization_id, b.body.organization_id);
});

// ---------------------------------------------------------------- POST /api/keys/rotate

keys('rotate: 200 {api_key, rotated_at}; the old key is refused at once, the new one works', async ({ server }) => {
  const issued = await generate(server, { organization_name: 'Rotator', tier: 'enterprise' });
  const oldKey = issued.body.api_key;
  assert.is((await server.request('GET', '/api/keys', { key: oldKey })).status, 200);
  const before = Date.now();
  const rotated = await server.request('POST', '/api/keys/rotate', { key: oldKey });
  assert.is(rotated.status, 200, rotated.text);
  assert.match(rotated.body.api_key, KEY_FORMAT);
  assert.is.not(rotated.body.api_key, oldKey);
  assert.ok(isIsoTimestamp(rotated.body.rotated_at), `rotated_at not ISO 8601: ${rotated.body.rotated_at}`);
  assert.ok(Math.abs(Date.parse(rotated.body.rotated_at) - before) < 60_000);
  const newKey = rotated.body.api_key;

  for (const [method, route, body] of [
    ['GET', '/api/keys', undefined],
    ['POST', '/api/events', { type: 'after.rotation', payload: {} }],
    ['POST', '/api/keys/rotate', undefined],
  ] as const) {
    const stale = await server.request(method, route, { key: oldKey, body });
    expectJsonError(stale, 401, 'invalid_api_key');
    assert.is(stale.headers.get('www-authenticate'), 'ApiKey');
    const staleBearer = await server.request(method, route, { headers: { authorization: `Bearer ${oldKey}` }, body });
    expectJsonError(staleBearer, 401, 'invalid_api_key');
  }
  const info = await server.request('GET', '/api/keys', { key: newKey });
  assert.is(info.status, 200, info.text);
  assert.is(info.body.organization_id, issued.body.organization_id);
  assert.is(info.body.created_at, issued.body.created_at, 'rotation keeps the organization');
  const event = await server.request('POST', '/api/events', { key: newKey, body: { type: 'after.rotation', payload: {} } });
  assert.is(event.status, 202, event.text);
});

keys('rotate: a chain of rotations leaves only the newest key valid (also via Bearer)', async ({ server }) => {
  const issued = await generate(server, { organization_name: 'Chain' });
  const all = [issued.body.api_key as string];
  for (let i = 0; i < 4; i++) {
    const current = all[all.length - 1]!;
    const rotated = await server.request('POST', '/api/keys/rotate', { headers: { authorization: `Bearer ${current}` } });
    assert.is(rotated.status, 200, rotated.text);
    all.push(rotated.body.api_key);
  }
  assert.is(new Set(all).size, all.length);
  for (const old of all.slice(0, -1)) expectJsonError(await server.request('GET', '/api/keys', { key: old }), 401, 'invalid_api_key');
  const info = await server.request('GET', '/api/keys', { key: all[all.length - 1] });
  assert.is(info.status, 200, info.text);
  assert.is(info.body.organization_id, issued.body.organization_id);
});

keys('rotate with ACCEPTOR_THREADS=2: the old key, warm on every thread, fails on every new connection at once', async ({ threaded }) => {
  const issued = await threaded.request('POST', '/api/keys/generate', { body: { organization_name: 'Threads', tier: 'enterprise' } });
  assert.is(issued.status, 201, issued.text);
  let key = issued.body.api_key as string;
  const use = (index: number, apiKey: string) =>
    index % 2 === 0
      ? freshRequest(threaded.port, 'GET', '/api/keys', { key: apiKey })
      : freshRequest(threaded.port, 'POST', '/api/events', { key: apiKey, body: { type: 'warm', payload: { index } } });
  for (let round = 0; round < 3; round++) {
    // Warm: 40 new connections spread over both threads by SO_REUSEPORT; each caches the key.
    const warm = await freshRequests(40, 8, (i) => use(i, key));
    warm.forEach((reply, i) => assert.ok(reply.status === 200 || reply.status === 202, `round ${round}, warm ${i}: ${reply.status} ${reply.text}`));

    const rotated = await freshRequest(threaded.port, 'POST', '/api/keys/rotate', { key });
    assert.is(rotated.status, 200, rotated.text);
    const oldKey = key;
    key = rotated.body.api_key;

    const stale = await freshRequests(40, 8, (i) => use(i, oldKey));
    stale.forEach((reply, i) => {
      if (reply.status !== 401 || reply.body?.code !== 'invalid_api_key' || reply.headers.get('www-authenticate') !== 'ApiKey') {
        throw new Error(`round ${round}: old key on new connection ${i} after rotation: ${reply.status} ${reply.text}`);
      }
    });
    const fresh = await freshRequests(40, 8, (i) => use(i, key));
    fresh.forEach((reply, i) => assert.ok(reply.status === 200 || reply.status === 202, `round ${round}, new key ${i}: ${reply.status} ${reply.text}`));
  }
});

keys('rotate: concurrent rotations with the same key → exactly one 200, the loser 401; only the winner\'s key works', async ({ server, threaded }) => {
  for (const target of [server, threaded]) {
    for (let round = 0; round < 5; round++) {
      const issued = await generate(target, { organization_name: `Race ${round}` });
      const oldKey = issued.body.api_key;
      // Warm the key so both rotations pass authentication from a cache.
      await freshRequests(6, 6, () => freshRequest(target.port, 'GET', '/api/keys', { key: oldKey }));
      const racers = round % 2 === 0 ? 2 : 4;
      const replies = await Promise.all(Array.from({ length: racers }, () => freshRequest(target.port, 'POST', '/api/keys/rotate', { key: oldKey })));
      const winners = replies.filter((reply) => reply.status === 200);
      assert.is(winners.length, 1, `round ${round}: ${replies.map((reply) => `${reply.status} ${reply.text}`).join(' | ')}`);
      for (const loser of replies.filter((reply) => reply.status !== 200)) expectJsonError(loser, 401, 'invalid_api_key');
      const winnerKey = winners[0]!.body.api_key;
      assert.is((await freshRequest(target.port, 'GET', '/api/keys', { key: winnerKey })).status, 200);
      expectJsonError(await freshRequest(target.port, 'GET', '/api/keys', { key: oldKey }), 401, 'invalid_api_key');
    }
  }
});

keys('rotate, several instances on one database: the old key fails on every other instance within one second', async ({ server, admin, threaded }) => {
  // Issue 3: refused at once on every thread of the rotating instance (tested above) and on other
  // instances sharing the database within one second (LISTEN/NOTIFY). `server` rotates; `admin`
  // and `threaded` are other instances with the key cached.
  const others = [admin, threaded];
  for (let round = 0; round < 10; round++) {
    const issued = await generate(server, { organization_name: `Fleet ${round}`, tier: 'enterprise' });
    const oldKey = issued.body.api_key;
    for (const other of others) {
      const warm = await freshRequests(6, 3, () => freshRequest(other.port, 'GET', '/api/keys', { key: oldKey }));
      for (const reply of warm) assert.is(reply.status, 200, `warm on port ${other.port}: ${reply.text}`);
    }
    const rotated = await freshRequest(server.port, 'POST', '/api/keys/rotate', { key: oldKey });
    assert.is(rotated.status, 200, rotated.text);
    for (const other of others) {
      await waitFor(`round ${round}: the rotated-away key refused on port ${other.port} within 1 s`, async () => {
        const replies = await Promise.all([0, 1, 2].map(() => freshRequest(other.port, 'GET', '/api/keys', { key: oldKey })));
        return replies.every((reply) => reply.status === 401);
      }, 1_000, 10);
    }
  }
});

keys('rotate, several instances: a rotation while the others\' notification link was down still voids their caches', async ({ server, admin, threaded, db }) => {
  // A Postgres restart or failover drops every instance's connections for a moment. Reproduced
  // here on the test database only: new connections are refused, the LISTEN connections are cut,
  // and the rotation goes through an already-open connection of `server`.
  const others = [admin, threaded];
  const name = new URL(db.url).pathname.slice(1);
  const issued = await generate(server, { organization_name: 'Listener Loss', tier: 'enterprise' });
  const oldKey = issued.body.api_key;
  for (const other of others) {
    for (const reply of await freshRequests(6, 3, () => freshRequest(other.port, 'GET', '/api/keys', { key: oldKey }))) assert.is(reply.status, 200);
  }
  const superuser = connect(process.env.DATABASE_URL!, { max: 1 });
  try {
    await superuser.unsafe(`alter database "${name}" with allow_connections false`);
    await superuser`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name} and query ilike 'listen%'`;
    await waitFor('the LISTEN connections to close', async () =>
      (await superuser`select 1 from pg_stat_activity where datname = ${name} and query ilike 'listen%'`).length === 0);
    const rotated = await freshRequest(server.port, 'POST', '/api/keys/rotate', { key: oldKey });
    assert.is(rotated.status, 200, rotated.text);
  } finally {
    await superuser.unsafe(`alter database "${name}" with allow_connections true`);
    await superuser.end();
  }
  for (const other of others) {
    await waitFor(`the rotated-away key refused on port ${other.port} once Postgres is reachable again`, async () => {
      const replies = await freshRequests(4, 4, () => freshRequest(other.port, 'GET', '/api/keys', { key: oldKey }));
      return replies.every((reply) => reply.status === 401);
    }, 10_000, 100);
  }
});

// ---------------------------------------------------------------- routing

keys('unknown route → 404 not_found (JSON), with or without a key', async ({ server }) => {
  const issued = await generate(server, { organization_name: 'Router' });
  for (const [method, route] of [
    ['GET', '/'],
    ['GET', '/nope'],
    ['GET', '/api'],
    ['POST', '/api/key'],
    ['POST', '/api/keys/generate/extra'],
    ['GET', '/api/keys/unknown'],
    ['DELETE', '/api/nothing/here'],
  ] as const) {
    for (const key of [undefined, issued.body.api_key]) {
      const reply = await server.request(method, route, { key });
      try {
        expectJsonError(reply, 404, 'not_found');
      } catch (error) {
        throw new Error(`${method} ${route}: ${(error as Error).message}`);
      }
    }
  }
});

keys('wrong method → 405 method_not_allowed (JSON) with an Allow header', async ({ server }) => {
  const cases: Array<[string, string, string]> = [
    ['PUT', '/api/events', 'POST'],
    ['GET', '/api/events', 'POST'],
    ['DELETE', '/api/keys', 'GET'],
    ['POST', '/api/keys', 'GET'],
    ['PATCH', '/api/keys', 'GET'],
    ['GET', '/api/keys/generate', 'POST'],
    ['GET', '/api/keys/rotate', 'POST'],
    ['DELETE', '/api/keys/rotate', 'POST'],
  ];
  for (const [method, route, allowed] of cases) {
    const reply = await server.request(method, route);
    try {
      expectJsonError(reply, 405, 'method_not_allowed');
      const allow = reply.headers.get('allow') ?? '';
      assert.ok(allow.split(/,\s*/).includes(allowed), `Allow: "${allow}" lacks ${allowed}`);
    } catch (error) {
      throw new Error(`${method} ${route}: ${(error as Error).message}`);
    }
  }
});

keys.run();
