// GET /health, /health/live, /health/ready and /metrics.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freshRequest, freshRequests, parseMetrics, sample } from './helpers/http.ts';
import { expectError, TestServer, useTestDatabase, waitFor, type TestDatabase } from './helpers/server.ts';

interface Context {
  db: TestDatabase;
  server: TestServer;
  /** ACCEPTOR_THREADS=2: the counters must be the instance's, whichever thread answers. */
  threaded: TestServer;
  key: string;
  threadedKey: string;
}

const health = suite<Context>('health');

useTestDatabase(health, async (ctx) => {
  [ctx.server, ctx.threaded] = await Promise.all([
    TestServer.start(ctx.db.url),
    TestServer.start(ctx.db.url, { ACCEPTOR_THREADS: '2' }),
  ]);
  ctx.key = (await ctx.server.createKey('enterprise', 'metrics org')).key;
  ctx.threadedKey = (await ctx.threaded.createKey('enterprise', 'threaded metrics org')).key;
});

const ACCEPTED = 'triggers_events_accepted_total';
const rejected = (code: string) => `triggers_events_rejected_total{code="${code}"}`;
const LATENCY = 'triggers_ingest_latency_seconds';

async function metrics(server: TestServer): Promise<Map<string, number>> {
  const reply = await server.request('GET', '/metrics');
  assert.is(reply.status, 200, reply.text);
  return parseMetrics(reply.text);
}

/** Every rejected_total series: code → value. */
function rejections(samples: Map<string, number>): Map<string, number> {
  const byCode = new Map<string, number>();
  for (const [series, value] of samples) {
    const match = /^triggers_events_rejected_total\{.*code="([^"]+)".*\}$/.exec(series);
    if (match) byCode.set(match[1]!, value);
  }
  return byCode;
}

/** The latency histogram's buckets in order of `le`, plus count and sum. */
function histogram(samples: Map<string, number>): { buckets: Array<[number, number]>; count: number; sum: number } {
  const buckets: Array<[number, number]> = [];
  for (const [series, value] of samples) {
    const match = new RegExp(`^${LATENCY}_bucket\\{.*le="([^"]+)".*\\}$`).exec(series);
    if (match) buckets.push([match[1] === '+Inf' ? Infinity : Number(match[1]), value]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  return { buckets, count: sample(samples, `${LATENCY}_count`), sum: sample(samples, `${LATENCY}_sum`) };
}

function assertRejectionDeltas(before: Map<string, number>, after: Map<string, number>, expected: Record<string, number>): void {
  const codes = new Set([...rejections(before).keys(), ...rejections(after).keys(), ...Object.keys(expected)]);
  for (const code of codes) {
    const delta = (rejections(after).get(code) ?? 0) - (rejections(before).get(code) ?? 0);
    assert.is(delta, expected[code] ?? 0, `rejected{code="${code}"} changed by ${delta}`);
  }
}

// ---------------------------------------------------------------- liveness and readiness

health('GET /health and /health/live → 200 {status: "ok"} (JSON, no key needed)', async ({ server, threaded }) => {
  for (const target of [server, threaded]) {
    for (const route of ['/health', '/health/live']) {
      const reply = await target.request('GET', route);
      assert.is(reply.status, 200, `${route}: ${reply.text}`);
      assert.match(reply.headers.get('content-type') ?? '', /^application\/json/);
      assert.is(reply.body?.status, 'ok', reply.text);
    }
  }
});

health('GET /health/ready → 200 {status: "ready", database: "connected", backlog: integer}', async ({ server }) => {
  const reply = await server.request('GET', '/health/ready');
  assert.is(reply.status, 200, reply.text);
  assert.match(reply.headers.get('content-type') ?? '', /^application\/json/);
  assert.is(reply.body.status, 'ready');
  assert.is(reply.body.database, 'connected');
  assert.ok(Number.isInteger(reply.body.backlog) && reply.body.backlog >= 0, `backlog: ${JSON.stringify(reply.body.backlog)}`);
});

health('every thread of a 2-thread instance answers the health routes', async ({ threaded }) => {
  const replies = await freshRequests(24, 6, (i) => freshRequest(threaded.port, 'GET', ['/health', '/health/live', '/health/ready'][i % 3]!));
  replies.forEach((reply, i) => {
    assert.is(reply.status, 200, `request ${i}: ${reply.text}`);
    assert.ok(reply.body?.status === 'ok' || (reply.body?.status === 'ready' && reply.body.database === 'connected'), reply.text);
  });
});

health('health routes: wrong method → 405, near-miss path → 404', async ({ server }) => {
  for (const [method, route] of [['POST', '/health'], ['DELETE', '/health/live'], ['PUT', '/health/ready'], ['POST', '/metrics']] as const) {
    const reply = await server.request(method, route);
    expectError(reply, 405, 'method_not_allowed');
  }
  for (const route of ['/healthz', '/health/nope', '/metrics/extra']) expectError(await server.request('GET', route), 404, 'not_found');
});

// ---------------------------------------------------------------- metrics

health('GET /metrics → Prometheus text with the ingest families', async ({ server }) => {
  const reply = await server.request('GET', '/metrics');
  assert.is(reply.status, 200, reply.text);
  assert.match(reply.headers.get('content-type') ?? '', /^text\/plain/);
  const text = reply.text;
  assert.match(text, /^# TYPE triggers_events_accepted_total counter$/m);
  assert.match(text, /^# TYPE triggers_events_rejected_total counter$/m);
  assert.match(text, /^# TYPE triggers_ingest_latency_seconds histogram$/m);
  // The log backlog gauge (named triggers_log_entries in the first version of the server).
  assert.match(text, /^# TYPE (triggers_log_backlog|triggers_log_entries) gauge$/m);
  const samples = parseMetrics(text); // throws on any line that is not a valid sample
  assert.ok(Number.isInteger(sample(samples, ACCEPTED)));
  for (const code of ['validation_error', 'invalid_json', 'missing_api_key', 'invalid_api_key', 'rate_limited', 'duplicate_event', 'payload_too_large', 'unsupported_media_type', 'overloaded']) {
    assert.ok(Number.isInteger(sample(samples, rejected(code))), code);
  }
  const { buckets } = histogram(samples);
  assert.ok(buckets.length >= 5, `only ${buckets.length} latency buckets`);
  assert.is(buckets[buckets.length - 1]![0], Infinity, 'the last bucket is le="+Inf"');
  assert.ok(text.includes(`${LATENCY}_bucket{le="+Inf"}`), 'le="+Inf" bucket as Prometheus writes it');
  const backlog = samples.get('triggers_log_backlog') ?? sample(samples, 'triggers_log_entries');
  assert.ok(Number.isInteger(backlog) && backlog >= 0, `log backlog gauge ${backlog}`);
});

health('metrics count exactly: 3 accepted and 1 validation rejection', async ({ server, key }) => {
  const before = await metrics(server);
  const started = Date.now();
  for (let i = 0; i < 3; i++) {
    const reply = await server.request('POST', '/api/events', { key, body: { type: 'metrics.test', payload: { i } } });
    assert.is(reply.status, 202, reply.text);
  }
  const elapsed = (Date.now() - started) / 1000;
  const bad = await server.request('POST', '/api/events', { key, body: { payload: { no: 'type' } } });
  expectError(bad, 400, 'validation_error');
  const after = await metrics(server);

  assert.is(sample(after, ACCEPTED) - sample(before, ACCEPTED), 3, 'accepted_total delta');
  assertRejectionDeltas(before, after, { validation_error: 1 });

  const h0 = histogram(before);
  const h1 = histogram(after);
  assert.is(h1.count - h0.count, 3, 'latency _count delta');
  assert.is(h1.buckets[h1.buckets.length - 1]![1] - h0.buckets[h0.buckets.length - 1]![1], 3, 'le="+Inf" delta');
  assert.is(h1.count, h1.buckets[h1.buckets.length - 1]![1], '_count equals the +Inf bucket');
  const sumDelta = h1.sum - h0.sum;
  assert.ok(sumDelta > 0 && sumDelta <= elapsed + 0.01, `latency _sum delta ${sumDelta}s for 3 requests that took ${elapsed}s in all`);
  for (let i = 1; i < h1.buckets.length; i++) {
    assert.ok(h1.buckets[i]![1] >= h1.buckets[i - 1]![1], `buckets are cumulative: le=${h1.buckets[i]![0]} < le=${h1.buckets[i - 1]![0]}`);
  }
  for (let i = 0; i < h1.buckets.length; i++) {
    const delta = h1.buckets[i]![1] - h0.buckets[i]![1];
    assert.ok(delta >= 0 && delta <= 3, `bucket le=${h1.buckets[i]![0]} moved by ${delta}`);
  }
});

health('rejections are counted under their own code', async ({ server, key }) => {
  const before = await metrics(server);
  expectError(await server.request('POST', '/api/events', { body: { type: 't', payload: {} } }), 401, 'missing_api_key');
  expectError(await server.request('POST', '/api/events', { key: 'zap_live_nope', body: { type: 't', payload: {} } }), 401, 'invalid_api_key');
  expectError(
    await server.request('POST', '/api/events', { key, raw: Buffer.from('{"type":'), headers: { 'content-type': 'application/json' } }),
    400,
    'invalid_json',
  );
  expectError(
    await server.request('POST', '/api/events', { key, raw: JSON.stringify({ type: 't', payload: {} }), headers: { 'content-type': 'text/plain' } }),
    415,
    'unsupported_media_type',
  );
  expectError(await server.request('POST', '/api/events', { key, body: { type: 't', payload: [] } }), 400, 'validation_error');
  const after = await metrics(server);
  assert.is(sample(after, ACCEPTED) - sample(before, ACCEPTED), 0, 'nothing accepted');
  assertRejectionDeltas(before, after, { missing_api_key: 1, invalid_api_key: 1, invalid_json: 1, unsupported_media_type: 1, validation_error: 1 });
});

health('a batch counts each event: 2 accepted, 1 rejected', async ({ server, key }) => {
  const before = await metrics(server);
  const reply = await server.request('POST', '/api/events/batch', {
    key,
    body: { events: [{ type: 'a', payload: {} }, { type: '', payload: {} }, { type: 'b', payload: { n: 1 } }] },
  });
  assert.is(reply.status, 200, reply.text);
  assert.is(reply.body.accepted, 2, reply.text);
  const after = await metrics(server);
  assert.is(sample(after, ACCEPTED) - sample(before, ACCEPTED), 2, 'accepted_total delta');
  assertRejectionDeltas(before, after, { validation_error: 1 });
});

health('the backlog (readiness and gauge) returns to 0 once accepted events are drained to Postgres', async ({ server, key }) => {
  const before = sample(await metrics(server), 'triggers_events_drained_total');
  for (let i = 0; i < 5; i++) {
    assert.is((await server.request('POST', '/api/events', { key, body: { type: 'drain.me', payload: { i } } })).status, 202);
  }
  await waitFor('backlog back to 0', async () => {
    const samples = await metrics(server);
    const ready = await server.request('GET', '/health/ready');
    return sample(samples, 'triggers_log_backlog') === 0 && ready.body?.backlog === 0;
  });
  const after = await metrics(server);
  assert.ok(sample(after, 'triggers_events_drained_total') - before >= 5, 'drained_total grew by the 5 events');
  assert.is(sample(after, 'triggers_database_up'), 1);
});

health('ACCEPTOR_THREADS=2: counters are the instance\'s, the same from whichever thread serves /metrics', async ({ threaded, threadedKey }) => {
  const before = parseMetrics((await freshRequest(threaded.port, 'GET', '/metrics')).text);
  const sent = await freshRequests(20, 5, (i) =>
    i % 4 === 3
      ? freshRequest(threaded.port, 'POST', '/api/events', { key: threadedKey, body: { type: '', payload: {} } })
      : freshRequest(threaded.port, 'POST', '/api/events', { key: threadedKey, body: { type: 'spread', payload: { i } } }),
  );
  const accepted = sent.filter((reply) => reply.status === 202).length;
  const refused = sent.filter((reply) => reply.status === 400).length;
  assert.is(accepted, 15, sent.map((reply) => reply.status).join(','));
  assert.is(refused, 5);
  const reads = await freshRequests(12, 4, () => freshRequest(threaded.port, 'GET', '/metrics'));
  reads.forEach((reply, i) => {
    assert.is(reply.status, 200);
    const after = parseMetrics(reply.text);
    assert.is(sample(after, ACCEPTED) - sample(before, ACCEPTED), 15, `read ${i}: accepted delta`);
    assert.is(sample(after, rejected('validation_error')) - sample(before, rejected('validation_error')), 5, `read ${i}: rejected delta`);
    assert.is(histogram(after).count - histogram(before).count, 15, `read ${i}: latency count delta`);
  });
});


health('a second server on the same DATA_DIR or the same port refuses to start, and the first keeps serving', async ({ db, server, key }) => {
  const sameDir = await TestServer.start(db.url, {}, server.dataDir).then(() => null, (error: Error) => error.message);
  assert.ok(sameDir?.includes(`DATA_DIR ${server.dataDir} is in use by process`), `second server on the DATA_DIR: ${sameDir}`);
  const samePort = await TestServer.start(db.url, { PORT: String(server.port) }).then(() => null, (error: Error) => error.message);
  assert.ok(samePort?.includes(`port ${server.port} on 127.0.0.1 is already in use`), `second server on the port: ${samePort}`);
  const reply = await server.request('POST', '/api/events', { key, body: { type: 'still.here', payload: {} } });
  assert.is(reply.status, 202, reply.text);
});

health('metrics: triggers_database_up is 1 from the start', async ({ threaded }) => {
  assert.is(sample(await metrics(threaded), 'triggers_database_up'), 1);
});

health.run();
