// Piscina task: POST one signed webhook with undici. Keep-alive pools per origin; the address
// connected to is the one the SSRF guard checked; redirects are not followed; at most a few KB
// of the answer are read.
import { workerData } from 'piscina';
import { Agent, request } from 'undici';
import { isIP } from 'node:net';
import { guardedLookup, isBlockedAddress } from '../src/delivery/ssrf.ts';
import type { DeliveryInit, DeliveryResult, DeliveryTask } from '../src/protocol.ts';

const { allowPrivate, timeoutMs } = workerData as DeliveryInit;
const MAX_ANSWER_BYTES = 4096;
/** Connections per endpoint origin from one worker: a slow endpoint cannot take them all. */
const CONNECTIONS_PER_ORIGIN = 16;

const agent = new Agent({
  connect: { lookup: guardedLookup(allowPrivate), timeout: timeoutMs },
  connections: CONNECTIONS_PER_ORIGIN,
  headersTimeout: timeoutMs,
  bodyTimeout: timeoutMs,
});

function retryAfter(value: string | string[] | undefined): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined) return undefined;
  if (/^\d+$/.test(raw.trim())) return Number(raw.trim());
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

export default async function deliver(task: DeliveryTask): Promise<DeliveryResult> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  // An IP literal is connected to without a lookup, so the guard checks it here.
  const host = new URL(task.url).hostname.replace(/^\[|\]$/g, '');
  if (!allowPrivate && isIP(host) !== 0 && isBlockedAddress(host)) {
    return { error: `blocked address ${host}`, durationMs: 0 };
  }
  try {
    const answer = await request(task.url, {
      method: 'POST',
      headers: task.headers,
      body: task.body,
      dispatcher: agent,
      signal: AbortSignal.timeout(timeoutMs),
    });
    // Leaving the loop early destroys the stream: the rest of a large answer is never read.
    let read = 0;
    for await (const chunk of answer.body) {
      read += (chunk as Buffer).length;
      if (read >= MAX_ANSWER_BYTES) break;
    }
    return { statusCode: answer.statusCode, retryAfterSeconds: retryAfter(answer.headers['retry-after']), durationMs: elapsed() };
  } catch (error) {
    const name = (error as Error).name;
    const message = name === 'TimeoutError' || name === 'AbortError' ? `timed out after ${timeoutMs} ms` : (error as Error).message;
    return { error: message.slice(0, 500), durationMs: elapsed() };
  }
}
