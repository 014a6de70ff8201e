// Worker thread of `npm run bench:delivery`: the webhook receiver. One minimal node:http server
// per org on 127.0.0.1 (so each org's endpoint is its own origin, as with real customers), all on
// this thread's event loop, apart from the bench's main loop. Every request is answered 200 with an
// empty body as soon as its body has arrived; then it is checked (after the answer, so the checks
// add nothing to what the server waits for):
//   - the webhook-signature header holds exactly one `v1,` entry, and it is the HMAC-SHA256 of
//     `{webhook-id}.{webhook-timestamp}.{body}` under the org's secret (Standard Webhooks, computed
//     here with node:crypto, not with the server's code);
//   - webhook-timestamp is within 5 minutes of now.
// Arrival is stamped with benchClock() (process.hrtime) when the request head is parsed: the same
// monotonic clock as the main thread's stamps, since both threads are in one process.
// Started through src/thread-bootstrap.mjs (tsx).
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { benchClock } from './lib.ts';

export interface ReceiverInit {
  /** One server (port) per org. */
  orgs: number;
  /** Int32 slots (see COUNTS), updated with Atomics so the main thread can poll without messages. */
  counts: SharedArrayBuffer;
}

/** Slots of ReceiverInit.counts. */
export const COUNTS = { UNIQUE: 0, REQUESTS: 1, BAD_SIGNATURES: 2 } as const;
export const COUNT_SLOTS = 3;

export type ReceiverCommand =
  | { kind: 'secrets'; secrets: string[] }
  /** Forget everything received so far (after a warm-up). */
  | { kind: 'reset' }
  | { kind: 'collect' }
  | { kind: 'close' };

export interface Collected {
  kind: 'collected';
  /** Each webhook-id once, in order of its first arrival, with that arrival (benchClock ms) and the org it came to. */
  ids: string[];
  at: number[];
  org: number[];
  requests: number;
  /** Requests whose webhook-id had arrived before (at-least-once redeliveries). */
  duplicates: number;
  /** Signature checks over all requests. */
  oneV1Entry: number;
  otherEntryCounts: Record<string, number>;
  signatureOk: number;
  signatureBad: number;
  timestampStale: number;
  missingHeaders: number;
  notPost: number;
}

export type ReceiverMessage = { kind: 'ready'; ports: number[] } | { kind: 'reset' } | Collected | { kind: 'closed' };

// The exports above are shared with the bench's main thread, which imports this module for them;
// the receiver itself runs only in its worker thread.
if (!isMainThread) await runReceiver();

async function runReceiver(): Promise<void> {
  const init = workerData as ReceiverInit;
  const counts = new Int32Array(init.counts);
  let keys: Buffer[] = [];

  const fresh = (): Collected => ({
    kind: 'collected', ids: [], at: [], org: [], requests: 0, duplicates: 0, oneV1Entry: 0, otherEntryCounts: {},
    signatureOk: 0, signatureBad: 0, timestampStale: 0, missingHeaders: 0, notPost: 0,
  });
  let state = fresh();
  let seen = new Set<string>();

  function check(org: number, headers: http.IncomingHttpHeaders, body: string): void {
    const id = headers['webhook-id'];
    const timestamp = headers['webhook-timestamp'];
    const signature = headers['webhook-signature'];
    if (typeof id !== 'string' || typeof timestamp !== 'string' || typeof signature !== 'string') {
      state.missingHeaders++;
      return;
    }
    const entries = signature.split(' ').filter(Boolean);
    const v1 = entries.filter((entry) => entry.startsWith('v1,'));
    if (v1.length === 1 && entries.length === 1) state.oneV1Entry++;
    else state.otherEntryCounts[`${v1.length} v1 of ${entries.length}`] = (state.otherEntryCounts[`${v1.length} v1 of ${entries.length}`] ?? 0) + 1;
    const key = keys[org];
    const expected = key === undefined ? null : `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
    if (expected !== null && v1.includes(expected)) {
      state.signatureOk++;
    } else {
      state.signatureBad++;
      Atomics.add(counts, COUNTS.BAD_SIGNATURES, 1);
    }
    if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) state.timestampStale++;
  }

  function handler(org: number) {
    return (request: http.IncomingMessage, response: http.ServerResponse) => {
      const at = benchClock();
      state.requests++;
      Atomics.add(counts, COUNTS.REQUESTS, 1);
      if (request.method !== 'POST') state.notPost++;
      const id = request.headers['webhook-id'];
      if (typeof id === 'string') {
        if (seen.has(id)) {
          state.duplicates++;
        } else {
          seen.add(id);
          state.ids.push(id);
          state.at.push(at);
          state.org.push(org);
          Atomics.add(counts, COUNTS.UNIQUE, 1);
        }
      }
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        response.writeHead(200, { 'content-length': '0' });
        response.end();
        check(org, request.headers, Buffer.concat(chunks).toString('utf8'));
      });
    };
  }

  const servers: http.Server[] = [];
  for (let org = 0; org < init.orgs; org++) {
    const server = http.createServer({ keepAliveTimeout: 60_000 }, handler(org));
    server.headersTimeout = 0;
    server.requestTimeout = 0;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    servers.push(server);
  }

  parentPort!.on('message', async (command: ReceiverCommand) => {
    switch (command.kind) {
      case 'secrets':
        keys = command.secrets.map((secret) => Buffer.from(secret.replace(/^whsec_/, ''), 'base64'));
        return;
      case 'reset':
        state = fresh();
        seen = new Set();
        Atomics.store(counts, COUNTS.UNIQUE, 0);
        Atomics.store(counts, COUNTS.REQUESTS, 0);
        parentPort!.postMessage({ kind: 'reset' } satisfies ReceiverMessage);
        return;
      case 'collect':
        parentPort!.postMessage(state satisfies ReceiverMessage);
        return;
      case 'close':
        await Promise.all(servers.map((server) => {
          server.closeAllConnections();
          return new Promise<void>((resolve) => server.close(() => resolve()));
        }));
        parentPort!.postMessage({ kind: 'closed' } satisfies ReceiverMessage);
        return;
    }
  });
  parentPort!.postMessage({ kind: 'ready', ports: servers.map((server) => (server.address() as AddressInfo).port) } satisfies ReceiverMessage);
}
