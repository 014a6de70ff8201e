// The TypeScript client (client/index.ts) against the real server: keys, send and batch (auto-chunked
// past 1000), inbox iteration, ack, webhook config and verifyWebhook on real deliveries; retries on a
// real 429 (waits per Retry-After, or gives up with a typed error); and a send whose answer is lost
// on the way back (a TCP proxy drops it) is retried with the same dedup_id and stored once.
import net from 'node:net';
import { Webhook } from 'standardwebhooks';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  MAX_BATCH, TriggersClient, TriggersError, verifyWebhook, WebhookVerificationError,
  type EventInput, type RetryInfo, type TriggersClientOptions,
} from '../client/index.ts';
import { UUID_V7 } from './helpers/ingest.ts';
import { always, Receiver } from './helpers/receiver.ts';
import { TestServer, useTestDatabase, waitFor, type TestDatabase } from './helpers/server.ts';

const ADMIN_TOKEN = 'client-test-admin-token-5d1c8e2a';
const UNKNOWN_ID = '01a212e5-76c4-701a-a75e-e9a00a5b5567';

interface Ctx {
  db: TestDatabase;
  server: TestServer;
}

const client = suite<Ctx>('client');
const receivers: Receiver[] = [];
const proxies: LossyProxy[] = [];

useTestDatabase(client, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url, { ADMIN_TOKEN, WEBHOOK_ALLOW_PRIVATE: 'true' });
});

client.after(async () => {
  await Promise.all([...receivers.map((r) => r.close()), ...proxies.map((p) => p.close())]);
});

function connect(server: TestServer, options: Partial<TriggersClientOptions> = {}): TriggersClient {
  return new TriggersClient({ baseUrl: server.url, adminToken: ADMIN_TOKEN, ...options });
}

/** A client with a key of a new organization. */
async function orgClient(server: TestServer, tier: 'free' | 'enterprise', options: Partial<TriggersClientOptions> = {}): Promise<TriggersClient> {
  const created = await connect(server).generateKey(`client ${tier} org`, { tier });
  return connect(server, { apiKey: created.api_key, ...options });
}

/** Runs `call`, expecting a TriggersError; returns it. */
async function rejects(call: () => Promise<unknown>): Promise<TriggersError> {
  try {
    await call();
  } catch (error) {
    if (error instanceof TriggersError) return error;
    throw error;
  }
  throw new Error('expected a TriggersError, the call succeeded');
}

function expectCode(error: TriggersError, status: number, code: string): void {
  assert.is(error.code, code, `${error.status} ${error.code}: ${error.message}`);
  assert.is(error.status, status);
  assert.type(error.message, 'string');
}

/**
 * A TCP proxy in front of the server. `dropNextAnswer()`: the next HTTP answer that comes back is
 * not passed on, the client's connection is cut instead (the server did the work; the client never
 * learns). `hang`: answers are swallowed and the connection stays open.
 */
class LossyProxy {
  dropping = false;
  hang = false;
  /** Answers dropped so far. */
  dropped = 0;
  private readonly sockets = new Set<net.Socket>();
  private constructor(private readonly server: net.Server, readonly port: number) {}

  static async start(targetPort: number): Promise<LossyProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const proxy = new LossyProxy(server, (server.address() as net.AddressInfo).port);
    server.on('connection', (client) => proxy.link(client, targetPort));
    proxies.push(proxy);
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  dropNextAnswer(): void {
    this.dropping = true;
  }

  private link(client: net.Socket, targetPort: number): void {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (this.hang) return;
      if (this.dropping) {
        this.dropping = false;
        this.dropped++;
        client.destroy();
        return;
      }
      client.write(chunk);
    });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

client('keys: generate (admin token), show, rotate (the client switches keys); typed 401s', async ({ server }) => {
  const admin = connect(server);
  const created = await admin.generateKey('client keys org', { tier: 'pro' });
  assert.match(created.api_key, /^zap_live_/);
  assert.is(created.tier, 'pro');
  assert.is(created.rate_limit_per_minute, 1000);
  expectCode(await rejects(() => connect(server, { adminToken: undefined }).generateKey('no admin')), 401, 'admin_token_required');
  const invalid = await rejects(() => admin.generateKey('bad tier', { tier: 'gold' as 'pro' }));
  expectCode(invalid, 400, 'validation_error');
  assert.is(invalid.field, 'tier');

  const org = connect(server, { apiKey: created.api_key });
  const info = await org.getKey();
  assert.is(info.organization_id, created.organization_id);
  assert.is(info.webhook_url, null);
  const rotated = await org.rotateKey();
  assert.is(org.apiKey, rotated.api_key);
  assert.is.not(rotated.api_key, created.api_key);
  assert.is((await org.getKey()).organization_id, created.organization_id);
  expectCode(await rejects(() => connect(server, { apiKey: created.api_key }).getKey()), 401, 'invalid_api_key');
  expectCode(await rejects(() => connect(server).getKey()), 401, 'missing_api_key');
});

client('send: generated dedup_id, getEvent; a repeated caller dedup_id is a typed 409 with the original id; typed 400s', async ({ server }) => {
  const org = await orgClient(server, 'enterprise');
  const sent = await org.send({ type: 'client.send', payload: { n: 1 } });
  assert.match(sent.id, UUID_V7);
  assert.is(sent.duplicate, false);
  assert.match(sent.dedup_id, /^auto_/);
  assert.type(sent.received_at, 'string');
  const stored = await org.getEvent(sent.id);
  assert.is(stored.type, 'client.send');
  assert.equal(stored.payload, { n: 1 });
  assert.is(stored.dedup_id, sent.dedup_id);

  const first = await org.send({ type: 'client.send', payload: {} }, { dedupId: 'order-7' });
  assert.is(first.dedup_id, 'order-7');
  const again = await rejects(() => org.send({ type: 'client.send', payload: {}, dedup_id: 'order-7' }));
  expectCode(again, 409, 'duplicate_event');
  assert.is(again.body.id, first.id);
  assert.is(again.attempts, 1);

  const invalid = await rejects(() => org.send({ type: '', payload: {} }));
  expectCode(invalid, 400, 'validation_error');
  assert.is(invalid.field, 'type');
  expectCode(await rejects(() => org.getEvent('nope')), 400, 'invalid_id');
  expectCode(await rejects(() => org.getEvent(UNKNOWN_ID)), 404, 'not_found');
});

client('sendBatch of 2,500 is sent in chunks of 1,000 and merged in order; inbox pages; ackMany in chunks; ack', async ({ server }) => {
  const org = await orgClient(server, 'enterprise');
  const events: EventInput[] = Array.from({ length: 2500 }, (_, n) => ({ type: 'client.batch', payload: { n } }));
  events[1500] = { type: '', payload: { n: 1500 } };
  events[10]!.dedup_id = 'batch-dup';
  events[1010]!.dedup_id = 'batch-dup';
  const batch = await org.sendBatch(events);
  assert.is(batch.results.length, 2500);
  batch.results.forEach((result, index) => assert.is(result.index, index));
  assert.is(batch.accepted, 2498);
  assert.is(batch.rejected, 2);
  const rejected = batch.results[1500]!;
  assert.ok('code' in rejected && rejected.code === 'validation_error' && rejected.field === 'type', JSON.stringify(rejected));
  // A repeated caller dedup_id in a later chunk is a real duplicate: rejected with the first one's id.
  const duplicate = batch.results[1010]!;
  const original = batch.results[10]!;
  assert.ok('code' in duplicate && duplicate.code === 'duplicate_event', JSON.stringify(duplicate));
  assert.ok('status' in original);
  assert.is(duplicate.id, original.id);
  const accepted = batch.results.flatMap((result) => ('status' in result ? [result.id] : []));
  assert.is(new Set(accepted).size, 2498);

  const pages = [];
  for await (const page of org.inboxPages({ type: 'client.batch', limit: MAX_BATCH })) pages.push(page);
  assert.equal(pages.map((page) => page.events.length), [1000, 1000, 498]);
  assert.is(pages[2]!.next_cursor, null);
  const listed: string[] = [];
  for await (const event of org.inbox({ type: 'client.batch', limit: 700 })) listed.push(event.id);
  assert.equal(listed, [...accepted].sort(), 'every accepted event once, oldest first');
  const newestFirst = await org.inboxPage({ type: 'client.batch', limit: 1, order: 'desc' });
  assert.is(newestFirst.events[0]!.id, listed[listed.length - 1]);

  const acked = await org.ackMany([...accepted, UNKNOWN_ID]);
  assert.is(acked.acknowledged.length, 2498);
  assert.equal(acked.not_found, [UNKNOWN_ID]);
  assert.is((await org.inboxPage({ type: 'client.batch' })).events.length, 0);
  const single = await org.ack(accepted[0]!);
  assert.is(single.status, 'acknowledged');
  assert.is((await org.ack(accepted[0]!)).acknowledged_at, single.acknowledged_at);
  expectCode(await rejects(() => org.ack(UNKNOWN_ID)), 404, 'not_found');
  expectCode(await rejects(() => org.ack('nope')), 400, 'invalid_id');
  expectCode(await rejects(() => org.inboxPage({ cursor: 'garbage' })), 400, 'invalid_cursor');
  assert.is((await org.ackMany([])).acknowledged.length, 0);
  assert.is((await org.sendBatch([])).results.length, 0);
});

client('webhooks: set/get/rotate/redeliver/delete; verifyWebhook on real deliveries and its typed refusals', async ({ server }) => {
  const org = await orgClient(server, 'enterprise');
  const receiver = await Receiver.start(always({ status: 200 }));
  receivers.push(receiver);
  expectCode(await rejects(() => org.getWebhook()), 404, 'not_found');
  const blocked = await rejects(() => org.setWebhook('ftp://example.com/'));
  expectCode(blocked, 400, 'invalid_webhook_url');
  const config = await org.setWebhook(receiver.url);
  assert.is(config.webhook_url, receiver.url);
  assert.match(config.secret!, /^whsec_/);
  assert.is((await org.getWebhook()).secret, config.secret);
  assert.is((await org.getKey()).webhook_url, receiver.url);

  const sent = await org.send({ type: 'client.hook', payload: { hello: 'world' } });
  const delivery = await receiver.nth(sent.id, 1);
  const verified = verifyWebhook(config.secret!, delivery.raw, delivery.headers);
  assert.equal({ id: verified.id, type: verified.type, data: verified.data }, { id: sent.id, type: 'client.hook', data: { hello: 'world' } });
  // A string body, fetch Headers and Uint8Array bodies are all accepted.
  verifyWebhook(config.secret!, delivery.raw.toString('utf8'), new Headers(delivery.headers));
  verifyWebhook(config.secret!, new Uint8Array(delivery.raw), delivery.headers);

  const refused = (body: string | Uint8Array, headers: Record<string, string>, secret = config.secret!) => {
    try {
      verifyWebhook(secret, body, headers);
    } catch (error) {
      if (error instanceof WebhookVerificationError) return error.code;
      throw error;
    }
    return 'accepted';
  };
  // Re-serialising the parsed body (what a JSON body parser does) changes the bytes: refused.
  const reserialised = JSON.stringify(JSON.parse(delivery.raw.toString('utf8')), null, 1);
  assert.is(refused(reserialised, delivery.headers), 'invalid_signature');
  assert.is(refused(delivery.raw, delivery.headers, 'whsec_' + Buffer.alloc(24, 7).toString('base64')), 'invalid_signature');
  const { 'webhook-signature': _signature, ...unsigned } = delivery.headers;
  assert.is(refused(delivery.raw, unsigned), 'missing_headers');
  const old = new Date(Date.now() - 10 * 60_000);
  const stale = { ...delivery.headers, 'webhook-timestamp': String(Math.floor(old.getTime() / 1000)), 'webhook-signature': new Webhook(config.secret!).sign(sent.id, old, delivery.raw) };
  assert.is(refused(delivery.raw, stale), 'invalid_timestamp');
  assert.throws(() => verifyWebhook(config.secret!, JSON.parse(delivery.raw.toString('utf8')), delivery.headers), /raw request body/);

  // After a rotation deliveries verify with the new secret and, for 24 h, with the old one too.
  const { secret } = await org.rotateWebhookSecret();
  assert.is.not(secret, config.secret);
  const next = await org.send({ type: 'client.hook', payload: { n: 2 } });
  const second = await receiver.nth(next.id, 1);
  assert.is(verifyWebhook(secret, second.raw, second.headers).id, next.id);
  assert.is(verifyWebhook(config.secret!, second.raw, second.headers).id, next.id);

  await waitFor('first event delivered', async () => (await org.getEvent(sent.id)).status === 'delivered');
  assert.equal(await org.redeliver(sent.id), { id: sent.id, status: 'scheduled' });
  await receiver.nth(sent.id, 2);
  await org.deleteWebhook();
  expectCode(await rejects(() => org.getWebhook()), 404, 'not_found');
  expectCode(await rejects(() => org.redeliver(sent.id)), 409, 'no_webhook_endpoint');
});

client('a real 429: send waits the Retry-After and succeeds; without retries, or when Retry-After is too long, a typed error', async ({ server }) => {
  const retries: RetryInfo[] = [];
  const org = await orgClient(server, 'free', { onRetry: (info) => retries.push(info) });
  // Spend the minute's 100 tokens in one batch request.
  assert.is((await org.sendBatch(Array.from({ length: 100 }, (_, n) => ({ type: 'client.rate', payload: { n } })))).accepted, 100);

  const impatient = connect(server, { apiKey: org.apiKey, retries: 0 });
  const limited = await rejects(() => impatient.send({ type: 'client.rate', payload: {} }));
  expectCode(limited, 429, 'rate_limited');
  assert.ok(limited.retryAfter !== undefined && limited.retryAfter >= 1, `retryAfter ${limited.retryAfter}`);
  assert.is(limited.body.limit, 100);
  assert.is(limited.attempts, 1);

  // The server asks for ≥ 1 s; a client that may wait at most 200 ms gives up at once.
  const hasty = connect(server, { apiKey: org.apiKey, retries: 5, maxRetryDelay: 200 });
  const started = Date.now();
  expectCode(await rejects(() => hasty.send({ type: 'client.rate', payload: {} })), 429, 'rate_limited');
  assert.ok(Date.now() - started < 1000, `gave up after ${Date.now() - started} ms`);

  const before = Date.now();
  const sent = await org.send({ type: 'client.rate', payload: { late: true } });
  const waited = Date.now() - before;
  assert.match(sent.id, UUID_V7);
  assert.ok(retries.length >= 1, 'no retry happened');
  const [first] = retries;
  assert.is(first!.status, 429);
  assert.is(first!.code, 'rate_limited');
  assert.ok(first!.retryAfter! >= 1, `retryAfter ${first!.retryAfter}`);
  assert.ok(first!.delayMs >= first!.retryAfter! * 1000 && first!.delayMs <= first!.retryAfter! * 1200, `delay ${first!.delayMs} for Retry-After ${first!.retryAfter}`);
  assert.ok(waited >= first!.delayMs, `call took ${waited} ms, less than the ${first!.delayMs} ms wait`);
});

client('sendBatch past the quota: rate_limited events are sent again after retry_after until accepted', async ({ server }) => {
  const retries: RetryInfo[] = [];
  const org = await orgClient(server, 'free', { retries: 5, onRetry: (info) => retries.push(info) });
  const batch = await org.sendBatch(Array.from({ length: 102 }, (_, n) => ({ type: 'client.rate.batch', payload: { n } })));
  assert.is(batch.accepted, 102, JSON.stringify(batch.results.filter((result) => !('status' in result))));
  assert.ok(retries.length >= 1 && retries.every((info) => info.code === 'rate_limited' && info.delayMs >= 1000), JSON.stringify(retries));
  const listed: number[] = [];
  for await (const event of org.inbox({ type: 'client.rate.batch', limit: 1000 })) listed.push(event.payload.n as number);
  assert.equal(listed.sort((a, b) => a - b), Array.from({ length: 102 }, (_, n) => n), 'each event stored once');
});

client('a lost answer: the retry reuses the dedup_id, the 409 is recovered as the original id, the event is stored once', async ({ server }) => {
  const proxy = await LossyProxy.start(server.port);
  const retries: RetryInfo[] = [];
  const direct = await orgClient(server, 'enterprise');
  const org = connect(server, { apiKey: direct.apiKey, baseUrl: proxy.url, retryBaseDelay: 10, onRetry: (info) => retries.push(info) });

  proxy.dropNextAnswer();
  const sent = await org.send({ type: 'client.lost', payload: { n: 1 } });
  assert.is(proxy.dropped, 1);
  assert.is(retries.length, 1);
  assert.is(retries[0]!.code, 'network_error');
  assert.is(sent.duplicate, true, 'the retry was answered 409 and recovered');
  assert.is(sent.received_at, null);

  // The caller's own dedup_id after an answer-less attempt: also recovered.
  proxy.dropNextAnswer();
  const own = await org.send({ type: 'client.lost', payload: { n: 2 } }, { dedupId: 'lost-2' });
  assert.is(own.duplicate, true);
  assert.is(own.dedup_id, 'lost-2');

  // A batch whose answer is lost: every event comes back as accepted under its original id.
  proxy.dropNextAnswer();
  const batch = await org.sendBatch([3, 4, 5].map((n) => ({ type: 'client.lost', payload: { n } })));
  assert.is(batch.accepted, 3);
  assert.ok(batch.results.every((result) => 'status' in result && result.duplicate), JSON.stringify(batch.results));

  const stored = [];
  for await (const event of direct.inbox({ type: 'client.lost', status: 'all' })) stored.push(event);
  assert.equal(stored.map((event) => event.payload.n), [1, 2, 3, 4, 5], 'each event stored exactly once');
  assert.is(stored[0]!.id, sent.id);
  assert.is(stored[0]!.dedup_id, sent.dedup_id);
  assert.is(stored[1]!.id, own.id);
  assert.equal(stored.slice(2).map((event) => event.id), batch.results.map((result) => ('id' in result ? result.id : '')));

  // A call that is not safe to repeat is not repeated: the caller learns the outcome is unknown.
  proxy.dropNextAnswer();
  const lost = await rejects(() => org.rotateWebhookSecret());
  expectCode(lost, 0, 'network_error');
  assert.is(lost.attempts, 1);
  assert.ok(lost.isNetworkError);

  // No answer at all within the timeout.
  proxy.hang = true;
  const slow = connect(server, { apiKey: direct.apiKey, baseUrl: proxy.url, timeout: 300, retries: 1, retryBaseDelay: 10 });
  const timedOut = await rejects(() => slow.getKey());
  expectCode(timedOut, 0, 'timeout');
  assert.is(timedOut.attempts, 2);
});

client('nothing listening: network_error after the retry budget', async ({ server }) => {
  const closed = await LossyProxy.start(server.port);
  const url = closed.url;
  await closed.close();
  const attempts: RetryInfo[] = [];
  const org = new TriggersClient({ baseUrl: url, apiKey: 'zap_live_x', retries: 2, retryBaseDelay: 10, onRetry: (info) => attempts.push(info) });
  const error = await rejects(() => org.inboxPage());
  expectCode(error, 0, 'network_error');
  assert.is(error.attempts, 3);
  assert.equal(attempts.map((info) => info.attempt), [1, 2]);
});

client.run();
