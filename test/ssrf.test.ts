// SSRF guard for webhook URLs: checkWebhookUrl at configuration time, guardedLookup at connect
// time. No server and no internet: name resolution is faked, except `localhost` (from /etc/hosts).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LookupAddress } from 'node:dns';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, request } from 'undici';
import { ApiError } from '../src/errors.ts';
import { BlockedAddressError, checkWebhookUrl, guardedLookup, isBlockedAddress, type Resolver } from '../src/delivery/ssrf.ts';
import { BLOCKED_URLS } from './helpers/blocked-urls.ts';

// IP literals and localhost must be judged without DNS.
const noDns: Resolver = async (host) => {
  throw new Error(`unexpected DNS lookup of ${host}`);
};

const fakeDns = (answers: Record<string, string[]>): Resolver => async (host) => {
  const found = answers[host];
  if (!found) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return found;
};

async function rejectsWith(promise: Promise<unknown>, code: string, status = 400): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    assert.instance(error, ApiError);
    const apiError = error as ApiError;
    assert.is(apiError.code, code, apiError.message);
    assert.is(apiError.status, status);
    return apiError;
  }
  throw new assert.Assertion({ message: `expected ${code}, but it was accepted`, operator: 'rejects', generated: false, expects: code, actual: 'accepted' });
}

const urls = suite('ssrf: checkWebhookUrl');

urls('every blocked address class → blocked_webhook_url, without DNS', async () => {
  for (const raw of BLOCKED_URLS) {
    const error = await rejectsWith(checkWebhookUrl(raw, false, noDns), 'blocked_webhook_url');
    assert.equal(error.fields, { field: 'webhook_url' }, raw);
  }
});

urls('the same URLs are accepted with allowPrivate', async () => {
  for (const raw of BLOCKED_URLS) {
    const url = await checkWebhookUrl(raw, true, noDns);
    assert.instance(url, URL);
  }
});

urls('localhost is blocked with the real resolver too', async () => {
  await rejectsWith(checkWebhookUrl('http://localhost:3000/hook', false), 'blocked_webhook_url');
});

urls('a name resolving to loopback is blocked', async () => {
  const resolve = fakeDns({ 'evil.example': ['127.0.0.1'] });
  const error = await rejectsWith(checkWebhookUrl('https://evil.example/hook', false, resolve), 'blocked_webhook_url');
  assert.match(error.message, '127.0.0.1');
});

urls('a name with one private answer among public ones is blocked', async () => {
  const resolve = fakeDns({ 'mixed.example': ['93.184.216.34', '10.0.0.1'] });
  await rejectsWith(checkWebhookUrl('https://mixed.example/hook', false, resolve), 'blocked_webhook_url');
  assert.instance(await checkWebhookUrl('https://mixed.example/hook', true, resolve), URL);
});

urls('a name resolving to mapped or NAT64 IPv6 forms of private addresses is blocked', async () => {
  const resolve = fakeDns({ 'v6.example': ['2606:4700::1111', '::ffff:10.1.2.3'], 'nat64.example': ['64:ff9b::a9fe:a9fe'] });
  await rejectsWith(checkWebhookUrl('https://v6.example/', false, resolve), 'blocked_webhook_url');
  await rejectsWith(checkWebhookUrl('https://nat64.example/', false, resolve), 'blocked_webhook_url');
});

urls('a name resolving only to public addresses is accepted', async () => {
  const resolve = fakeDns({ 'hooks.example.com': ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'] });
  const url = await checkWebhookUrl('https://hooks.example.com/in?x=1', false, resolve);
  assert.is(url.href, 'https://hooks.example.com/in?x=1');
});

urls('a name that does not resolve → invalid_webhook_url', async () => {
  const error = await rejectsWith(checkWebhookUrl('https://nowhere.invalid/', false, fakeDns({})), 'invalid_webhook_url');
  assert.match(error.message, 'does not resolve');
  await rejectsWith(checkWebhookUrl('https://empty.example/', false, async () => []), 'invalid_webhook_url');
});

urls('public IP literals are accepted', async () => {
  assert.is((await checkWebhookUrl('http://93.184.216.34/hook', false, noDns)).hostname, '93.184.216.34');
  assert.is((await checkWebhookUrl('https://[2606:4700::1111]/', false, noDns)).hostname, '[2606:4700::1111]');
  assert.is((await checkWebhookUrl('https://8.8.8.8:8443/x', false, noDns)).port, '8443');
});

urls('syntax errors → invalid_webhook_url, even with allowPrivate', async () => {
  const long = `https://93.184.216.34/${'a'.repeat(2049 - 'https://93.184.216.34/'.length)}`;
  assert.is(long.length, 2049);
  for (const raw of ['ftp://93.184.216.34/', 'not a url', '', '/relative/path', 'javascript:alert(1)', 'file:///etc/passwd',
    'http://user:pass@93.184.216.34/', 'http://user@93.184.216.34/', 'http://a b/', long]) {
    for (const allowPrivate of [false, true]) {
      await rejectsWith(checkWebhookUrl(raw, allowPrivate, noDns), 'invalid_webhook_url');
    }
  }
  const limit = `https://93.184.216.34/${'a'.repeat(2048 - 'https://93.184.216.34/'.length)}`;
  assert.is((await checkWebhookUrl(limit, false, noDns)).href.length, 2048);
});

urls('a non-string → validation_error on webhook_url', async () => {
  for (const raw of [undefined, null, 42, {}, ['http://93.184.216.34/']]) {
    const error = await rejectsWith(checkWebhookUrl(raw, false, noDns), 'validation_error');
    assert.equal(error.fields, { field: 'webhook_url' });
  }
});

urls('isBlockedAddress: public unicast only', () => {
  for (const address of ['127.0.0.1', '::1', '::', '10.1.1.1', 'fd00:ec2::254', '169.254.169.254', '::ffff:192.168.0.1', 'fe80::1%eth0',
    '64:ff9b::7f00:1', '2002:a00:1::', '2001:0:4136:e378::1', '2001:db8::1', '::7f00:1', 'not an ip', '']) {
    assert.ok(isBlockedAddress(address), address);
  }
  for (const address of ['93.184.216.34', '8.8.8.8', '1.1.1.1', '2606:4700::1111', '::ffff:8.8.8.8']) {
    assert.not.ok(isBlockedAddress(address), address);
  }
});

urls.run();

type LookupResult = { err: NodeJS.ErrnoException | null; address: string | LookupAddress[]; family?: number | undefined };

function lookup(allowPrivate: boolean, hostname: string, all: boolean): Promise<LookupResult> {
  return new Promise((resolve) => {
    guardedLookup(allowPrivate)(hostname, { all }, (err, address, family) => resolve({ err, address, family }));
  });
}

const connect = suite<{ server: http.Server; port: number }>('ssrf: guardedLookup');

connect.before(async (ctx) => {
  ctx.server = http.createServer((_req, res) => res.end('ok'));
  // No host: listens on every local address, so 127.0.0.1 and ::1 both reach it.
  await new Promise<void>((resolve) => ctx.server.listen(0, resolve));
  ctx.port = (ctx.server.address() as AddressInfo).port;
});

connect.after(async (ctx) => {
  await new Promise((resolve) => ctx.server.close(resolve));
});

connect('localhost is refused with BlockedAddressError, in both callback forms', async () => {
  for (const all of [false, true]) {
    const { err } = await lookup(false, 'localhost', all);
    assert.instance(err, BlockedAddressError);
    assert.ok(isBlockedAddress((err as BlockedAddressError).address));
  }
});

connect('allowPrivate resolves localhost to a loopback address', async () => {
  const single = await lookup(true, 'localhost', false);
  assert.is(single.err, null);
  assert.ok(single.address === '127.0.0.1' || single.address === '::1', String(single.address));
  assert.ok(single.family === 4 || single.family === 6);
  const many = await lookup(true, 'localhost', true);
  assert.is(many.err, null);
  assert.ok(Array.isArray(many.address) && many.address.length > 0);
  for (const entry of many.address as LookupAddress[]) assert.ok(['127.0.0.1', '::1'].includes(entry.address), entry.address);
});

connect('a name that does not resolve reports the DNS error', async () => {
  for (const all of [false, true]) {
    const { err } = await lookup(false, 'no-such-host.invalid', all);
    assert.ok(err);
    assert.not.instance(err, BlockedAddressError);
  }
});

connect('undici with guardedLookup(false) refuses http://localhost', async ({ port }) => {
  const agent = new Agent({ connect: { lookup: guardedLookup(false) } });
  try {
    let failure: unknown;
    try {
      await request(`http://localhost:${port}/`, { dispatcher: agent });
    } catch (error) {
      failure = error;
    }
    assert.ok(failure, 'the request went through');
    // Walk the cause chain: undici may wrap the connect error.
    let cause: unknown = failure;
    while (cause instanceof Error && !(cause instanceof BlockedAddressError)) cause = cause.cause;
    assert.instance(cause, BlockedAddressError, String(failure));
  } finally {
    await agent.close();
  }
});

connect('undici with guardedLookup(true) reaches http://localhost', async ({ port }) => {
  const agent = new Agent({ connect: { lookup: guardedLookup(true) } });
  try {
    const reply = await request(`http://localhost:${port}/`, { dispatcher: agent });
    assert.is(reply.statusCode, 200);
    assert.is(await reply.body.text(), 'ok');
  } finally {
    await agent.close();
  }
});

connect.run();
