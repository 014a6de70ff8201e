// POST /api/events, POST /api/events/batch, GET /api/events/:id.
// Order of checks, as the contract says: auth → validation → rate → dedup → append.
import type { Principal } from '../auth/key-cache.ts';
import type { AcceptorContext } from '../context.ts';
import { dedupKey } from '../digest.ts';
import { ApiError, validationError, type ErrorCode } from '../errors.ts';
import { UUID_PATTERN } from '../events/ids.ts';
import { isPlainObject, parseEvent, type EventInput } from '../events/validate.ts';
import type { Exchange, Headers, RequestHead } from '../http/exchange.ts';
import type { Handler, Router } from '../http/router.ts';
import type { AppendRequest, LogRecord } from '../log/event-log.ts';
import { findEvent, type StoredEvent } from '../events/store.ts';
import { attemptsOf, findEndpoint, redeliver, type AttemptRow } from '../delivery/store.ts';
import { visibleHorizon } from '../pipeline/visibility.ts';
import { CONTROL } from '../protocol.ts';
import type { RateDecision } from '../rate-limit.ts';
import { readJson } from './json-body.ts';

export const MAX_EVENT_BODY = 1024 * 1024;
export const MAX_BATCH_BODY = 5 * 1024 * 1024;
export const MAX_BATCH_EVENTS = 1000;

function rateHeaders(decision: RateDecision): Headers {
  const limit = String(decision.limit);
  const remaining = String(decision.remaining);
  return [
    ['ratelimit-limit', limit],
    ['ratelimit-remaining', remaining],
    ['ratelimit-reset', String(decision.resetSeconds)],
    ['x-ratelimit-limit', limit],
    ['x-ratelimit-remaining', remaining],
  ];
}

function rateLimited(decision: RateDecision): ApiError {
  return new ApiError('rate_limited', `Rate limit of ${decision.limit} events per minute exceeded.`, {
    limit: decision.limit,
    retry_after: decision.retryAfterSeconds,
  });
}

function appendRequest(principal: Principal, input: EventInput): AppendRequest {
  return {
    organizationId: principal.org.id,
    ...input,
    dedupKey: input.dedupId === null ? null : dedupKey(principal.org.num, input.dedupId),
  };
}

/** Event JSON as the API shows it; the payload is spliced in as stored, not re-serialized. */
function eventJson(event: {
  id: string; type: string; payload: string; dedupId: string | null; status: string;
  createdAt: Date; deliveredAt: Date | null; acknowledgedAt: Date | null;
}, attempts: readonly AttemptRow[]): string {
  const optional = (name: string, at: Date | null) => (at === null ? '' : `,"${name}":"${at.toISOString()}"`);
  const attemptsJson = JSON.stringify(attempts.map((attempt) => ({
    attempted_at: attempt.attempted_at.toISOString(),
    ...(attempt.status_code === null ? {} : { status_code: attempt.status_code }),
    duration_ms: attempt.duration_ms,
    ...(attempt.error === null ? {} : { error: attempt.error }),
  })));
  return `{"id":"${event.id}","type":${JSON.stringify(event.type)},"payload":${event.payload},"dedup_id":${JSON.stringify(event.dedupId)},"status":"${event.status}","created_at":"${event.createdAt.toISOString()}"${optional('delivered_at', event.deliveredAt)}${optional('acknowledged_at', event.acknowledgedAt)},"attempts":${attemptsJson}}`;
}

function fromLog([id, , type, payload, dedupId, receivedAt]: LogRecord) {
  return { id, type, payload, dedupId, status: 'pending', createdAt: new Date(receivedAt), deliveredAt: null, acknowledgedAt: null, stored: false };
}

function fromStore(row: StoredEvent) {
  return {
    id: row.id, type: row.type, payload: row.payload, dedupId: row.dedup_id, status: row.status,
    createdAt: row.received_at, deliveredAt: row.delivered_at, acknowledgedAt: row.acknowledged_at, stored: true,
  };
}

export function eventRoutes(router: Router, ctx: AcceptorContext): void {
  const { limiter, log, metrics, control, config } = ctx;

  /**
   * Reserves room for `count` appends under the backlog and in-flight caps, or throws 503.
   * Checked before the rate limit so an overloaded server does not eat the client's tokens.
   */
  function reserve(count: number): () => void {
    if (Atomics.load(control, CONTROL.READY) === 0) throw new ApiError('overloaded', 'The server is not accepting events right now (starting or shutting down).');
    if (log.progress.backlog() + count > config.logMaxBacklog) {
      throw new ApiError('overloaded', 'The event log is full (the database is behind or unreachable); retry later.');
    }
    if (Atomics.add(control, CONTROL.IN_FLIGHT, count) + count > config.logMaxInFlight) {
      Atomics.sub(control, CONTROL.IN_FLIGHT, count);
      throw new ApiError('overloaded', 'The event log is at capacity; retry shortly.');
    }
    return () => Atomics.sub(control, CONTROL.IN_FLIGHT, count);
  }

  function reject(exchange: Exchange, error: ApiError, decision: RateDecision | null, count = 1): void {
    metrics.rejected(error.code, count);
    const headers: Array<readonly [string, string]> = decision ? [...rateHeaders(decision)] : [];
    if (error.code === 'rate_limited' || error.code === 'overloaded') {
      headers.push(['retry-after', String(decision && error.code === 'rate_limited' ? decision.retryAfterSeconds : 1)]);
    }
    exchange.sendError(error, headers);
  }

  /** What an ingest request has established so far; its error answer carries what is known. */
  interface IngestState {
    principal: Principal | null;
    /** The rate decision that took tokens; without one, an answer after auth shows the bucket as it is. */
    decision: RateDecision | null;
    /** Events an error answer rejects (a whole batch refused as overloaded counts each of its events). */
    rejecting: number;
  }

  /** Runs an ingest handler; an ApiError it throws is answered with the rate-limit headers known by then. */
  function ingest(handler: (exchange: Exchange, head: RequestHead, state: IngestState) => Promise<void>): Handler {
    return async (exchange, head) => {
      const state: IngestState = { principal: null, decision: null, rejecting: 1 };
      try {
        await handler(exchange, head, state);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        const decision = state.decision ?? (state.principal && limiter.take(state.principal, 0));
        reject(exchange, error, decision, state.rejecting);
      }
    };
  }

  router.on('post', '/api/events', ingest(async (exchange, head, state) => {
    const started = performance.now();
    const body = readJson(exchange, head, MAX_EVENT_BODY);
    const principal = (state.principal = await ctx.keys.authenticate(head));
    const input = parseEvent(await body);
    const release = reserve(1);
    try {
      const decision = (state.decision = limiter.take(principal, 1));
      if (decision.granted === 0) throw rateLimited(decision);
      const [result] = await log.append([appendRequest(principal, input)]);
      if (!result!.ok) throw new ApiError('duplicate_event', undefined, { id: result!.duplicateOf });
      metrics.accepted(1, (performance.now() - started) / 1000);
      const receivedAt = new Date(result!.receivedAt).toISOString();
      exchange.send(202, `{"id":"${result!.id}","status":"accepted","received_at":"${receivedAt}"}`, rateHeaders(decision));
    } finally {
      release();
    }
  }));

  router.on('post', '/api/events/batch', ingest(async (exchange, head, state) => {
    const started = performance.now();
    const body = readJson(exchange, head, MAX_BATCH_BODY);
    const principal = (state.principal = await ctx.keys.authenticate(head));
    const parsed = await body;
    if (!isPlainObject(parsed) || !Array.isArray(parsed.events)) throw validationError('events', 'The body must be {"events": [...]}.');
    if (parsed.events.length > MAX_BATCH_EVENTS) throw validationError('events', `A batch holds at most ${MAX_BATCH_EVENTS} events.`);
    const items: unknown[] = parsed.events;

    type Result = { index: number; id?: string; status?: 'accepted'; code?: ErrorCode; error?: string; field?: unknown };
    const results: Result[] = new Array(items.length);
    const failed = (index: number, error: ApiError) => {
      metrics.rejected(error.code);
      results[index] = { index, code: error.code, error: error.message, ...error.fields };
    };
    const valid: Array<{ index: number; input: EventInput }> = [];
    items.forEach((item, index) => {
      try {
        valid.push({ index, input: parseEvent(item) });
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        failed(index, error);
      }
    });

    state.rejecting = valid.length;
    const release = reserve(valid.length);
    state.rejecting = 1;
    try {
      const decision = (state.decision = limiter.take(principal, valid.length));
      const admitted = valid.slice(0, decision.granted);
      for (const { index } of valid.slice(decision.granted)) failed(index, rateLimited(decision));

      // Within one batch the first of two equal dedup_ids wins; later ones learn its id after the append.
      const firstByDedup = new Map<string, number>();
      const duplicates: Array<{ index: number; firstIndex: number }> = [];
      const toAppend: Array<{ index: number; request: AppendRequest }> = [];
      for (const { index, input } of admitted) {
        const first = input.dedupId === null ? undefined : firstByDedup.get(input.dedupId);
        if (first !== undefined) {
          duplicates.push({ index, firstIndex: first });
          continue;
        }
        if (input.dedupId !== null) firstByDedup.set(input.dedupId, index);
        toAppend.push({ index, request: appendRequest(principal, input) });
      }
      const appended = await log.append(toAppend.map((item) => item.request));
      const idByIndex = new Map<number, string>();
      let accepted = 0;
      appended.forEach((result, i) => {
        const { index } = toAppend[i]!;
        if (result.ok) {
          accepted++;
          idByIndex.set(index, result.id);
          results[index] = { index, id: result.id, status: 'accepted' };
        } else {
          idByIndex.set(index, result.duplicateOf);
          failed(index, new ApiError('duplicate_event', undefined, { id: result.duplicateOf }));
        }
      });
      for (const { index, firstIndex } of duplicates) {
        failed(index, new ApiError('duplicate_event', undefined, { id: idByIndex.get(firstIndex) }));
      }
      if (accepted > 0) metrics.accepted(accepted, (performance.now() - started) / 1000);
      const body = JSON.stringify({ accepted, rejected: items.length - accepted, results });
      exchange.send(200, body, rateHeaders(decision));
    } finally {
      release();
    }
  }));

  router.on('get', '/api/events/:id', async (exchange, head) => {
    const principal = await ctx.keys.authenticate(head);
    const id = head.params[0]!.toLowerCase();
    if (!UUID_PATTERN.test(id)) throw new ApiError('invalid_id');
    const orgId = principal.org.id;
    const local = () => {
      const entry = log.get(id);
      return entry !== undefined && entry[1] === orgId ? fromLog(entry) : null;
    };
    // Postgres first (it has delivery state), then the log for an event not drained yet, then
    // Postgres again in case the drain moved it out of the log between the two reads.
    const lookup = async () => {
      let row: StoredEvent | null;
      try {
        row = await findEvent(ctx.sql, orgId, id);
      } catch {
        const entry = local();
        if (entry) return entry;
        throw new ApiError('database_unavailable');
      }
      if (row) return fromStore(row);
      const entry = local();
      if (entry) return entry;
      const again = await findEvent(ctx.sql, orgId, id);
      return again ? fromStore(again) : null;
    };
    const found = await lookup();
    // Another org's event is indistinguishable from a missing one.
    if (found === null) throw new ApiError('not_found', 'No such event.');
    // An event still only in the log has had no delivery attempt.
    const attempts = found.stored ? await attemptsOf(ctx.sql, id) : [];
    exchange.send(200, eventJson(found, attempts));
  });

  router.on('post', '/api/events/:id/redeliver', async (exchange, head) => {
    const principal = await ctx.keys.authenticate(head);
    const id = head.params[0]!.toLowerCase();
    if (!UUID_PATTERN.test(id)) throw new ApiError('invalid_id');
    const endpoint = await findEndpoint(ctx.sql, principal.org.id);
    if (endpoint === null || endpoint.disabled_at !== null) throw new ApiError('no_webhook_endpoint');
    // An event accepted a moment ago may not be in Postgres yet: wait for the drain once.
    let status = await redeliver(ctx.sql, principal.org.id, id);
    if (status === null) {
      await visibleHorizon(log.progress);
      status = await redeliver(ctx.sql, principal.org.id, id);
    }
    if (status === null) throw new ApiError('not_found', 'No such event.');
    if (status === 'acknowledged') throw new ApiError('event_acknowledged');
    exchange.send(202, JSON.stringify({ id, status: 'scheduled' }));
  });
}
