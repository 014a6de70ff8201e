// Durability: a 202 means the event survives kill -9 (DURABILITY=fsync and =commit), dedup
// survives a crash, a restarted log never reuses a position, SIGTERM answers what is in flight
// and exits 0, and repeated crashes under load lose nothing that was acknowledged.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { burst, openConnections, sustain, tally, type LoadRequest, type Outcome } from './helpers/load.ts';
import { createTestDatabase, expectError, TestServer, type TestDatabase } from './helpers/server.ts';

const MODES = ['fsync', 'commit'] as const;
type Mode = (typeof MODES)[number];

interface Ctx {
  db: TestDatabase;
  servers: Record<Mode, TestServer>;
  keys: Record<Mode, string>;
}

const durability = suite<Ctx>('durability');

durability.before(async (ctx) => {
  ctx.db = await createTestDatabase();
  ctx.servers = {} as Record<Mode, TestServer>;
  try {
    for (const mode of MODES) ctx.servers[mode] = await TestServer.start(ctx.db.url, { DURABILITY: mode, ACCEPTOR_THREADS: '2' });
    ctx.keys = {
      fsync: (await ctx.servers.fsync.createKey('enterprise', 'durable fsync org')).key,
      commit: (await ctx.servers.commit.createKey('enterprise', 'durable commit org')).key,
    };
  } catch (error) {
    // uvu swallows a before hook's error (its tests just count as failed); after still runs.
    console.error('setup failed:', error);
    throw error;
  }
});

durability.after(async (ctx) => {
  await Promise.all(Object.values(ctx.servers ?? {}).map((server) => server.close()));
  await ctx.db?.drop();
});

interface Sent {
  type: string;
  payload: Record<string, unknown>;
}

let serial = 0;
function eventRequest(key: string, tag: string): LoadRequest {
  const n = ++serial;
  return { path: '/api/events', key, body: { type: `durable.${tag}`, payload: { n, tag, text: `event ${n} ${'x'.repeat(n % 50)}` } } };
}

/** id → what was sent, for every request that got a 202. */
function acknowledged(outcomes: readonly Outcome[]): Map<string, Sent> {
  const acked = new Map<string, Sent>();
  for (const { request, reply } of outcomes) {
    if (reply?.status !== 202) continue;
    const body = request.body as Sent;
    assert.ok(!acked.has(reply.body.id), `id ${reply.body.id} was handed out twice`);
    acked.set(reply.body.id, { type: body.type, payload: body.payload });
  }
  return acked;
}

/** GETs every id (in parallel, over separate connections) and returns what is missing or differs. */
async function unreadable(server: TestServer, key: string, expected: ReadonlyMap<string, Sent>): Promise<string[]> {
  const problems: string[] = [];
  const entries = [...expected];
  for (let start = 0; start < entries.length; start += 200) {
    const chunk = entries.slice(start, start + 200);
    const outcomes = await burst(server.url, chunk.map(([id]) => ({ method: 'GET', path: `/api/events/${id}`, key })));
    outcomes.forEach(({ reply, error }, i) => {
      const [id, sent] = chunk[i]!;
      if (!reply) problems.push(`${id}: ${error}`);
      else if (reply.status !== 200) problems.push(`${id}: ${reply.status} ${reply.text}`);
      else if (reply.body.id !== id || reply.body.type !== sent.type || JSON.stringify(reply.body.payload) !== JSON.stringify(sent.payload)) {
        problems.push(`${id}: sent ${JSON.stringify(sent)}, read ${reply.text}`);
      }
    });
  }
  return problems;
}

/**
 * Fires `total` concurrent POSTs (one connection each) and kill -9s the server as soon as
 * `crashAfter` of them have been acknowledged. Returns every outcome.
 */
async function burstAndCrash(server: TestServer, key: string, tag: string, total: number, crashAfter: number): Promise<{ outcomes: Outcome[]; crashed: Promise<void> }> {
  let acks = 0;
  let crashed: Promise<void> | null = null;
  const outcomes = await burst(server.url, Array.from({ length: total }, () => eventRequest(key, tag)), {
    onOutcome: (outcome) => {
      if (outcome.reply?.status === 202 && ++acks >= crashAfter && crashed === null) crashed = server.crash();
    },
  });
  return { outcomes, crashed: crashed ?? server.crash() };
}

for (const mode of MODES) {
  durability(`DURABILITY=${mode}: every 202 of a 500-request burst survives kill -9 in the middle of it`, async ({ servers, keys }) => {
    const server = servers[mode];
    const key = keys[mode];
    const { outcomes, crashed } = await burstAndCrash(server, key, `burst-${mode}`, 500, 150);
    await crashed;
    const acked = acknowledged(outcomes);
    const counts = tally(outcomes);
    assert.ok(acked.size >= 150, `only ${acked.size} acknowledged: ${JSON.stringify(counts)}`);
    for (const { reply } of outcomes) {
      if (reply) assert.is(reply.status, 202, `only 202s expected before the crash: ${reply.status} ${reply.text}`);
    }
    await server.boot();
    assert.equal(await unreadable(server, key, acked), [], `${JSON.stringify(counts)}`);
  });

  durability(`DURABILITY=${mode}: a dedup_id accepted just before kill -9 is still a duplicate after restart`, async ({ servers, keys }) => {
    const server = servers[mode];
    const key = keys[mode];
    const dedupId = `crash-dedup-${mode}`;
    const sent = await server.request('POST', '/api/events', { key, body: { type: 'dedup.crash', payload: { mode }, dedup_id: dedupId } });
    assert.is(sent.status, 202, sent.text);
    await server.crash();
    await server.boot();
    const again = await server.request('POST', '/api/events', { key, body: { type: 'dedup.crash', payload: { mode, again: true }, dedup_id: dedupId } });
    expectError(again, 409, 'duplicate_event');
    assert.is(again.body.id, sent.body.id);
    const read = await server.request('GET', `/api/events/${sent.body.id}`, { key });
    assert.is(read.status, 200, read.text);
    assert.equal(read.body.payload, { mode });
    assert.is(read.body.dedup_id, dedupId);
  });

  durability(`DURABILITY=${mode}: after kill -9 and restart, new events get new positions and ids; old events are untouched`, async ({ servers, keys }) => {
    const server = servers[mode];
    const key = keys[mode];
    const before = acknowledged(await burst(server.url, Array.from({ length: 100 }, () => eventRequest(key, `before-${mode}`))));
    assert.is(before.size, 100);
    await server.crash();
    await server.boot();
    const afterOutcomes = await burst(server.url, Array.from({ length: 100 }, () => eventRequest(key, `after-${mode}`)));
    assert.equal(tally(afterOutcomes), { 202: 100 });
    const after = acknowledged(afterOutcomes);
    assert.is(after.size, 100);
    const maxBefore = [...before.keys()].sort().at(-1)!;
    for (const id of after.keys()) {
      assert.not.ok(before.has(id), `id ${id} reused after restart`);
      // UUIDv7: time ordered, and the restart took longer than a millisecond.
      assert.ok(id > maxBefore, `new id ${id} sorts before pre-crash id ${maxBefore}`);
    }
    // A log that restarted its sequence would overwrite the pre-crash records.
    assert.equal(await unreadable(server, key, before), [], 'pre-crash events after new appends');
    assert.equal(await unreadable(server, key, after), [], 'post-restart events');
  });
}

durability('DURABILITY=fsync (default), 3 × (sustained load, kill -9, restart): nothing acknowledged in any round is lost', async ({ servers, keys }) => {
  const server = servers.fsync;
  const key = keys.fsync;
  const seen = new Map<string, Sent>();
  for (let round = 1; round <= 3; round++) {
    let acks = 0;
    let crashed: Promise<void> | null = null;
    const load = sustain(server.url, 48, () => eventRequest(key, `loop-${round}`), (outcome) => {
      if (outcome.reply?.status === 202 && ++acks >= 150 && crashed === null) crashed = server.crash();
    });
    // The load stops by itself: every worker ends on the transport error the crash causes.
    const outcomes = await load.finished;
    await (crashed ?? server.crash());
    const counts = tally(outcomes);
    assert.ok((counts.error ?? 0) > 0, `the crash interrupted no request: ${JSON.stringify(counts)}`);
    for (const { reply } of outcomes) if (reply) assert.is(reply.status, 202, reply.text);
    const acked = acknowledged(outcomes);
    assert.ok(acked.size >= 150, `round ${round}: ${JSON.stringify(counts)}`);
    for (const [id, sent] of acked) seen.set(id, sent);
    await server.boot();
    assert.equal(await unreadable(server, key, seen), [], `after round ${round}: ${JSON.stringify(counts)}`);
  }
  assert.ok(seen.size >= 450);
});

durability('SIGTERM: requests in flight on open connections are answered, exit code 0, every 202 durable', async ({ db }) => {
  const server = await TestServer.start(db.url, { ACCEPTOR_THREADS: '2' });
  const clients = await openConnections(server.url, 64);
  try {
    const { key } = await server.createKey('enterprise', 'sigterm org');
    // Open 64 connections (accepted by both threads) and warm every thread's key cache.
    const warm = await clients.send(Array.from({ length: 64 }, () => ({ method: 'GET', path: '/api/events/01a212e5-76c4-701a-a75e-e9a00a5b5567', key })));
    assert.equal(tally(warm), { 404: 64 });
    assert.is(clients.openSockets(), 64);

    let exit: Promise<number | null> | null = null;
    const outcomes = await clients.send(Array.from({ length: 64 }, () => eventRequest(key, 'sigterm')), () => {
      exit = server.stop();
    });
    assert.ok(exit !== null, 'SIGTERM was sent');
    assert.is(await exit!, 0, 'exit code after SIGTERM');
    const counts = tally(outcomes);
    for (const { reply, error } of outcomes) {
      assert.ok(reply, `a request in flight at SIGTERM got no answer (${error}): ${JSON.stringify(counts)}`);
      assert.ok(reply.status === 202 || reply.status === 503, `${reply.status} ${reply.text}`);
      if (reply.status === 503) assert.is(reply.body.code, 'overloaded', reply.text);
    }
    const acked = acknowledged(outcomes);
    await server.boot();
    assert.equal(await unreadable(server, key, acked), [], JSON.stringify(counts));
  } finally {
    clients.close();
    await server.close();
  }
});

durability.run();
