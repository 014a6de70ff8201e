// The short fuzzing batch of `npm test` (the long one is `npm run fuzz`): garbage on every route
// over HTTP, raw-socket protocol attacks, slowloris connections, and a watcher that keeps using the
// server meanwhile. Nothing may answer 5xx, hang, crash, leak a stack trace or another org's event,
// or change state (see fuzz/campaign.ts for the oracle). FUZZ_SEED=<n> replays a seed.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { sendAttack } from './fuzz/attacks.ts';
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

fuzzRaw('a request head over 4 KiB arriving in two reads is closed unanswered (uWS); under 4 KiB it is served', async ({ server }) => {
  const inTwoReads = (headerBytes: number) => {
    const head = Buffer.from(`GET /health HTTP/1.1\r\nHost: fuzz\r\nUser-Agent: ${'h'.repeat(headerBytes)}\r\n\r\n`);
    const half = head.length >> 1;
    return sendAttack(server.port, { label: `${headerBytes} B header in two reads`, segments: [head.subarray(0, half), head.subarray(half)], gapMs: 50 }, '');
  };
  const small = await inTwoReads(3_000);
  small.socket?.destroy();
  assert.equal(small.replies.map((reply) => reply.status), [200]);
  const big = await inTwoReads(5_000);
  assert.ok(big.closed && big.replies.length === 0, 'README documents that uWS drops such heads: update it if this changed');
});

fuzzRaw.run();
