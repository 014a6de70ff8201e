// Webhook retries: the schedule, timeouts, failed after the last attempt and redeliver, 429/503
// Retry-After, ack cancelling pending retries, a dead endpoint not delaying a healthy org, and
// deliveries resuming after kill -9 and after a graceful stop. Every delivery is verified with the
// `standardwebhooks` package as a real receiver would.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createTestDatabase, expectError, TestServer, waitFor, type TestDatabase } from './helpers/server.ts';
import {
  always, configureEndpoint, getEvent, Receiver, sendEvent, sequence, verifyDelivery, waitForEvent, waitForStatus, type Policy,
} from './helpers/receiver.ts';

/** Retry delays of the `retry` server: 300 ms, 300 ms, then 1.5 s (also the ceiling for Retry-After). */
const SCHEDULE_MS = [300, 300, 1500];
const JITTER = 0.2;
const TIMEOUT_MS = 300;

interface Ctx {
  retryDb: TestDatabase;
  isolationDb: TestDatabase;
  restartDb: TestDatabase;
  /** Short schedule, WEBHOOK_TIMEOUT=300ms. */
  retry: TestServer;
  /** WEBHOOK_TIMEOUT=5s: a hanging endpoint holds its deliveries that long. */
  isolation: TestServer;
  /** Default schedule and timeout; crashed, stopped and booted again. */
  restart: TestServer;
}

const retries = suite<Ctx>('webhook retries');
const receivers: Receiver[] = [];

async function receiver(policy?: Policy): Promise<Receiver> {
  const started = await Receiver.start(policy);
  receivers.push(started);
  return started;
}

async function org(server: TestServer, name: string): Promise<string> {
  return (await server.createKey('enterprise', name)).key;
}

retries.before(async (ctx) => {
  try {
    [ctx.retryDb, ctx.isolationDb, ctx.restartDb] = await Promise.all([createTestDatabase(), createTestDatabase(), createTestDatabase()]);
    // One database per server: a server's dispatcher delivers every due event of its database.
    [ctx.retry, ctx.isolation, ctx.restart] = await Promise.all([
      TestServer.start(ctx.retryDb.url, {
        WEBHOOK_ALLOW_PRIVATE: 'true',
        WEBHOOK_RETRY_SCHEDULE: SCHEDULE_MS.map((ms) => `${ms}ms`).join(','),
        WEBHOOK_TIMEOUT: `${TIMEOUT_MS}ms`,
      }),
      TestServer.start(ctx.isolationDb.url, { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '300ms,300ms,300ms', WEBHOOK_TIMEOUT: '5s' }),
      TestServer.start(ctx.restartDb.url, { WEBHOOK_ALLOW_PRIVATE: 'true' }),
    ]);
  } catch (error) {
    console.error('webhook retries: setup failed:', error);
    throw error;
  }
});

retries.after(async (ctx) => {
  await Promise.all(receivers.map((r) => r.close()));
  await Promise.all([ctx.retry?.close(), ctx.isolation?.close(), ctx.restart?.close()]);
  await Promise.all([ctx.retryDb?.drop(), ctx.isolationDb?.drop(), ctx.restartDb?.drop()]);
});

/** Time from the end of one attempt (the receiver's answer) to the arrival of the next. */
function gap(previous: { answeredAt?: number; at: number }, next: { at: number }): number {
  return next.at - (previous.answeredAt ?? previous.at);
}

retries('500, 500, 200 → three deliveries with the same webhook-id, all verifying; attempts 500, 500, 200; spacing follows the schedule', async ({ retry }) => {
  const key = await org(retry, 'retries');
  const target = await receiver(sequence([{ status: 500 }, { status: 500 }]));
  const { secret } = await configureEndpoint(retry, key, target);
  const sent = await sendEvent(retry, key, 'flaky', { n: 1 });
  const event = await waitForStatus(retry, key, sent.id, 'delivered');
  assert.equal(event.attempts.map((a: { status_code?: number }) => a.status_code), [500, 500, 200], JSON.stringify(event.attempts));
  for (const attempt of event.attempts) assert.is(attempt.error, undefined, JSON.stringify(attempt));
  const times = event.attempts.map((a: { attempted_at: string }) => Date.parse(a.attempted_at));
  assert.ok(times[0] < times[1] && times[1] < times[2], `attempted_at not increasing: ${JSON.stringify(event.attempts)}`);

  const requests = target.byId(sent.id);
  assert.is(requests.length, 3, `deliveries: ${requests.length}`);
  for (const request of requests) {
    assert.is(request.headers['webhook-id'], sent.id);
    assert.equal(verifyDelivery(secret, request), { id: sent.id, type: 'flaky', timestamp: sent.received_at, data: { n: 1 } });
    assert.is(request.raw.toString(), requests[0]!.raw.toString(), 'the body changed between attempts');
  }
  for (let i = 1; i < requests.length; i++) {
    const spacing = gap(requests[i - 1]!, requests[i]!);
    const delay = SCHEDULE_MS[i - 1]!;
    assert.ok(spacing >= (1 - JITTER) * delay, `retry ${i} came ${spacing} ms after the previous attempt; the schedule says ${delay} ms ±20 %`);
    assert.ok(spacing <= (1 + JITTER) * delay + 1_000, `retry ${i} came ${spacing} ms after the previous attempt; the schedule says ${delay} ms ±20 %`);
  }
  assert.is(target.requests.length, 3);
  target.assertAllVerified();
});

retries('a receiver that hangs: the attempt is recorded with a timeout error after WEBHOOK_TIMEOUT, then retried', async ({ retry }) => {
  const key = await org(retry, 'timeout');
  const target = await receiver(sequence([{ hang: true }]));
  const { secret } = await configureEndpoint(retry, key, target);
  const sent = await sendEvent(retry, key, 'slow');
  const event = await waitForStatus(retry, key, sent.id, 'delivered');
  assert.is(event.attempts.length, 2, JSON.stringify(event.attempts));
  const [timedOut, ok] = event.attempts;
  assert.is(timedOut.status_code, undefined, JSON.stringify(timedOut));
  assert.match(String(timedOut.error), /time(d)? ?out/i);
  assert.ok(timedOut.duration_ms >= TIMEOUT_MS * 0.9 && timedOut.duration_ms < TIMEOUT_MS + 2_000, `duration_ms ${timedOut.duration_ms} for a ${TIMEOUT_MS} ms timeout`);
  assert.is(ok.status_code, 200);
  const requests = target.byId(sent.id);
  assert.is(requests.length, 2);
  assert.is(requests[0]!.answeredAt, undefined, 'the first request was meant to hang');
  for (const request of requests) verifyDelivery(secret, request);
  const spacing = requests[1]!.at - requests[0]!.at;
  assert.ok(spacing >= TIMEOUT_MS + (1 - JITTER) * SCHEDULE_MS[0]! - 20, `retried ${spacing} ms after the hung attempt began: before the timeout and the first delay had passed`);
  target.assertAllVerified();
});

retries('after the last scheduled attempt the event is failed; redeliver → 202 starts a fresh round', async ({ retry }) => {
  const key = await org(retry, 'exhausted');
  const target = await receiver(always({ status: 500 }));
  const { secret } = await configureEndpoint(retry, key, target);
  const sent = await sendEvent(retry, key, 'doomed');
  const failed = await waitForStatus(retry, key, sent.id, 'failed', 15_000);
  assert.is(failed.attempts.length, 1 + SCHEDULE_MS.length, JSON.stringify(failed.attempts));
  assert.ok(failed.attempts.every((a: { status_code?: number }) => a.status_code === 500), JSON.stringify(failed.attempts));
  assert.is(failed.delivered_at, undefined);
  assert.is(target.byId(sent.id).length, 1 + SCHEDULE_MS.length);
  const inbox = await retry.request('GET', '/api/inbox', { key });
  assert.ok(inbox.body.events.some((e: { id: string; status: string }) => e.id === sent.id && e.status === 'failed'), 'a failed event is in the default inbox');

  // The receiver recovers after one more refusal: only a fresh round (not the exhausted one) retries it.
  target.policy = (_request, nth) => (nth <= 1 + SCHEDULE_MS.length + 1 ? { status: 500 } : { status: 200 });
  const redelivered = await retry.request('POST', `/api/events/${sent.id}/redeliver`, { key });
  assert.is(redelivered.status, 202, redelivered.text);
  // (Five failures in a row open the endpoint's circuit for 5 s: the last retry may wait for it.)
  const delivered = await waitForStatus(retry, key, sent.id, 'delivered', 15_000);
  assert.equal(delivered.attempts.map((a: { status_code?: number }) => a.status_code), [500, 500, 500, 500, 500, 200]);
  const requests = target.byId(sent.id);
  assert.is(requests.length, 6);
  for (const request of requests) verifyDelivery(secret, request);
  target.assertAllVerified();
});

retries('redeliver: unknown id 404, foreign event 404, malformed id 400, acknowledged event 409 event_acknowledged', async ({ retry }) => {
  const key = await org(retry, 'redeliver errors');
  const otherKey = await org(retry, 'redeliver other');
  const target = await receiver();
  const other = await receiver();
  await configureEndpoint(retry, key, target);
  await configureEndpoint(retry, otherKey, other);
  expectError(await retry.request('POST', '/api/events/01a212e5-76c4-701a-a75e-e9a00a5b5567/redeliver', { key }), 404, 'not_found');
  expectError(await retry.request('POST', '/api/events/not-an-id/redeliver', { key }), 400, 'invalid_id');
  const sent = await sendEvent(retry, key, 'acked');
  expectError(await retry.request('POST', `/api/events/${sent.id}/redeliver`, { key: otherKey }), 404, 'not_found');
  const acked = await retry.request('POST', `/api/ack/${sent.id}`, { key });
  assert.is(acked.status, 200, acked.text);
  expectError(await retry.request('POST', `/api/events/${sent.id}/redeliver`, { key }), 409, 'event_acknowledged');
  assert.is((await getEvent(retry, key, sent.id)).status, 'acknowledged');
  target.assertAllVerified();
  assert.is(other.requests.length, 0);
});

retries('429/503 Retry-After is honoured within the schedule bounds: 1 s → the next attempt after ≥ 1 s; 3600 s → capped at the longest delay', async ({ retry }) => {
  const key = await org(retry, 'retry-after');
  const target = await receiver(sequence([{ status: 429, retryAfter: '1' }, { status: 503, retryAfter: '3600' }]));
  const { secret } = await configureEndpoint(retry, key, target);
  const sent = await sendEvent(retry, key, 'throttled');
  const event = await waitForStatus(retry, key, sent.id, 'delivered', 15_000);
  assert.equal(event.attempts.map((a: { status_code?: number }) => a.status_code), [429, 503, 200], JSON.stringify(event.attempts));
  const requests = target.byId(sent.id);
  assert.is(requests.length, 3);
  for (const request of requests) verifyDelivery(secret, request);
  // Rule (dispatcher): delay = clamp(Retry-After, first delay of the schedule, longest delay), no jitter.
  const first = gap(requests[0]!, requests[1]!);
  assert.ok(first >= 1_000 - 10, `Retry-After: 1 but retried after ${first} ms`);
  assert.ok(first <= 1_000 + 1_000, `Retry-After: 1 but retried after ${first} ms`);
  const longest = Math.max(...SCHEDULE_MS);
  const second = gap(requests[1]!, requests[2]!);
  assert.ok(second >= longest - 10 && second <= longest + 1_000, `Retry-After: 3600 with a longest delay of ${longest} ms, retried after ${second} ms`);
  target.assertAllVerified();
});

retries('an event acked while its retries are pending is never delivered again', async ({ retry }) => {
  const key = await org(retry, 'ack cancels');
  // `victim`: refused once, then it would be taken. `control`: refused twice, so its delivery comes
  // two schedule periods after its first attempt, which is after the ack.
  const target = await receiver((request, nth) => {
    if (request.body?.type === 'victim') return nth === 1 ? { status: 500 } : { status: 200 };
    return nth <= 2 ? { status: 503 } : { status: 200 };
  });
  const { secret } = await configureEndpoint(retry, key, target);
  const victim = await sendEvent(retry, key, 'victim');
  await target.nth(victim.id, 1);
  const acked = await retry.request('POST', `/api/ack/${victim.id}`, { key });
  assert.is(acked.status, 200, acked.text);
  assert.is(acked.body.status, 'acknowledged');
  const ackedAt = Date.now();

  const control = await sendEvent(retry, key, 'control');
  const last = await target.nth(control.id, 3);
  await waitForStatus(retry, key, control.id, 'delivered');
  assert.ok(last.at - ackedAt >= 2 * (1 - JITTER) * SCHEDULE_MS[0]!, 'the control event did not span two schedule periods');
  assert.is(target.byId(victim.id).length, 1, 'the acknowledged event was delivered again');
  const event = await getEvent(retry, key, victim.id);
  assert.is(event.status, 'acknowledged');
  assert.is(event.acknowledged_at, acked.body.acknowledged_at);
  assert.is(event.attempts.length, 1, JSON.stringify(event.attempts));
  assert.is(event.attempts[0].status_code, 500);
  verifyDelivery(secret, target.byId(victim.id)[0]!);
  target.assertAllVerified();
});

/**
 * Org A's endpoint hangs with `queued` events waiting for it; once they are all in Postgres and its
 * deliveries hang, org B sends events one at a time: returns B's accept → delivery times (it stops
 * at the first one over a second, so a failing run stays short).
 */
async function deadEndpointScenario(server: TestServer, db: TestDatabase, queued: number, samples: number): Promise<number[]> {
  const [a, b] = await Promise.all([server.createKey('enterprise', `dead a ${queued}`), server.createKey('enterprise', `healthy b ${queued}`)]);
  const dead = await receiver(always({ hang: true }));
  const healthy = await receiver();
  await configureEndpoint(server, a.key, dead);
  await configureEndpoint(server, b.key, healthy);
  for (let offset = 0; offset < queued; offset += 1_000) {
    const size = Math.min(1_000, queued - offset);
    const batch = await server.request('POST', '/api/events/batch', {
      key: a.key,
      body: { events: Array.from({ length: size }, (_, n) => ({ type: 'doomed', payload: { n: offset + n } })) },
    });
    assert.is(batch.status, 200, batch.text.slice(0, 300));
    assert.is(batch.body.accepted, size);
  }
  // B's events must not wait for the drain of A's: only the dispatcher is measured.
  await waitFor('org A\'s events in Postgres', async () => {
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from events where organization_id = ${a.organizationId}`;
    return row!.n === queued;
  }, 30_000, 100);
  await dead.until('org A\'s deliveries to hang', (requests) => requests.length >= 16);

  const latencies: number[] = [];
  for (let n = 0; n < samples; n++) {
    const sent = await sendEvent(server, b.key, 'healthy', { n });
    const request = await healthy.nth(sent.id, 1, 15_000);
    latencies.push(request.at - sent.sentAt);
    if (request.at - sent.sentAt >= 1_000) break;
  }
  assert.ok(dead.requests.every((request) => request.answeredAt === undefined), 'the dead endpoint answered');
  assert.ok(dead.requests.length > 0 && dead.requests.length <= queued);
  healthy.assertAllVerified();
  dead.assertAllVerified();
  return latencies;
}

retries('a dead endpoint does not delay a healthy org: with 200 deliveries hanging for org A, org B is delivered within 1 s', async ({ isolation, isolationDb }) => {
  const latencies = await deadEndpointScenario(isolation, isolationDb, 200, 10);
  assert.ok(latencies.length === 10 && latencies.every((ms) => ms < 1_000), `accept → delivery for org B (ms): ${latencies.join(', ')}`);
});

retries('a dead endpoint with a large backlog (20,000 events) does not delay a healthy org either', async ({ isolation, isolationDb }) => {
  const latencies = await deadEndpointScenario(isolation, isolationDb, 20_000, 20);
  assert.ok(latencies.length === 20 && latencies.every((ms) => ms < 1_000), `accept → delivery for org B (ms): ${latencies.join(', ')}`);
});

retries('kill -9 between attempts: after the restart the retry comes on schedule (default 5 s ±20 %), same webhook-id; nothing lost', async ({ restart }) => {
  const key = await org(restart, 'crash');
  const target = await receiver(always({ status: 500 }));
  const { secret } = await configureEndpoint(restart, key, target);
  const sent = await sendEvent(restart, key, 'survivor', { n: 7 });
  const first = await target.nth(sent.id, 1);
  await waitForEvent(restart, key, sent.id, 'the first attempt recorded', (event) => event.attempts.length === 1);
  const crashedAt = Date.now();
  await restart.crash();
  target.policy = always({ status: 200 });
  await restart.boot();
  const bootedAt = Date.now();

  const second = await target.nth(sent.id, 2, 15_000);
  assert.ok(second.at > crashedAt);
  assert.is(second.headers['webhook-id'], sent.id);
  assert.equal(verifyDelivery(secret, second), { id: sent.id, type: 'survivor', timestamp: sent.received_at, data: { n: 7 } });
  const spacing = gap(first, second);
  assert.ok(spacing >= 0.8 * 5_000, `retried ${spacing} ms after the first attempt; the default schedule says 5 s ±20 %`);
  assert.ok(spacing <= Math.max(1.2 * 5_000, bootedAt - first.at) + 1_500, `retried ${spacing} ms after the first attempt (boot done after ${bootedAt - first.at} ms)`);
  const event = await waitForStatus(restart, key, sent.id, 'delivered');
  assert.equal(event.attempts.map((a: { status_code?: number }) => a.status_code), [500, 200]);
  assert.is(target.byId(sent.id).length, 2);
  target.assertAllVerified();
});

retries('graceful stop during deliveries exits 0 and records what was in flight; the rest goes out after the next start', async ({ restart, restartDb }) => {
  const key = await org(restart, 'graceful');
  const target = await receiver(always({ status: 200, delayMs: 300 }));
  await configureEndpoint(restart, key, target);
  const batch = await restart.request('POST', '/api/events/batch', {
    key,
    body: { events: Array.from({ length: 40 }, (_, n) => ({ type: 'in.flight', payload: { n } })) },
  });
  assert.is(batch.status, 200, batch.text.slice(0, 300));
  const ids: string[] = batch.body.results.map((result: { id: string }) => result.id);
  assert.is(ids.length, 40);
  await target.until('deliveries in flight', (requests) => requests.length >= 1);
  assert.is(await restart.stop(), 0, restart.logs.slice(-10).join('\n'));

  // Every delivery the receiver took before the exit is recorded as delivered, none is left to a lease.
  const answered = target.requests.filter((request) => request.answeredStatus === 200).map((request) => request.id);
  assert.ok(answered.length >= 1);
  const rows = await restartDb.sql<{ id: string; status: string }[]>`select id::text, status from events where id = any(string_to_array(${ids.join(',')}, ',')::uuid[])`;
  const status = new Map(rows.map((row) => [row.id, row.status]));
  assert.is(rows.length, ids.length, 'not every event reached Postgres at shutdown');
  for (const id of answered) assert.is(status.get(id), 'delivered', `event ${id} was answered 200 before the exit but is ${status.get(id)}`);

  await restart.boot();
  for (const id of ids) await waitForStatus(restart, key, id, 'delivered', 15_000);
  assert.equal([...target.ids()].sort(), [...ids].sort());
  for (const id of answered) assert.is(target.byId(id).length, 1, `event ${id} delivered again after the restart`);
  target.assertAllVerified();
});

retries.run();
