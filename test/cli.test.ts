// The `triggers` CLI end to end: each command runs as a child process (`node client/bin/triggers.mjs`)
// against the real server. NDJSON from stdin, inbox --json, ack, tail --ack, webhook set/show/rotate,
// and `listen` receiving and verifying a real delivery; --help, usage errors and API errors map to
// their exit codes.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TriggersClient } from '../client/index.ts';
import { UUID_V7 } from './helpers/ingest.ts';
import { TestServer, useTestDatabase, waitFor, type TestDatabase } from './helpers/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ADMIN_TOKEN = 'cli-test-admin-token-9b7e1f3d';
const UNKNOWN_ID = '01a212e5-76c4-701a-a75e-e9a00a5b5567';

interface Ctx {
  db: TestDatabase;
  server: TestServer;
  key: string;
}

const cli = suite<Ctx>('cli');
const running: Cli[] = [];

useTestDatabase(cli, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url, { ADMIN_TOKEN, WEBHOOK_ALLOW_PRIVATE: 'true' });
  ctx.key = (await ctx.server.createKey('enterprise', 'cli org')).key;
});

cli.after(async () => {
  await Promise.all(running.map((child) => child.stop()));
});

/** A `triggers` process; stdout and stderr are collected as they come. */
class Cli {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(args: string[], env: Record<string, string>, input?: string) {
    // The caller's TRIGGERS_* variables must not leak into the runs.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('TRIGGERS_')));
    this.child = spawn(process.execPath, ['client/bin/triggers.mjs', ...args], { cwd: ROOT, env: { ...inherited, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (chunk: Buffer) => (this.stdout += chunk.toString()));
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    if (input !== undefined) this.child.stdin!.end(input);
  }

  lines(): string[] {
    return this.stdout.split('\n').filter((line) => line !== '');
  }

  /** SIGTERM (what Ctrl-C does for a long-running command) and the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function env({ server, key }: Ctx, extra: Record<string, string> = {}): Record<string, string> {
  return { TRIGGERS_URL: server.url, TRIGGERS_API_KEY: key, ...extra };
}

/** Runs a command to its end. */
async function run(ctx: Ctx, args: string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<Run> {
  const child = new Cli(args, options.env ?? env(ctx), options.input ?? '');
  const code = await child.exited;
  return { code, stdout: child.stdout, stderr: child.stderr };
}

/** A long-running command (tail, listen), stopped after the suite if the test did not. */
function start(ctx: Ctx, args: string[], extraEnv: Record<string, string> = {}): Cli {
  const child = new Cli(args, env(ctx, extraEnv));
  running.push(child);
  return child;
}

function expectExit(result: Run, code: number, what: string): void {
  assert.is(result.code, code, `${what}: exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
}

function json(result: Run): any {
  try {
    return JSON.parse(result.stdout);
  } catch {
    throw new Error(`stdout is not JSON: ${result.stdout}\nstderr: ${result.stderr}`);
  }
}

cli('--help on the program and on commands exits 0 and documents the exit codes; usage errors exit 2', async (ctx) => {
  const [help, commandHelp, badLimit, noKey, badPayload] = await Promise.all([
    run(ctx, ['--help']),
    run(ctx, ['webhook', 'set', '--help']),
    run(ctx, ['inbox', '--limit', '5000']),
    run(ctx, ['inbox'], { env: { TRIGGERS_URL: ctx.server.url } }),
    run(ctx, ['send', 'cli.bad', 'not json']),
  ]);
  for (const [result, what] of [[help, '--help'], [commandHelp, 'webhook set --help']] as const) {
    expectExit(result, 0, what);
    assert.match(result.stdout, /Exit codes:\n\s+0\s+success/);
  }
  for (const command of ['keys', 'send', 'inbox', 'ack', 'tail', 'webhook', 'listen']) assert.match(help.stdout, new RegExp(`\\n\\s+${command}\\b`));
  expectExit(badLimit, 2, '--limit 5000');
  assert.match(badLimit.stderr, /option '--limit <n>' argument '5000' is invalid/);
  expectExit(noKey, 2, 'no key');
  assert.match(noKey.stderr, /no API key/);
  expectExit(badPayload, 2, 'payload not JSON');
  assert.match(badPayload.stderr, /payload is not valid JSON/);
});

cli('keys create needs the admin token; a bad key exits 1 with the API code; an unreachable server exits 3', async (ctx) => {
  const [created, refused, badKey, down] = await Promise.all([
    run(ctx, ['keys', 'create', 'cli made org', '--tier', 'pro'], { env: { TRIGGERS_URL: ctx.server.url, TRIGGERS_ADMIN_TOKEN: ADMIN_TOKEN } }),
    run(ctx, ['keys', 'create', 'cli refused org'], { env: { TRIGGERS_URL: ctx.server.url } }),
    run(ctx, ['inbox', '--key', 'zap_live_not_a_real_key']),
    run(ctx, ['keys', 'show', '--retries', '0', '--url', 'http://127.0.0.1:9']),
  ]);
  expectExit(created, 0, 'keys create');
  const key = json(created);
  assert.match(key.api_key, /^zap_live_/);
  assert.is(key.tier, 'pro');
  const shown = await run(ctx, ['keys', 'show'], { env: env(ctx, { TRIGGERS_API_KEY: key.api_key }) });
  expectExit(shown, 0, 'keys show');
  assert.is(json(shown).organization_id, key.organization_id);

  expectExit(refused, 1, 'keys create without the admin token');
  assert.match(refused.stderr, /admin_token_required/);
  expectExit(badKey, 1, 'bad key');
  assert.match(badKey.stderr, /^triggers: invalid_api_key: .*HTTP 401/m);
  expectExit(down, 3, 'nothing listening');
  assert.match(down.stderr, /network_error/);
});

cli('send: one event prints its id; NDJSON on stdin is sent in batches with a summary by outcome', async (ctx) => {
  const lines = [
    JSON.stringify({ type: 'cli.ndjson', payload: { n: 1 } }),
    JSON.stringify({ type: 'cli.ndjson', payload: { n: 2 }, dedup_id: 'cli-dup' }),
    '',
    JSON.stringify({ type: 'cli.ndjson', payload: { n: 3 }, dedup_id: 'cli-dup' }),
    '{"type": "cli.ndjson", "payload": ',
    JSON.stringify({ payload: { n: 5 } }),
    JSON.stringify({ type: 'cli.ndjson', payload: { n: 6 } }),
  ];
  const [single, mixed, clean] = await Promise.all([
    run(ctx, ['send', 'cli.single', '{"n": 1}', '--dedup-id', 'cli-single']),
    // No "-": stdin is not a terminal, so it is read as NDJSON.
    run(ctx, ['send', '--json'], { input: lines.join('\n') + '\n' }),
    run(ctx, ['send', '-'], { input: [7, 8].map((n) => JSON.stringify({ type: 'cli.ndjson.clean', payload: { n } })).join('\n') }),
  ]);
  expectExit(single, 0, 'send one');
  const id = single.stdout.trim();
  assert.match(id, UUID_V7);
  expectExit(mixed, 1, 'NDJSON with rejected lines');
  assert.equal(json(mixed), { accepted: 3, duplicates: 1, rejected: 2, rejected_by_code: { invalid_json: 1, validation_error: 1 } });
  assert.match(mixed.stderr, /line 5: invalid_json/);
  assert.match(mixed.stderr, /line 6: validation_error/);
  expectExit(clean, 0, 'NDJSON, all valid');
  assert.is(clean.stdout.trim(), 'accepted 2, duplicates 0, rejected 0');

  const [got, inbox, again] = await Promise.all([
    run(ctx, ['get', id]),
    run(ctx, ['inbox', '--type', 'cli.ndjson', '--json']),
    run(ctx, ['send', 'cli.single', '{"n": 2}', '--dedup-id', 'cli-single']),
  ]);
  expectExit(got, 0, 'get');
  assert.equal(json(got).payload, { n: 1 });
  assert.is(json(got).dedup_id, 'cli-single');
  expectExit(again, 1, 'a repeated --dedup-id');
  assert.match(again.stderr, new RegExp(`^triggers: duplicate_event: .*HTTP 409, original event ${id}`, 'm'));
  expectExit(inbox, 0, 'inbox --json');
  const page = json(inbox);
  assert.equal(page.events.map((event: any) => event.payload.n), [1, 2, 6]);
  assert.is(page.next_cursor, null);
});

cli('inbox (table, --json, paging) and ack: acknowledged events leave the default inbox; an unknown id exits 1', async (ctx) => {
  const client = new TriggersClient({ baseUrl: ctx.server.url, apiKey: ctx.key });
  const { results } = await client.sendBatch([1, 2, 3].map((n) => ({ type: 'cli.ack', payload: { n } })));
  const ids = results.map((result) => ('id' in result ? result.id! : ''));

  const [table, firstPage] = await Promise.all([
    run(ctx, ['inbox', '--type', 'cli.ack']),
    run(ctx, ['inbox', '--type', 'cli.ack', '--limit', '2', '--json']),
  ]);
  expectExit(table, 0, 'inbox table');
  for (const id of ids) assert.ok(table.stdout.includes(id), `table lacks ${id}:\n${table.stdout}`);
  assert.match(table.stdout, /│ id\s+│ type\s+│ status/);
  expectExit(firstPage, 0, 'inbox --limit 2');
  const page = json(firstPage);
  assert.equal(page.events.map((event: any) => event.id), ids.slice(0, 2));
  // The rest of the listing (after the cursor) is not touched by acking the first two.
  const [rest, acked] = await Promise.all([
    run(ctx, ['inbox', '--cursor', page.next_cursor, '--limit', '2', '--json']),
    run(ctx, ['ack', ids[0]!, ids[1]!]),
  ]);
  assert.equal(json(rest).events.map((event: any) => event.id), ids.slice(2));
  expectExit(acked, 0, 'ack');
  assert.equal(acked.stdout.trim().split('\n'), [`acknowledged ${ids[0]}`, `acknowledged ${ids[1]}`]);

  // Acking again is idempotent; an unknown id makes it exit 1.
  const [after, all, missing] = await Promise.all([
    run(ctx, ['inbox', '--type', 'cli.ack', '--all', '--json']),
    run(ctx, ['inbox', '--type', 'cli.ack', '--status', 'acknowledged', '--json']),
    run(ctx, ['ack', ids[0]!, UNKNOWN_ID]),
  ]);
  assert.equal(json(after).events.map((event: any) => event.id), [ids[2]]);
  assert.equal(json(all).events.map((event: any) => event.status), ['acknowledged', 'acknowledged']);
  expectExit(missing, 1, 'ack with an unknown id');
  assert.is(missing.stdout.trim(), `acknowledged ${ids[0]}`);
  assert.match(missing.stderr, new RegExp(`not_found: no such event ${UNKNOWN_ID}`));
});

cli('tail --ack --json prints events as they arrive and acknowledges them; SIGTERM exits 0', async (ctx) => {
  const client = new TriggersClient({ baseUrl: ctx.server.url, apiKey: ctx.key });
  const early = await client.send({ type: 'cli.tail', payload: { n: 1 } });
  const tail = start(ctx, ['tail', '--type', 'cli.tail', '--ack', '--json', '--interval', '100']);
  await waitFor('tail to print the waiting event', () => tail.lines().length >= 1, 15_000);
  const later = await client.sendBatch([2, 3].map((n) => ({ type: 'cli.tail', payload: { n } })));
  await waitFor('tail to print the new events', () => tail.lines().length >= 3, 15_000);
  const printed = tail.lines().map((line) => JSON.parse(line));
  assert.equal(printed.map((event) => event.id), [early.id, ...later.results.map((result) => ('id' in result ? result.id : ''))]);
  assert.equal(printed.map((event) => event.payload.n), [1, 2, 3]);
  await waitFor('tail to acknowledge them', async () => {
    const events = [];
    for await (const event of client.inbox({ type: 'cli.tail', status: 'acknowledged' })) events.push(event);
    return events.length === 3;
  });
  assert.is(await tail.stop(), 0, tail.stderr);
  assert.is(tail.lines().length, 3, 'each event printed once');
});

cli('listen: receives a real delivery and verifies its signature (also after a secret rotation); a forged one gets 400', async (ctx) => {
  // The endpoint first points nowhere useful: its secret is needed to start the listener.
  const client = new TriggersClient({ baseUrl: ctx.server.url, apiKey: ctx.key });
  const secret = (await client.setWebhook('http://127.0.0.1:9/hook')).secret!;

  const listener = start(ctx, ['listen', '--port', '0', '--json', '--secret', secret]);
  const port = Number(await waitFor('listen to start', () => /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(listener.stderr)?.[1], 15_000));
  const url = `http://127.0.0.1:${port}/hook`;
  const set = await run(ctx, ['webhook', 'set', url]);
  expectExit(set, 0, 'webhook set to the listener');
  assert.is(json(set).secret, secret, 'changing the URL keeps the secret');
  assert.match(secret, /^whsec_/);
  const [shown, sent] = await Promise.all([run(ctx, ['webhook', 'show']), run(ctx, ['send', 'cli.listen', '{"hello": "world"}'])]);
  assert.is(json(shown).webhook_url, url);
  const id = sent.stdout.trim();
  await waitFor('the listener to print the delivery', () => listener.lines().length >= 1, 15_000);
  const printed = JSON.parse(listener.lines()[0]!);
  assert.equal({ id: printed.id, type: printed.type, data: printed.data }, { id, type: 'cli.listen', data: { hello: 'world' } });
  await waitFor('the event to be delivered (the listener answered 2xx)', async () => (await client.getEvent(id)).status === 'delivered');

  // After a rotation deliveries carry both signatures: the listener, still on the old secret, accepts them.
  const rotated = await run(ctx, ['webhook', 'rotate']);
  expectExit(rotated, 0, 'webhook rotate');
  assert.is.not(json(rotated).secret, secret);
  const { id: next } = await client.send({ type: 'cli.listen', payload: { n: 2 } });
  await waitFor('the listener to print the second delivery', () => listener.lines().length >= 2, 15_000);
  assert.is(JSON.parse(listener.lines()[1]!).id, next);

  const forged = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(Math.floor(Date.now() / 1000)), 'webhook-signature': 'v1,AAAA' },
    body: JSON.stringify({ id, type: 'cli.listen', timestamp: new Date().toISOString(), data: { hello: 'mallory' } }),
  });
  assert.is(forged.status, 400);
  assert.is(((await forged.json()) as { code: string }).code, 'invalid_signature');
  await waitFor('the listener to report the forgery', () => listener.stderr.includes(`rejected delivery ${id}: invalid_signature`));
  assert.is(listener.lines().length, 2, 'the forged delivery is not printed');
  assert.is(await listener.stop(), 0, listener.stderr);

  // Without --secret the listener fetches the endpoint's (now rotated) secret with the key.
  const fetching = start(ctx, ['listen', '--port', '0', '--json']);
  const fetchingPort = await waitFor('the second listener to start', () => /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(fetching.stderr)?.[1], 15_000);
  await client.setWebhook(`http://127.0.0.1:${fetchingPort}/hook`);
  const { id: third } = await client.send({ type: 'cli.listen', payload: { n: 3 } });
  await waitFor('the second listener to print the delivery', () => fetching.lines().length >= 1, 15_000);
  assert.is(JSON.parse(fetching.lines()[0]!).id, third);
  assert.is(await fetching.stop(), 0, fetching.stderr);
});

cli.run();
