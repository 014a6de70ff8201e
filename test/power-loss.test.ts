// Power loss: LMDB runs with noSync, so after a machine stop its file may be torn. A kill -9 cannot
// make that state, so these tests make it by hand after one: the LMDB file overwritten with
// garbage, the journal's last frame torn, and the log state naming another boot (as after a
// reboot). The server must then rebuild the log from the journal and Postgres: every 202 comes
// back exactly once, dedup still answers 409 with the original id, and the journal is pruned
// once drained. A clean shutdown is trusted across a reboot.
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { expectError, TestServer, useTestDatabase, waitFor, type TestDatabase } from './helpers/server.ts';

interface Ctx {
  db: TestDatabase;
}

const powerLoss = suite<Ctx>('power loss');
useTestDatabase(powerLoss);

/** What a power loss can leave: a torn LMDB file and a log state written under an earlier boot. */
function simulatePowerLoss(dataDir: string): void {
  const state = JSON.parse(readFileSync(path.join(dataDir, 'log-state.json'), 'utf8')) as { bootId: string; clean: boolean };
  assert.is(state.clean, false, 'a crashed server left its log marked open');
  writeFileSync(path.join(dataDir, 'log-state.json'), JSON.stringify({ bootId: 'an-earlier-boot', clean: false }));
  writeFileSync(path.join(dataDir, 'log', 'data.mdb'), Buffer.alloc(64 * 1024, 0xa5));
}

/** The journal's segments (not its preallocated spares). */
function journalSegments(dataDir: string): string[] {
  return readdirSync(path.join(dataDir, 'journal')).filter((name) => /\.(open|closed)$/.test(name));
}

/** A frame torn by the power loss: a length and a few bytes of a frame that never finished, after the last whole one. */
function tearAfterLastFrame(file: string): void {
  const bytes = readFileSync(file);
  let end = 0;
  while (end + 8 <= bytes.length && bytes.readUInt32LE(end) !== 0) end += 8 + bytes.readUInt32LE(end);
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.from([200, 0, 0, 0, 1, 2, 3, 4, 5]), 0, 9, end);
  closeSync(fd);
}

async function rowCount(db: TestDatabase): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from events`;
  return row!.n;
}

let servers: TestServer[] = [];
powerLoss.after.each(async () => {
  await Promise.all(servers.map((server) => server.close()));
  servers = [];
});

async function start(db: TestDatabase, env: Record<string, string>, dataDir?: string): Promise<TestServer> {
  const server = await TestServer.start(db.url, env, dataDir);
  servers.push(server);
  return server;
}

powerLoss('DURABILITY=fsync: after a power loss every 202 is rebuilt from the journal, once, and dedup holds', async ({ db }) => {
  // A 60 s linger: nothing drains unless a read asks for it, so the later events are only in LMDB and the journal.
  const first = await start(db, { DURABILITY: 'fsync', ACCEPTOR_THREADS: '2', PERSIST_LINGER: '60s' });
  const { key } = await first.createKey('enterprise', 'power loss org');
  const drainedEarlier = await first.request('POST', '/api/events', { key, body: { type: 'early', payload: { n: 0 }, dedup_id: 'early' } });
  assert.is(drainedEarlier.status, 202, drainedEarlier.text);
  const inbox = await first.request('GET', '/api/inbox?status=all', { key });
  assert.is(inbox.status, 200, inbox.text);
  assert.is(await rowCount(db), 1, 'the first event is in Postgres');

  const acked = new Map<string, { n: number }>();
  const sends = Array.from({ length: 60 }, (_, n) =>
    first.request('POST', '/api/events', { key, body: { type: 'late', payload: { n }, ...(n % 3 === 0 ? { dedup_id: `late-${n}` } : {}) } }));
  for (const [n, reply] of (await Promise.all(sends)).entries()) {
    assert.is(reply.status, 202, reply.text);
    acked.set(reply.body.id, { n });
  }
  assert.is(await rowCount(db), 1, 'the later events are not in Postgres yet');
  await first.crash();

  simulatePowerLoss(first.dataDir);
  const segments = journalSegments(first.dataDir);
  assert.ok(segments.length > 0, 'the journal has segments');
  for (const segment of segments) tearAfterLastFrame(path.join(first.dataDir, 'journal', segment));

  const second = await start(db, { DURABILITY: 'fsync', ACCEPTOR_THREADS: '2' }, first.dataDir);
  for (const [id, payload] of acked) {
    const reply = await second.request('GET', `/api/events/${id}`, { key });
    assert.is(reply.status, 200, `${id}: ${reply.text}`);
    assert.equal(reply.body.payload, payload);
  }
  await waitFor('every event in Postgres', async () => (await rowCount(db)) >= acked.size + 1);
  assert.is(await rowCount(db), acked.size + 1, 'each event stored once');

  const lateDuplicate = await second.request('POST', '/api/events', { key, body: { type: 'late', payload: { n: 3 }, dedup_id: 'late-3' } });
  const lateOriginal = [...acked].find(([, payload]) => payload.n === 3)![0];
  assert.is(expectError(lateDuplicate, 409, 'duplicate_event').id, lateOriginal, lateDuplicate.text);
  const earlyDuplicate = await second.request('POST', '/api/events', { key, body: { type: 'early', payload: { n: 0 }, dedup_id: 'early' } });
  assert.is(expectError(earlyDuplicate, 409, 'duplicate_event').id, drainedEarlier.body.id, earlyDuplicate.text);
  const fresh = await second.request('POST', '/api/events', { key, body: { type: 'after', payload: {} } });
  assert.is(fresh.status, 202, fresh.text);

  // Everything is drained now: the replayed segments go at the next prune (every 10 s).
  await second.request('GET', '/api/inbox?status=all', { key });
  await waitFor('the drained journal segments deleted', () => journalSegments(second.dataDir).every((name) => name.endsWith('.open')), 30_000, 200);
  const rebuilt = second.logs.find((line) => line.includes('log rebuilt from the journal and Postgres'));
  assert.ok(rebuilt, 'the log was rebuilt');
  const { events, tornSegments } = JSON.parse(rebuilt) as { events: number; tornSegments: number };
  assert.is(events, acked.size + 1, 'every journaled event replayed once (the early one too)');
  assert.is(tornSegments, segments.length, 'every torn frame was found and skipped');
});

powerLoss('DURABILITY=commit: after a power loss the server rebuilds from Postgres and dedup of drained events holds', async ({ db }) => {
  const first = await start(db, { DURABILITY: 'commit' });
  const { key } = await first.createKey('enterprise', 'commit power loss org');
  const sent = await first.request('POST', '/api/events', { key, body: { type: 'commit', payload: {}, dedup_id: 'commit-1' } });
  assert.is(sent.status, 202, sent.text);
  await first.request('GET', '/api/inbox?status=all', { key });
  await first.crash();
  simulatePowerLoss(first.dataDir);

  const second = await start(db, { DURABILITY: 'commit' }, first.dataDir);
  const duplicate = await second.request('POST', '/api/events', { key, body: { type: 'commit', payload: {}, dedup_id: 'commit-1' } });
  assert.is(expectError(duplicate, 409, 'duplicate_event').id, sent.body.id, duplicate.text);
  const fresh = await second.request('POST', '/api/events', { key, body: { type: 'commit', payload: {} } });
  assert.is(fresh.status, 202, fresh.text);
  assert.ok(second.logs.some((line) => line.includes('log rebuilt from the journal and Postgres')), 'the log was rebuilt');
});

powerLoss('a clean shutdown is trusted after a reboot: no rebuild, nothing lost', async ({ db }) => {
  const first = await start(db, { DURABILITY: 'fsync', PERSIST_LINGER: '60s' });
  const { key } = await first.createKey('enterprise', 'clean shutdown org');
  const sent = await first.request('POST', '/api/events', { key, body: { type: 'clean', payload: {}, dedup_id: 'clean-1' } });
  assert.is(sent.status, 202, sent.text);
  const stopping = Date.now();
  assert.is(await first.stop(), 0);
  // The drain's last wait is cut short at shutdown, not sat out for PERSIST_LINGER (60 s here).
  assert.ok(Date.now() - stopping < 30_000, `SIGTERM took ${Date.now() - stopping} ms`);
  const state = JSON.parse(readFileSync(path.join(first.dataDir, 'log-state.json'), 'utf8')) as { clean: boolean };
  assert.is(state.clean, true, 'a clean shutdown marks the log clean');
  writeFileSync(path.join(first.dataDir, 'log-state.json'), JSON.stringify({ bootId: 'an-earlier-boot', clean: true }));

  const second = await start(db, { DURABILITY: 'fsync' }, first.dataDir);
  assert.not.ok(second.logs.some((line) => line.includes('log rebuilt')), 'no rebuild after a clean shutdown');
  const reply = await second.request('GET', `/api/events/${sent.body.id}`, { key });
  assert.is(reply.status, 200, reply.text);
  const duplicate = await second.request('POST', '/api/events', { key, body: { type: 'clean', payload: {}, dedup_id: 'clean-1' } });
  expectError(duplicate, 409, 'duplicate_event');
});

powerLoss.run();
