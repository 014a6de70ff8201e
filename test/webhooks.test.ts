// Webhook endpoint configuration and delivery: config routes and the SSRF refusal, secrets at rest,
// what a delivery looks like (body, Standard Webhooks headers and signature, verified as a real
// receiver would), no endpoint / deleted endpoint, 410 Gone, secret rotation, tenancy, and a stored
// secret the server can no longer decrypt.
// Retries, timeouts, redeliver, ack, isolation and restarts: webhook-retries.test.ts.
import { suite } from 'uvu';
import { BLOCKED_URLS } from './helpers/blocked-urls.ts';
import * as assert from 'uvu/assert';
import { createTestDatabase, expectError, TestServer, waitFor, type TestDatabase } from './helpers/server.ts';
import {
  always, configureEndpoint, getEvent, ISO_8601, Receiver, sendEvent, verifyDelivery, waitForStatus, type Policy,
} from './helpers/receiver.ts';

const SCHEDULE = '300ms,300ms,300ms';
const WHSEC = /^whsec_([A-Za-z0-9+/]+={0,2})$/;

interface Ctx {
  db: TestDatabase;
  strictDb: TestDatabase;
  /** For the servers that lose their secret key. */
  lostKeyDb: TestDatabase;
  /** WEBHOOK_ALLOW_PRIVATE=true: delivers to the receivers on 127.0.0.1. */
  server: TestServer;
  /** Without WEBHOOK_ALLOW_PRIVATE, on a database of its own (so its dispatcher never sees the other's events). */
  strict: TestServer;
  /** An org whose deliveries always succeed: its deliveries show the dispatcher is running. */
  clockKey: string;
  clock: Receiver;
}

const webhooks = suite<Ctx>('webhooks');
const receivers: Receiver[] = [];
/** Servers started by the tests themselves. */
const servers: TestServer[] = [];

async function receiver(policy?: Policy): Promise<Receiver> {
  const started = await Receiver.start(policy);
  receivers.push(started);
  return started;
}

async function org(server: TestServer, name: string): Promise<string> {
  return (await server.createKey('enterprise', name)).key;
}

/**
 * Proof that the dispatcher has had its chance at everything accepted before this call: an event of
 * the clock org sent after it is delivered, twice over (one log partition drains in order, and the
 * dispatcher claims in order of due time, so an earlier event that were due would have gone out
 * with or before the first one; the second gives that delivery time to arrive). With `retries`,
 * the first clock event is refused twice before it is delivered, so that also two periods of the
 * retry schedule have passed: a retry that was scheduled before this call would have come.
 */
async function quiet({ server, clockKey, clock }: Ctx, retries = false): Promise<void> {
  for (let round = 0; round < 2; round++) {
    const tick = await sendEvent(server, clockKey, retries && round === 0 ? 'clock.retry' : 'clock.tick');
    await clock.nth(tick.id, retries && round === 0 ? 3 : 1);
    await waitForStatus(server, clockKey, tick.id, 'delivered');
    clock.assertAllVerified();
  }
}

/** The clock endpoint: 200, except the first two attempts of a `clock.retry` event. */
const clockPolicy: Policy = (request, nth) => (request.body?.type === 'clock.retry' && nth <= 2 ? { status: 500 } : { status: 200 });

webhooks.before(async (ctx) => {
  try {
    ctx.db = await createTestDatabase();
    ctx.strictDb = await createTestDatabase();
    ctx.lostKeyDb = await createTestDatabase();
    [ctx.server, ctx.strict] = await Promise.all([
      TestServer.start(ctx.db.url, { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: SCHEDULE }),
      TestServer.start(ctx.strictDb.url, { WEBHOOK_RETRY_SCHEDULE: SCHEDULE }),
    ]);
    ctx.clockKey = await org(ctx.server, 'clock');
    ctx.clock = await receiver(clockPolicy);
    await configureEndpoint(ctx.server, ctx.clockKey, ctx.clock);
  } catch (error) {
    console.error('webhooks: setup failed:', error);
    throw error;
  }
});

webhooks.after(async (ctx) => {
  await Promise.all(receivers.map((r) => r.close()));
  await Promise.all([ctx.server?.close(), ctx.strict?.close(), ...servers.map((s) => s.close())]);
  await Promise.all([ctx.db?.drop(), ctx.strictDb?.drop(), ctx.lostKeyDb?.drop()]);
});

webhooks('POST/GET /api/webhook/config: url, whsec_ secret of 24+ bytes, updated_at; GET /api/keys shows the url', async ({ server }) => {
  const key = await org(server, 'config');
  expectError(await server.request('GET', '/api/webhook/config', { key }), 404, 'not_found');
  const target = await receiver();
  const before = Date.now();
  const posted = await server.request('POST', '/api/webhook/config', { key, body: { webhook_url: target.url } });
  assert.is(posted.status, 200, posted.text);
  assert.is(posted.body.webhook_url, target.url);
  const secret = WHSEC.exec(posted.body.secret);
  assert.ok(secret, `secret ${posted.body.secret} is not whsec_<base64>`);
  assert.ok(Buffer.from(secret![1]!, 'base64').length >= 24, `secret has only ${Buffer.from(secret![1]!, 'base64').length} bytes`);
  assert.match(posted.body.updated_at, ISO_8601);
  const updated = Date.parse(posted.body.updated_at);
  assert.ok(updated >= before - 2_000 && updated <= Date.now() + 2_000, `updated_at ${posted.body.updated_at}`);

  const read = await server.request('GET', '/api/webhook/config', { key });
  assert.is(read.status, 200, read.text);
  assert.is(read.body.webhook_url, target.url);
  assert.is(read.body.secret, posted.body.secret);
  assert.is(read.body.updated_at, posted.body.updated_at);

  const keyInfo = await server.request('GET', '/api/keys', { key });
  assert.is(keyInfo.status, 200, keyInfo.text);
  assert.is(keyInfo.body.webhook_url, target.url);

  // Another org gets a secret of its own and does not see this endpoint.
  const otherKey = await org(server, 'config other');
  expectError(await server.request('GET', '/api/webhook/config', { key: otherKey }), 404, 'not_found');
  assert.is((await server.request('GET', '/api/keys', { key: otherKey })).body.webhook_url, null);
  const other = await configureEndpoint(server, otherKey, target);
  assert.is.not(other.secret, posted.body.secret);
  expectError(await server.request('POST', '/api/webhook/rotate-secret', { key: await org(server, 'config none') }), 404, 'not_found');
});

webhooks('bad webhook URLs → 400 invalid_webhook_url with field (2048 chars is still fine)', async ({ server, strict }) => {
  const tooLong = 'https://example.com/' + 'a'.repeat(2049 - 'https://example.com/'.length);
  assert.is(tooLong.length, 2049);
  for (const target of [server, strict]) {
    const key = await org(target, 'bad urls');
    for (const url of ['ftp://example.com/hook', 'not a url', '/relative/path', 'javascript:alert(1)', tooLong]) {
      const reply = await target.request('POST', '/api/webhook/config', { key, body: { webhook_url: url } });
      const body = expectError(reply, 400, 'invalid_webhook_url');
      assert.is(body.field, 'webhook_url', `${url.slice(0, 40)}: ${reply.text}`);
    }
    expectError(await target.request('GET', '/api/webhook/config', { key }), 404, 'not_found');
  }
  const key = await org(server, 'long url');
  const longest = 'http://127.0.0.1:9/' + 'b'.repeat(2048 - 'http://127.0.0.1:9/'.length);
  assert.is(longest.length, 2048);
  const reply = await server.request('POST', '/api/webhook/config', { key, body: { webhook_url: longest } });
  assert.is(reply.status, 200, reply.text.slice(0, 300));
  assert.is(reply.body.webhook_url, longest);
});

// Without WEBHOOK_ALLOW_PRIVATE each of these is refused by a live server: test/security.test.ts.
webhooks('with WEBHOOK_ALLOW_PRIVATE every loopback/private/link-local/metadata URL the guard refuses is accepted (200)', async ({ server }) => {
  const key = await org(server, 'ssrf allowed');
  for (const url of BLOCKED_URLS) {
    const reply = await server.request('POST', '/api/webhook/config', { key, body: { webhook_url: url } });
    assert.is(reply.status, 200, `${url}: ${reply.text}`);
    assert.match(reply.body.secret, WHSEC);
  }
});

webhooks('the secret is not stored in clear: no column of webhook_endpoints holds it (nor its base64)', async ({ server, db }) => {
  const key = await org(server, 'at rest');
  const first = await configureEndpoint(server, key, await receiver());
  const rotated = await server.request('POST', '/api/webhook/rotate-secret', { key });
  assert.is(rotated.status, 200, rotated.text);
  const secrets = [first.secret, rotated.body.secret as string];
  const rows = await db.sql`select * from webhook_endpoints`;
  assert.ok(rows.length >= 2, `expected the endpoints in webhook_endpoints, found ${rows.length} rows`);
  const dump = JSON.stringify(rows);
  for (const secret of secrets) {
    const base64 = WHSEC.exec(secret)![1]!;
    assert.not.ok(dump.includes(secret), 'a whsec_ secret is stored in clear');
    assert.not.ok(dump.includes(base64), 'the base64 of a secret is stored in clear');
    assert.not.ok(dump.includes(Buffer.from(base64, 'base64').toString('hex')), 'the hex of a secret is stored in clear');
  }
});

webhooks('delivery: signed Standard Webhooks POST with {id, type, timestamp, data}; the event shows delivered with its attempt', async ({ server }) => {
  const key = await org(server, 'delivery');
  const target = await receiver();
  const { secret } = await configureEndpoint(server, key, target);
  const payload = { order: 42, items: [{ sku: 'a-1', qty: 2 }], note: 'é 🚀', nested: { ok: true, none: null } };
  const sent = await sendEvent(server, key, 'order.created', payload);
  const request = await target.nth(sent.id, 1);

  assert.is(request.method, 'POST');
  assert.is(request.path, '/hook');
  assert.is(request.headers['content-type'], 'application/json');
  assert.is(request.headers['webhook-id'], sent.id);
  assert.match(request.headers['webhook-timestamp']!, /^\d+$/);
  const stamp = Number(request.headers['webhook-timestamp']);
  assert.ok(Math.abs(stamp - request.at / 1000) <= 5, `webhook-timestamp ${stamp} is not close to now (${request.at / 1000})`);
  assert.match(request.headers['webhook-signature']!, /^v1,[A-Za-z0-9+/]+={0,2}$/);
  // Verified as a real receiver does: the raw body, the headers, the endpoint's secret.
  assert.equal(verifyDelivery(secret, request), { id: sent.id, type: 'order.created', timestamp: request.body.timestamp, data: payload });
  assert.equal(Object.keys(request.body), ['id', 'type', 'timestamp', 'data']);
  assert.match(request.body.timestamp, ISO_8601);
  assert.is(request.body.timestamp, sent.received_at, 'timestamp is the event time of the 202');
  assert.throws(() => verifyDelivery(`whsec_${Buffer.alloc(24, 7).toString('base64')}`, request), /signature/i);

  const event = await waitForStatus(server, key, sent.id, 'delivered');
  assert.match(event.delivered_at, ISO_8601);
  assert.is(event.attempts.length, 1, JSON.stringify(event.attempts));
  const [attempt] = event.attempts;
  assert.match(attempt.attempted_at, ISO_8601);
  assert.is(attempt.status_code, 200);
  assert.type(attempt.duration_ms, 'number');
  assert.ok(attempt.duration_ms >= 0, JSON.stringify(attempt));
  assert.is(attempt.error, undefined);
  assert.ok(Math.abs(Date.parse(attempt.attempted_at) - request.at) < 2_000, `attempted_at ${attempt.attempted_at} vs arrival ${new Date(request.at).toISOString()}`);

  const inbox = await server.request('GET', '/api/inbox', { key });
  assert.is(inbox.status, 200, inbox.text);
  assert.not.ok(inbox.body.events.some((e: { id: string }) => e.id === sent.id), 'a delivered event is still in the default inbox');
  const delivered = await server.request('GET', '/api/inbox?status=delivered', { key });
  assert.ok(delivered.body.events.some((e: { id: string }) => e.id === sent.id), 'not in the delivered inbox');
  assert.is(target.requests.length, 1);
  target.assertAllVerified();
});

webhooks('an org without an endpoint: its events stay pending with no attempts while other orgs are delivered', async (ctx) => {
  const { server } = ctx;
  const key = await org(server, 'no endpoint');
  const sent = await Promise.all([0, 1, 2].map((n) => sendEvent(server, key, 'quiet', { n })));
  await quiet(ctx);
  for (const { id } of sent) {
    const event = await getEvent(server, key, id);
    assert.is(event.status, 'pending', JSON.stringify(event));
    assert.equal(event.attempts, []);
    assert.is(event.delivered_at, undefined);
  }
  const inbox = await server.request('GET', '/api/inbox', { key });
  assert.equal(inbox.body.events.map((e: { id: string }) => e.id).sort(), sent.map((s) => s.id).sort());
  // Nothing of this org reached any receiver of the run.
  const ids = new Set(sent.map((s) => s.id));
  assert.not.ok(receivers.some((r) => r.requests.some((request) => ids.has(request.id))), 'an event of an org without endpoint was delivered');
});

webhooks('DELETE /api/webhook/config → 204; GET → 404; neither new events nor scheduled retries are delivered', async (ctx) => {
  const { server } = ctx;
  const key = await org(server, 'deleted');
  const target = await receiver();
  await configureEndpoint(server, key, target);
  const before = await sendEvent(server, key, 'before.delete');
  await waitForStatus(server, key, before.id, 'delivered');

  // One event in its retry schedule when the endpoint goes.
  target.policy = always({ status: 500 });
  const retrying = await sendEvent(server, key, 'retrying');
  await target.nth(retrying.id, 1);
  const deleted = await server.request('DELETE', '/api/webhook/config', { key });
  assert.is(deleted.status, 204, deleted.text);
  assert.is(deleted.text, '');
  expectError(await server.request('GET', '/api/webhook/config', { key }), 404, 'not_found');
  expectError(await server.request('DELETE', '/api/webhook/config', { key }), 404, 'not_found');
  assert.is((await server.request('GET', '/api/keys', { key })).body.webhook_url, null);

  target.policy = always({ status: 200 });
  const after = await Promise.all([0, 1].map((n) => sendEvent(server, key, 'after.delete', { n })));
  await quiet(ctx, true);
  for (const { id } of after) {
    const event = await getEvent(server, key, id);
    assert.is(event.status, 'pending');
    assert.equal(event.attempts, []);
  }
  assert.equal(target.byId(retrying.id).length, 1, 'the event in its retry schedule was retried after DELETE');
  assert.equal([...target.ids()].sort(), [before.id, retrying.id].sort(), 'deliveries after DELETE');
  const stuck = await getEvent(server, key, retrying.id);
  assert.is(stuck.status, 'pending');
  assert.is(stuck.attempts.length, 1);
  target.assertAllVerified();
});

webhooks('410 Gone disables the endpoint: event failed, GET config disabled, later events not delivered; POST config re-enables', async (ctx) => {
  const { server } = ctx;
  const key = await org(server, 'gone');
  const target = await receiver(always({ status: 410 }));
  await configureEndpoint(server, key, target);
  const gone = await sendEvent(server, key, 'gone');
  const failed = await waitForStatus(server, key, gone.id, 'failed');
  assert.is(failed.attempts.length, 1, JSON.stringify(failed.attempts));
  assert.is(failed.attempts[0].status_code, 410);
  // Disabling is part of handling the 410; poll in case it commits just after the attempt.
  const config = await waitFor('GET config to show disabled', async () => {
    const reply = await server.request('GET', '/api/webhook/config', { key });
    return reply.status === 200 && reply.body.disabled === true ? reply : null;
  }, 5_000);
  assert.is(config.body.webhook_url, target.url);
  expectError(await server.request('POST', `/api/events/${gone.id}/redeliver`, { key }), 409, 'no_webhook_endpoint');

  const later = await sendEvent(server, key, 'later');
  await quiet(ctx);
  const pending = await getEvent(server, key, later.id);
  assert.is(pending.status, 'pending');
  assert.equal(pending.attempts, []);
  assert.is(target.requests.length, 1, `deliveries to a disabled endpoint: ${target.requests.map((r) => r.id).join(', ')}`);

  target.policy = always({ status: 200 });
  const again = await server.request('POST', '/api/webhook/config', { key, body: { webhook_url: target.url } });
  assert.is(again.status, 200, again.text);
  const enabled = await server.request('GET', '/api/webhook/config', { key });
  assert.is(enabled.body.disabled, false, enabled.text);
  target.secret = again.body.secret;
  const fresh = await sendEvent(server, key, 'fresh');
  await waitForStatus(server, key, fresh.id, 'delivered');
  assert.is(target.byId(fresh.id).length, 1);
  // The failed event goes out again when asked.
  assert.is((await server.request('POST', `/api/events/${gone.id}/redeliver`, { key })).status, 202);
  await waitForStatus(server, key, gone.id, 'delivered');
  target.assertAllVerified();
});

webhooks('rotate-secret: 200 {secret}; later deliveries carry two v1 signatures, and the old and the new secret both verify', async ({ server }) => {
  const key = await org(server, 'rotation');
  const target = await receiver();
  const { secret: oldSecret } = await configureEndpoint(server, key, target);
  const first = await sendEvent(server, key, 'before.rotation');
  const one = await target.nth(first.id, 1);
  assert.is(one.headers['webhook-signature']!.split(' ').length, 1, one.headers['webhook-signature']);
  verifyDelivery(oldSecret, one);

  const rotated = await server.request('POST', '/api/webhook/rotate-secret', { key });
  assert.is(rotated.status, 200, rotated.text);
  const newSecret: string = rotated.body.secret;
  assert.match(newSecret, WHSEC);
  assert.is.not(newSecret, oldSecret);
  assert.ok(Buffer.from(WHSEC.exec(newSecret)![1]!, 'base64').length >= 24);
  assert.is((await server.request('GET', '/api/webhook/config', { key })).body.secret, newSecret);
  target.secret = newSecret;

  const second = await sendEvent(server, key, 'after.rotation', { n: 2 });
  const two = await target.nth(second.id, 1);
  const signatures = two.headers['webhook-signature']!.split(' ');
  assert.is(signatures.length, 2, two.headers['webhook-signature']);
  for (const signature of signatures) assert.match(signature, /^v1,[A-Za-z0-9+/]+={0,2}$/);
  assert.equal(verifyDelivery(oldSecret, two), verifyDelivery(newSecret, two));
  assert.equal((verifyDelivery(newSecret, two) as any).data, { n: 2 });
  assert.throws(() => verifyDelivery(`whsec_${Buffer.alloc(24, 1).toString('base64')}`, two), /signature/i);
  target.assertAllVerified();
});

webhooks('tenancy: each endpoint receives exactly its own org\'s events, signed with its own secret', async ({ server }) => {
  const [keyA, keyB] = await Promise.all([org(server, 'tenant a'), org(server, 'tenant b')]);
  const [receiverA, receiverB] = await Promise.all([receiver(), receiver()]);
  const { secret: secretA } = await configureEndpoint(server, keyA, receiverA);
  const { secret: secretB } = await configureEndpoint(server, keyB, receiverB);
  const sent = await Promise.all(Array.from({ length: 30 }, (_, n) => sendEvent(server, n % 2 === 0 ? keyA : keyB, 'tenant', { n })));
  const idsA = sent.filter((_, n) => n % 2 === 0).map((s) => s.id).sort();
  const idsB = sent.filter((_, n) => n % 2 === 1).map((s) => s.id).sort();
  await receiverA.until('all of A delivered', () => idsA.every((id) => receiverA.ids().has(id)));
  await receiverB.until('all of B delivered', () => idsB.every((id) => receiverB.ids().has(id)));
  for (const id of [...idsA, ...idsB]) await waitForStatus(server, idsA.includes(id) ? keyA : keyB, id, 'delivered');
  assert.equal([...receiverA.ids()].sort(), idsA);
  assert.equal([...receiverB.ids()].sort(), idsB);
  for (const request of receiverA.requests) {
    assert.is(request.body.id, request.id);
    assert.throws(() => verifyDelivery(secretB, request), /signature/i);
  }
  for (const request of receiverB.requests) assert.throws(() => verifyDelivery(secretA, request), /signature/i);
  receiverA.assertAllVerified();
  receiverB.assertAllVerified();
  // And neither org can read the other's events.
  expectError(await server.request('GET', `/api/events/${idsA[0]}`, { key: keyB }), 404, 'not_found');
});

webhooks('a secret the server cannot decrypt (DATA_DIR and its generated key lost) does not take the server down', async ({ lostKeyDb }) => {
  // The default setup: no WEBHOOK_SECRET_KEY, so the key is generated into DATA_DIR.
  const env = { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: SCHEDULE };
  const before = await TestServer.start(lostKeyDb.url, env);
  servers.push(before);
  const orphanKey = await org(before, 'orphaned secret');
  const orphan = await receiver();
  await configureEndpoint(before, orphanKey, orphan);
  assert.is(await before.stop(), 0);

  // Same database, a new DATA_DIR (a redeployed container, say): another generated key.
  const after = await TestServer.start(lostKeyDb.url, env);
  servers.push(after);
  const healthyKey = await org(after, 'healthy');
  const healthy = await receiver();
  await configureEndpoint(after, healthyKey, healthy);
  try {
    await sendEvent(after, orphanKey, 'stranded');
    const fine = await sendEvent(after, healthyKey, 'fine');
    await healthy.nth(fine.id, 1, 5_000);
    await waitForStatus(after, healthyKey, fine.id, 'delivered');
    const health = await after.request('GET', '/health');
    assert.is(health.status, 200);
    const later = await sendEvent(after, healthyKey, 'later');
    await waitForStatus(after, healthyKey, later.id, 'delivered');
  } catch (error) {
    throw new Error(`${(error as Error).message}\nserver log tail:\n${after.logs.slice(-12).join('\n').slice(-3_000)}`);
  }
  // Nothing went out with a signature the receiver cannot check.
  orphan.assertAllVerified();
  healthy.assertAllVerified();
});

webhooks.run();
