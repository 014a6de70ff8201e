// Rate limits: exact across acceptor threads, batch cost n, 409 costs a token, 400 costs none,
// per-org buckets, tier limits, and the headers every POST /api/events* answer carries.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { burst, header, tally, type LoadReply, type LoadRequest } from './helpers/load.ts';
import { highWaterMarks } from './helpers/log-inspect.ts';
import { expectError, TestServer, useTestDatabase, type Reply, type TestDatabase } from './helpers/server.ts';

/** Free tier refills one token every 600 ms; a burst shorter than that must admit exactly 100. */
const FREE_INTERVAL_MS = 600;
const PRO_INTERVAL_MS = 60;

const rate = suite<{ db: TestDatabase; server: TestServer }>('rate-limit');

useTestDatabase(rate, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url, { ACCEPTOR_THREADS: '2' });
});

const event = (n: number, extra: Record<string, unknown> = {}) => ({ type: 'rate.test', payload: { n }, ...extra });

function int(value: string | null | undefined, what: string): number {
  assert.ok(value !== null && value !== undefined && /^\d+$/.test(value), `${what} is not a non-negative integer: ${value}`);
  return Number(value);
}

/** The contract's rate-limit headers on a fetch reply; returns limit / remaining / reset. */
function rateHeaders(reply: Reply): { limit: number; remaining: number; reset: number } {
  const limit = int(reply.headers.get('ratelimit-limit'), 'RateLimit-Limit');
  const remaining = int(reply.headers.get('ratelimit-remaining'), 'RateLimit-Remaining');
  const reset = int(reply.headers.get('ratelimit-reset'), 'RateLimit-Reset');
  assert.is(reply.headers.get('x-ratelimit-limit'), String(limit), 'X-RateLimit-Limit');
  assert.is(reply.headers.get('x-ratelimit-remaining'), String(remaining), 'X-RateLimit-Remaining');
  return { limit, remaining, reset };
}

/** The same for a load-helper reply. */
function loadRateHeaders(reply: LoadReply): { limit: number; remaining: number; reset: number } {
  const limit = int(header(reply, 'ratelimit-limit'), 'RateLimit-Limit');
  const remaining = int(header(reply, 'ratelimit-remaining'), 'RateLimit-Remaining');
  const reset = int(header(reply, 'ratelimit-reset'), 'RateLimit-Reset');
  assert.is(header(reply, 'x-ratelimit-limit'), String(limit), 'X-RateLimit-Limit');
  assert.is(header(reply, 'x-ratelimit-remaining'), String(remaining), 'X-RateLimit-Remaining');
  return { limit, remaining, reset };
}

/** Warms every acceptor thread's key cache without spending tokens (GET of an unknown id → 404). */
async function warm(server: TestServer, key: string): Promise<void> {
  const probes: LoadRequest[] = Array.from({ length: 32 }, () => ({ method: 'GET', path: '/api/events/01a212e5-76c4-701a-a75e-e9a00a5b5567', key }));
  const outcomes = await burst(server.url, probes);
  assert.equal(tally(outcomes), { 404: 32 });
}

rate('300 concurrent POSTs on a fresh free org over 300 connections, 2 threads: exactly 100 × 202, 200 × 429', async ({ server }) => {
  const { key } = await server.createKey('free', 'burst org');
  await warm(server, key);
  const requests: LoadRequest[] = Array.from({ length: 300 }, (_, n) => ({ path: '/api/events', key, body: event(n) }));
  const started = Date.now();
  const outcomes = await burst(server.url, requests);
  const elapsed = Date.now() - started;
  const counts = tally(outcomes);
  const replies = outcomes.map((outcome) => outcome.reply!);
  const accepted = replies.filter((reply) => reply?.status === 202);
  const limited = replies.filter((reply) => reply?.status === 429);
  assert.is(accepted.length + limited.length, 300, `unexpected outcomes ${JSON.stringify(counts)}`);
  // A refill during a slow burst may admit one extra per 600 ms; a fast burst admits exactly 100.
  const refilled = Math.floor(elapsed / FREE_INTERVAL_MS);
  assert.ok(accepted.length >= 100 && accepted.length <= 100 + refilled, `${accepted.length} accepted in ${elapsed} ms: ${JSON.stringify(counts)}`);
  if (refilled === 0) assert.is(accepted.length, 100);

  const remaining = accepted.map((reply) => {
    const headers = loadRateHeaders(reply);
    assert.is(headers.limit, 100);
    assert.ok(headers.remaining >= 0 && headers.remaining < 100, `remaining ${headers.remaining}`);
    assert.ok(headers.reset >= 1 && headers.reset <= 60, `reset ${headers.reset}`);
    return headers.remaining;
  });
  if (refilled === 0) {
    // Each admitted request took its own token: the remainders are 99..0, each exactly once.
    assert.equal([...remaining].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i));
  }
  for (const reply of limited) {
    assert.is(reply.body?.code, 'rate_limited', reply.text);
    assert.type(reply.body?.error, 'string');
    assert.is(reply.body.limit, 100);
    const retryAfter = header(reply, 'retry-after');
    assert.ok(retryAfter !== undefined && /^\d+$/.test(retryAfter) && Number(retryAfter) >= 1, `Retry-After: ${retryAfter}`);
    assert.is(reply.body.retry_after, Number(retryAfter), 'body retry_after equals Retry-After');
    // The next free-tier token is at most 600 ms away.
    assert.is(reply.body.retry_after, 1, 'Retry-After is the wait for one token, not for a full bucket');
    const headers = loadRateHeaders(reply);
    assert.is(headers.limit, 100);
    assert.is(headers.remaining, 0);
    assert.ok(headers.reset >= 1 && headers.reset <= 60, `reset ${headers.reset}`);
  }
});

rate('requests over separate connections reach both acceptor threads (both log partitions grow)', async ({ server }) => {
  const { key } = await server.createKey('enterprise', 'spread org');
  const before = highWaterMarks(server.dataDir, 2);
  const outcomes = await burst(server.url, Array.from({ length: 64 }, (_, n) => ({ path: '/api/events', key, body: event(n) })));
  assert.equal(tally(outcomes), { 202: 64 });
  const after = highWaterMarks(server.dataDir, 2);
  const grown = after.map((mark, partition) => mark - before[partition]!);
  assert.is(grown.reduce((a, b) => a + b, 0), 64, `partitions grew by ${grown} (layout of src/log/event-log.ts changed?)`);
  assert.ok(grown.every((n) => n > 0), `64 connections were not spread over both threads: partitions grew by ${grown}`);
});

rate('one batch of 150 valid events on a fresh free org: 100 accepted, 50 rate_limited (HTTP 200)', async ({ server }) => {
  const { key } = await server.createKey('free', 'batch org');
  const reply = await server.request('POST', '/api/events/batch', { key, body: { events: Array.from({ length: 150 }, (_, n) => event(n)) } });
  assert.is(reply.status, 200, reply.text);
  assert.is(reply.body.accepted, 100);
  assert.is(reply.body.rejected, 50);
  assert.is(reply.body.results.length, 150);
  const byStatus = { accepted: 0, limited: 0 };
  reply.body.results.forEach((result: any, index: number) => {
    assert.is(result.index, index);
    if (result.status === 'accepted') byStatus.accepted++;
    else {
      assert.is(result.code, 'rate_limited', JSON.stringify(result));
      assert.type(result.error, 'string');
      byStatus.limited++;
    }
  });
  assert.equal(byStatus, { accepted: 100, limited: 50 });
  const headers = rateHeaders(reply);
  assert.is(headers.limit, 100);
  assert.is(headers.remaining, 0);
  // RateLimit-Reset: seconds until the bucket is full again, i.e. a whole minute from empty.
  assert.ok(headers.reset >= 59 && headers.reset <= 60, `reset ${headers.reset}`);
  // The bucket is empty now: the next single event is refused.
  const next = await server.request('POST', '/api/events', { key, body: event(999) });
  expectError(next, 429, 'rate_limited');
});

rate('a 409 duplicate costs one token (pro org, RateLimit-Remaining before and after)', async ({ server }) => {
  const { key } = await server.createKey('pro', 'dup cost org');
  const started = Date.now();
  const first = await server.request('POST', '/api/events', { key, body: event(1, { dedup_id: 'dup-cost' }) });
  assert.is(first.status, 202, first.text);
  const before = rateHeaders(first);
  assert.is(before.limit, 1000);
  const duplicates = 10;
  for (let i = 0; i < duplicates; i++) {
    const dup = await server.request('POST', '/api/events', { key, body: event(2, { dedup_id: 'dup-cost' }) });
    expectError(dup, 409, 'duplicate_event');
    assert.is(dup.body.id, first.body.id);
    rateHeaders(dup);
  }
  const last = await server.request('POST', '/api/events', { key, body: event(3) });
  assert.is(last.status, 202, last.text);
  const after = rateHeaders(last);
  const elapsed = Date.now() - started;
  // 10 duplicates + 1 event = 11 tokens; refill gives back at most one per 60 ms (+1 for rounding).
  const spent = before.remaining - after.remaining;
  const slack = Math.floor(elapsed / PRO_INTERVAL_MS) + 1;
  assert.ok(spent <= duplicates + 1 && spent >= duplicates + 1 - slack, `spent ${spent} tokens in ${elapsed} ms`);
  assert.ok(slack < duplicates, `too slow to measure (${elapsed} ms)`);
});

rate('a 409 duplicate costs one token (free org: 1 event + 99 duplicates empty the bucket)', async ({ server }) => {
  const { key } = await server.createKey('free', 'dup exhaust org');
  await warm(server, key);
  const first = await server.request('POST', '/api/events', { key, body: event(0, { dedup_id: 'exhaust' }) });
  assert.is(first.status, 202, first.text);
  const started = Date.now();
  const outcomes = await burst(server.url, Array.from({ length: 99 }, (_, n) => ({ path: '/api/events', key, body: event(n, { dedup_id: 'exhaust' }) })));
  assert.equal(tally(outcomes), { 409: 99 });
  const next = await server.request('POST', '/api/events', { key, body: event(100) });
  if (Date.now() - started < FREE_INTERVAL_MS) expectError(next, 429, 'rate_limited');
});

rate('invalid events (400) take no token, single or in a batch', async ({ server }) => {
  const { key } = await server.createKey('free', 'invalid org');
  await warm(server, key);
  const invalid: LoadRequest[] = [
    ...Array.from({ length: 40 }, () => ({ path: '/api/events', key, body: { type: '', payload: {} } })),
    ...Array.from({ length: 40 }, () => ({ path: '/api/events', key, body: { type: 'x', payload: [1] } })),
    ...Array.from({ length: 40 }, () => ({ path: '/api/events', key, body: { type: 'x', payload: { n: 1 }, dedup_id: '' } })),
  ];
  const rejected = await burst(server.url, invalid);
  for (const { reply } of rejected) {
    assert.is(reply?.status, 400, reply?.text);
    assert.is(reply!.body.code, 'validation_error');
    const headers = loadRateHeaders(reply!);
    assert.is(headers.limit, 100);
    assert.is(headers.remaining, 100, '400s leave the bucket full');
  }
  const badJson = await server.request('POST', '/api/events', { key, raw: '{"type":', headers: { 'content-type': 'application/json' } });
  expectError(badJson, 400, 'invalid_json');
  assert.is(rateHeaders(badJson).remaining, 100);

  // A batch of 50 valid + 30 invalid: the invalid ones are judged alone and cost nothing.
  const mixed = [
    ...Array.from({ length: 50 }, (_, n) => event(n)),
    ...Array.from({ length: 30 }, () => ({ type: 'x', payload: 'not an object' })),
  ];
  const batch = await server.request('POST', '/api/events/batch', { key, body: { events: mixed } });
  assert.is(batch.status, 200, batch.text);
  assert.is(batch.body.accepted, 50);
  assert.is(batch.body.results.filter((r: any) => r.code === 'validation_error').length, 30);
  assert.is(batch.body.results.filter((r: any) => r.code === 'rate_limited').length, 0);
  assert.is(rateHeaders(batch).remaining, 50);

  // All 100 tokens were still there for valid events: 50 more are accepted.
  const valid = await burst(server.url, Array.from({ length: 50 }, (_, n) => ({ path: '/api/events', key, body: event(n) })));
  assert.equal(tally(valid), { 202: 50 });
});

rate('different orgs have separate buckets', async ({ server }) => {
  const a = await server.createKey('free', 'org a');
  const b = await server.createKey('free', 'org b');
  const drained = await server.request('POST', '/api/events/batch', { key: a.key, body: { events: Array.from({ length: 100 }, (_, n) => event(n)) } });
  assert.is(drained.body.accepted, 100, drained.text);
  expectError(await server.request('POST', '/api/events', { key: a.key, body: event(1) }), 429, 'rate_limited');
  const other = await server.request('POST', '/api/events', { key: b.key, body: event(1) });
  assert.is(other.status, 202, other.text);
  const headers = rateHeaders(other);
  assert.is(headers.limit, 100);
  assert.is(headers.remaining, 99);
});

rate('RateLimit-Limit reports the tier: free 100, pro 1000, business 10000, enterprise 100000', async ({ server }) => {
  const tiers = { free: 100, pro: 1000, business: 10_000, enterprise: 100_000 } as const;
  for (const [tier, limit] of Object.entries(tiers)) {
    const { key } = await server.createKey(tier, `${tier} tier org`);
    const info = await server.request('GET', '/api/keys', { key });
    assert.is(info.body.rate_limit_per_minute, limit, info.text);
    const single = await server.request('POST', '/api/events', { key, body: event(1) });
    assert.is(single.status, 202, single.text);
    const headers = rateHeaders(single);
    assert.is(headers.limit, limit, tier);
    assert.is(headers.remaining, limit - 1, tier);
    // One token used: the bucket is full again within 60 s / limit, i.e. 1 s after rounding up.
    assert.is(headers.reset, 1, `${tier} reset`);
    const batch = await server.request('POST', '/api/events/batch', { key, body: { events: [event(2), event(3)] } });
    assert.is(batch.status, 200, batch.text);
    assert.is(rateHeaders(batch).limit, limit, `${tier} batch`);
  }
});

rate.run();
