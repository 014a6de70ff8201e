// The short fuzzing batch of `npm test` (the long one is `npm run fuzz`): garbage on every route
// over HTTP, raw-socket protocol attacks, slowloris connections, and a watcher that keeps using the
// server meanwhile. Nothing may answer 5xx, hang, crash, leak a stack trace or another org's event,
// or change state (see fuzz/campaign.ts for the oracle). FUZZ_SEED=<n> replays a seed.
import net from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fuzzBatch, prepareTarget, summarize, type BatchReport, type FuzzTarget } from './fuzz/campaign.ts';
import { ROUTES } from './fuzz/routes.ts';
import { TestServer, useTestDatabase, type TestDatabase } from './helpers/server.ts';

const ADMIN_TOKEN = 'fuzz-admin-token-0123456789abcdef';
const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

interface Ctx {
  db: TestDatabase;
  server: TestServer;
  target: FuzzTarget;
  report: BatchReport;
}

const fuzzRaw = suite<Ctx>('fuzz-raw');

useTestDatabase(fuzzRaw, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url, { ADMIN_TOKEN });
  ctx.target = await prepareTarget(ctx.server, ctx.db.sql, ADMIN_TOKEN);
});

fuzzRaw('a batch of garbage (HTTP, raw socket, slowloris): no 5xx, hang, crash, leak or state change', async (ctx) => {
  ctx.report = await fuzzBatch(ctx.target, { requests: 250, attacks: 40, slowConnections: 9, seed: SEED });
  const summary = summarize(ctx.report);
  assert.equal(ctx.report.problems, [], `${summary}\nreplay: FUZZ_SEED=${SEED} npm test -- fuzz-raw, or npm run fuzz -- --seed ${SEED} --runs 250`);
});

fuzzRaw('the batch reached every route and every kind of attack', (ctx) => {
  const { routes, tried, outcomes, slow } = ctx.report;
  for (const route of ROUTES) {
    const name = `${route.method} ${route.template}`;
    assert.ok((routes.get(name) ?? 0) >= 1, `${name} got no request`);
  }
  for (const kind of ['body: malformed JSON', 'body: invalid UTF-8', 'body: __proto__ / constructor keys', 'body: body over the limit', "id: another org's event id", 'query: inbox filters']) {
    assert.ok((tried.get(kind) ?? 0) > 0, `no "${kind}" in ${JSON.stringify([...tried])}`);
  }
  // Both ways a protocol attack can end were seen, and the slowloris connections were all cut by the server.
  assert.ok((outcomes.get('raw answered') ?? 0) > 0 && (outcomes.get('raw left quiet') ?? 0) > 0, JSON.stringify([...outcomes]));
  assert.is(slow.length, 9);
  assert.ok(slow.every((outcome) => outcome.closedAfterMs !== null));
  assert.ok(ctx.report.watcherRequests >= 10, `the watcher got only ${ctx.report.watcherRequests} answers`);
});

/** Sends `head` in two writes 50 ms apart; resolves with the status line, or null if closed without an answer. */
function sendInTwoReads(port: number, head: string): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n\r\n')) socket.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(received === '' ? null : received.slice(0, received.indexOf('\r\n'))));
    const half = head.length >> 1;
    socket.write(head.slice(0, half));
    setTimeout(() => socket.write(head.slice(half)), 50);
  });
}

fuzzRaw('a request head over 4 KiB arriving in two reads is closed unanswered (uWS); under 4 KiB it is served', async ({ server }) => {
  const head = (bytes: number) => `GET /health HTTP/1.1\r\nHost: fuzz\r\nUser-Agent: ${'h'.repeat(bytes)}\r\n\r\n`;
  assert.is(await sendInTwoReads(server.port, head(3_000)), 'HTTP/1.1 200 OK');
  assert.is(await sendInTwoReads(server.port, head(5_000)), null, 'README documents that uWS drops such heads: update it if this changed');
});

fuzzRaw.run();
