// A client for the Triggers API (shared/API.md). Stands alone: node built-ins, global fetch and
// standardwebhooks only, nothing from the server's src/.
//
// Retries: 429 and 503 are retried on every call (the server did nothing), honouring Retry-After;
// a lost answer (network error, timeout, 502/504) only on calls that are safe to repeat: reads,
// acks, webhook config, and sends, which always carry a dedup_id so a repeated send is not stored twice.
import { randomUUID } from 'node:crypto';
import { TriggersError } from './errors.ts';
import { DEFAULT_RETRY, parseRetryAfter, retryDelay, sleep, type RetryInfo, type RetryOptions } from './retry.ts';
import type {
  AckManyResult, Acked, BatchItemResult, BatchResult, EventInput, InboxEvent, InboxPage, InboxQuery, KeyCreated, KeyInfo,
  KeyRotated, SendResult, StoredEvent, Tier, WebhookConfig,
} from './types.ts';

export * from './errors.ts';
export * from './types.ts';
export { verifyWebhook, type WebhookHeaders } from './verify.ts';
export type { RetryInfo } from './retry.ts';

/** The most events in one batch request and ids in one ack request; longer lists are sent in chunks. */
export const MAX_BATCH = 1000;

export interface TriggersClientOptions {
  /** e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** The organization's key (X-API-Key). Not needed for generateKey. */
  apiKey?: string;
  /** Sent as `Authorization: Bearer` to POST /api/keys/generate when the server has an ADMIN_TOKEN. */
  adminToken?: string;
  /** Retries after the first attempt (default 3). 0 turns retrying off. */
  retries?: number;
  /** Per-attempt timeout in ms (default 30 000). */
  timeout?: number;
  /** First backoff step in ms without a Retry-After (default 250), doubling per retry. */
  retryBaseDelay?: number;
  /** The longest wait in ms (default 60 000); a Retry-After beyond it fails the call at once. */
  maxRetryDelay?: number;
  /** Called before each wait; for logging or metrics. */
  onRetry?: (info: RetryInfo) => void;
}

interface Call {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  body?: unknown;
  /** Which credential goes with the request (default the API key). */
  auth?: 'key' | 'admin';
  /** Safe to send again when an attempt's outcome is unknown. */
  repeatable: boolean;
}

/** What one call has been through so far, across its attempts. */
interface CallState {
  attempts: number;
  /** Some attempt got no answer: it may have been carried out. */
  uncertain: boolean;
}

type RawBatchItem = { index: number; id?: string; status?: 'accepted'; code?: string; error?: string; field?: string; retry_after?: number };

const newState = (): CallState => ({ attempts: 0, uncertain: false });
/** Random, so a 409 on it can only be the echo of this client's own earlier attempt. */
const generatedDedupId = () => `auto_${randomUUID()}`;

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let start = 0; start < items.length; start += size) yield items.slice(start, start + size);
}

function errorFromAnswer(response: Response, text: string, attempts: number): TriggersError {
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    // not JSON (e.g. a proxy's error page): described by the status alone
  }
  const retryAfter = parseRetryAfter(response.headers.get('retry-after')) ?? (typeof body.retry_after === 'number' ? body.retry_after : undefined);
  return new TriggersError({
    status: response.status,
    code: typeof body.code === 'string' ? body.code : `http_${response.status}`,
    message: typeof body.error === 'string' ? body.error : `HTTP ${response.status} ${response.statusText}`.trim(),
    ...(typeof body.field === 'string' ? { field: body.field } : {}),
    ...(retryAfter === undefined ? {} : { retryAfter }),
    body,
    attempts,
  });
}

export class TriggersClient {
  /** The key in use; rotateKey() replaces it. */
  apiKey: string | undefined;
  readonly baseUrl: string;
  private readonly adminToken: string | undefined;
  private readonly timeout: number;
  private readonly retry: RetryOptions;
  private readonly onRetry: ((info: RetryInfo) => void) | undefined;

  constructor(options: TriggersClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.apiKey = options.apiKey;
    this.adminToken = options.adminToken;
    this.timeout = options.timeout ?? 30_000;
    this.retry = {
      retries: options.retries ?? DEFAULT_RETRY.retries,
      baseDelay: options.retryBaseDelay ?? DEFAULT_RETRY.baseDelay,
      maxDelay: options.maxRetryDelay ?? DEFAULT_RETRY.maxDelay,
    };
    this.onRetry = options.onRetry;
  }

  // --- keys ---------------------------------------------------------------------------------

  /** POST /api/keys/generate: a new organization and its key (shown once). */
  generateKey(organizationName: string, options: { tier?: Tier } = {}): Promise<KeyCreated> {
    const body = { organization_name: organizationName, ...(options.tier ? { tier: options.tier } : {}) };
    return this.call({ method: 'POST', path: '/api/keys/generate', body, auth: 'admin', repeatable: false });
  }

  /** GET /api/keys: the organization behind the key. */
  getKey(): Promise<KeyInfo> {
    return this.call({ method: 'GET', path: '/api/keys', repeatable: true });
  }

  /** POST /api/keys/rotate. The old key stops working at once; this client switches to the new one. */
  async rotateKey(): Promise<KeyRotated> {
    const rotated = await this.call<KeyRotated>({ method: 'POST', path: '/api/keys/rotate', repeatable: false });
    this.apiKey = rotated.api_key;
    return rotated;
  }

  // --- events -------------------------------------------------------------------------------

  /**
   * POST /api/events. Without a dedup id (option or `event.dedup_id`) the client generates one, kept
   * across retries. A 409 `duplicate_event` then means an earlier attempt of this call landed but its
   * answer was lost: the call succeeds with the original id and `duplicate: true`. (Same with the
   * caller's own dedup id when an earlier attempt got no answer; otherwise the 409 is thrown.)
   */
  async send(event: EventInput, options: { dedupId?: string } = {}): Promise<SendResult> {
    const given = options.dedupId ?? event.dedup_id;
    const dedupId = given ?? generatedDedupId();
    const state = newState();
    try {
      const accepted = await this.call<{ id: string; received_at: string }>(
        { method: 'POST', path: '/api/events', body: { ...event, dedup_id: dedupId }, repeatable: true }, state);
      return { id: accepted.id, status: 'accepted', received_at: accepted.received_at, dedup_id: dedupId, duplicate: false };
    } catch (error) {
      const ownEcho = given === undefined || state.uncertain;
      if (error instanceof TriggersError && error.code === 'duplicate_event' && typeof error.body.id === 'string' && ownEcho) {
        return { id: error.body.id, status: 'accepted', received_at: null, dedup_id: dedupId, duplicate: true };
      }
      throw error;
    }
  }

  /**
   * POST /api/events/batch, in chunks of 1000; results are merged in the order given (`index` counts
   * across chunks). Events get generated dedup ids as in send(). Events refused as `rate_limited` are
   * sent again after the `retry_after` the server named, within the retry budget; what is still
   * refused after that keeps its `rate_limited` result.
   */
  async sendBatch(events: readonly EventInput[]): Promise<BatchResult> {
    const uses = new Map<string, number>();
    for (const { dedup_id } of events) if (dedup_id !== undefined) uses.set(dedup_id, (uses.get(dedup_id) ?? 0) + 1);
    const results: BatchItemResult[] = [];
    for (const chunk of chunks(events, MAX_BATCH)) results.push(...(await this.sendChunk(chunk, results.length, uses)));
    const accepted = results.filter((result) => 'status' in result).length;
    return { accepted, rejected: results.length - accepted, results };
  }

  /** `uses`: how often each caller dedup id occurs in the whole batch. */
  private async sendChunk(events: readonly EventInput[], offset: number, uses: ReadonlyMap<string, number>): Promise<BatchItemResult[]> {
    const generated = events.map((event) => event.dedup_id === undefined);
    const prepared = events.map((event, i) => ({ ...event, dedup_id: generated[i] ? generatedDedupId() : event.dedup_id! }));

    const results: BatchItemResult[] = new Array(events.length);
    const state = newState();
    let pending = prepared.map((_, i) => i);
    const call: Call = { method: 'POST', path: '/api/events/batch', repeatable: true };
    for (;;) {
      const reply = await this.call<{ results: RawBatchItem[] }>({ ...call, body: { events: pending.map((i) => prepared[i]) } }, state);
      const limited: number[] = [];
      let retryAfter = 1;
      reply.results.forEach((item, k) => {
        const i = pending[k]!;
        const dedupId = prepared[i]!.dedup_id;
        // A duplicate of a dedup id only this call used is the echo of its own earlier attempt.
        const ownEcho = item.code === 'duplicate_event' && item.id !== undefined && (generated[i] || (state.uncertain && uses.get(dedupId) === 1));
        if (item.status === 'accepted' || ownEcho) {
          results[i] = { index: offset + i, id: item.id!, status: 'accepted', dedup_id: dedupId, duplicate: ownEcho };
          return;
        }
        results[i] = { ...item, index: offset + i } as BatchItemResult;
        if (item.code === 'rate_limited') {
          limited.push(i);
          retryAfter = Math.max(retryAfter, item.retry_after ?? 1);
        }
      });
      if (limited.length === 0 || !(await this.backoff(call, state, 429, 'rate_limited', retryAfter))) return results;
      pending = limited;
    }
  }

  /** GET /api/events/:id, with its delivery attempts. */
  getEvent(id: string): Promise<StoredEvent> {
    return this.call({ method: 'GET', path: `/api/events/${encodeURIComponent(id)}`, repeatable: true });
  }

  /** POST /api/events/:id/redeliver: a fresh round of deliveries (409 `no_webhook_endpoint`, `event_acknowledged`). */
  redeliver(id: string): Promise<{ id: string; status: string }> {
    return this.call({ method: 'POST', path: `/api/events/${encodeURIComponent(id)}/redeliver`, repeatable: true });
  }

  // --- inbox and ack ------------------------------------------------------------------------

  /** GET /api/inbox: one page. */
  inboxPage(query: InboxQuery = {}): Promise<InboxPage> {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) if (value !== undefined) params.set(name, String(value));
    const search = params.size > 0 ? `?${params}` : '';
    return this.call({ method: 'GET', path: `/api/inbox${search}`, repeatable: true });
  }

  /** Every page of the listing, following `next_cursor` until the last one. */
  async *inboxPages(query: InboxQuery = {}): AsyncGenerator<InboxPage> {
    let cursor = query.cursor;
    do {
      const page = await this.inboxPage({ ...query, cursor });
      yield page;
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
  }

  /** Every event of the listing, page by page (each exactly once, even while new events arrive). */
  async *inbox(query: InboxQuery = {}): AsyncGenerator<InboxEvent> {
    for await (const page of this.inboxPages(query)) yield* page.events;
  }

  /** POST /api/ack/:id. Idempotent; an unknown id is a 404 `not_found`. */
  ack(id: string): Promise<Acked> {
    return this.call({ method: 'POST', path: `/api/ack/${encodeURIComponent(id)}`, repeatable: true });
  }

  /** POST /api/ack, in chunks of 1000; the answers are merged. */
  async ackMany(ids: readonly string[]): Promise<AckManyResult> {
    const merged: AckManyResult = { acknowledged: [], not_found: [] };
    for (const chunk of chunks(ids, MAX_BATCH)) {
      const reply = await this.call<AckManyResult>({ method: 'POST', path: '/api/ack', body: { ids: chunk }, repeatable: true });
      merged.acknowledged.push(...reply.acknowledged);
      merged.not_found.push(...reply.not_found);
    }
    return merged;
  }

  // --- webhook endpoint ---------------------------------------------------------------------

  /** POST /api/webhook/config. A new endpoint gets a secret; changing the URL keeps it. */
  setWebhook(url: string): Promise<WebhookConfig> {
    return this.call({ method: 'POST', path: '/api/webhook/config', body: { webhook_url: url }, repeatable: true });
  }

  /** GET /api/webhook/config (404 `not_found` without an endpoint). */
  getWebhook(): Promise<WebhookConfig> {
    return this.call({ method: 'GET', path: '/api/webhook/config', repeatable: true });
  }

  /** DELETE /api/webhook/config: stops delivery. */
  async deleteWebhook(): Promise<void> {
    await this.call({ method: 'DELETE', path: '/api/webhook/config', repeatable: false });
  }

  /** POST /api/webhook/rotate-secret. For 24 h deliveries are signed with both secrets. */
  rotateWebhookSecret(): Promise<{ secret: string }> {
    return this.call({ method: 'POST', path: '/api/webhook/rotate-secret', repeatable: false });
  }

  // --- transport ----------------------------------------------------------------------------

  private headers(call: Call): Record<string, string> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (call.body !== undefined) headers['content-type'] = 'application/json';
    if (call.auth === 'admin') {
      if (this.adminToken !== undefined) headers.authorization = `Bearer ${this.adminToken}`;
    } else if (this.apiKey !== undefined) {
      headers['x-api-key'] = this.apiKey;
    }
    return headers;
  }

  /** One API call with its retries; returns the parsed answer or throws TriggersError. */
  private async call<T>(call: Call, state: CallState = newState()): Promise<T> {
    for (;;) {
      state.attempts++;
      let response: Response;
      let text: string;
      try {
        response = await fetch(this.baseUrl + call.path, {
          method: call.method,
          headers: this.headers(call),
          body: call.body === undefined ? undefined : JSON.stringify(call.body),
          signal: AbortSignal.timeout(this.timeout),
        });
        text = await response.text();
      } catch (cause) {
        state.uncertain = true;
        const timedOut = (cause as Error).name === 'TimeoutError';
        const detail = timedOut ? `no answer within ${this.timeout} ms` : String((cause as Error & { cause?: Error }).cause?.message ?? (cause as Error).message);
        const code = timedOut ? 'timeout' : 'network_error';
        if (call.repeatable && (await this.backoff(call, state, 0, code, undefined))) continue;
        throw new TriggersError({ status: 0, code, message: `${call.method} ${this.baseUrl}${call.path}: ${detail}`, attempts: state.attempts, cause });
      }
      if (response.ok) return (text === '' ? undefined : JSON.parse(text)) as T;
      const error = errorFromAnswer(response, text, state.attempts);
      // A gateway's 502/504 leaves open whether the server acted; the server's own 429/503 do not.
      const lost = response.status === 502 || response.status === 504;
      if (lost) state.uncertain = true;
      const retriable = response.status === 429 || response.status === 503 || (lost && call.repeatable);
      if (retriable && (await this.backoff(call, state, error.status, error.code, error.retryAfter))) continue;
      throw error;
    }
  }

  /** Waits before the next attempt; false when the budget is spent or the server asks for too long. */
  private async backoff(call: Call, state: CallState, status: number, code: string, retryAfter: number | undefined): Promise<boolean> {
    if (state.attempts > this.retry.retries) return false;
    const delayMs = retryDelay(this.retry, state.attempts, retryAfter);
    if (delayMs === null) return false;
    this.onRetry?.({ method: call.method, path: call.path, attempt: state.attempts, status, code, ...(retryAfter === undefined ? {} : { retryAfter }), delayMs });
    await sleep(delayMs);
    return true;
  }
}
