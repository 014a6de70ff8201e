// POST /api/events, POST /api/events/batch, GET /api/events/:id.
// Order of checks, as the contract says: auth → validation → rate → dedup → append.
import { v7 as uuidv7 } from 'uuid';
import type { Principal } from '../auth/key-cache.ts';
import type { AcceptorContext } from '../context.ts';
import { dedupKey } from '../digest.ts';
import { ApiError, validationError, type ErrorCode } from '../errors.ts';
import { isPlainObject, parseEvent, type EventInput } from '../events/validate.ts';
import type { Exchange, Headers } from '../http/exchange.ts';
import type { Router } from '../http/router.ts';
import type { AppendRequest, LogRecord } from '../log/event-log.ts';
import { CONTROL } from '../protocol.ts';
import type { RateDecision } from '../rate-limit.ts';
import { readJson } from './json-body.ts';

export const MAX_EVENT_BODY = 1024 * 1024;
export const MAX_BATCH_BODY = 5 * 1024 * 1024;
export const MAX_BATCH_EVENTS = 1000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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

function record(principal: Principal, input: EventInput): AppendRequest {
  const entry: LogRecord = [uuidv7(), principal.org.id, input.type, input.payloadJson, input.dedupId, Date.now()];
  return { record: entry, dedupKey: input.dedupId === null ? null : dedupKey(principal.org.num, input.dedupId) };
}

/** Event JSON as the API shows it; the payload is spliced in as stored, not re-serialized. */
function eventJson(entry: LogRecord): string {
  const [id, , type, payloadJson, dedupId, receivedAt] = entry;
  const createdAt = new Date(receivedAt).toISOString();
  return `{"id":"${id}","type":${JSON.stringify(type)},"payload":${payloadJson},"dedup_id":${JSON.stringify(dedupId)},"status":"pending","created_at":"${createdAt}","attempts":[]}`;
}

export function eventRoutes(router: Router, ctx: AcceptorContext): void {
  const { limiter, log, metrics, control, config } = ctx;

  /**
   * Reserves room for `count` appends in the instance-wide in-flight cap, or throws 503.
   * Checked before the rate limit so an overloaded server does not eat the client's tokens.
   */
  function reserve(count: number): () => void {
    if (Atomics.load(control, CONTROL.READY) === 0) throw new ApiError('overloaded', 'The server is not accepting events right now (starting or shutting down).');
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

  router.on('post', '/api/events', async (exchange, head) => {
    const started = performance.now();
    const body = readJson(exchange, head, MAX_EVENT_BODY);
    let principal: Principal;
    let input: EventInput;
    try {
      principal = await ctx.keys.authenticate(head);
    } catch (error) {
      if (error instanceof ApiError) return reject(exchange, error, null);
      throw error;
    }
    try {
      input = parseEvent(await body);
    } catch (error) {
      if (error instanceof ApiError) return reject(exchange, error, limiter.take(principal.slot, principal.limitPerMinute, 0));
      throw error;
    }
    let release: () => void;
    try {
      release = reserve(1);
    } catch (error) {
      return reject(exchange, error as ApiError, limiter.take(principal.slot, principal.limitPerMinute, 0));
    }
    try {
      const decision = limiter.take(principal.slot, principal.limitPerMinute, 1);
      if (decision.granted === 0) return reject(exchange, rateLimited(decision), decision);
      const request = record(principal, input);
      const [result] = await log.append([request]);
      if (!result!.ok) {
        return reject(exchange, new ApiError('duplicate_event', undefined, { id: result!.duplicateOf }), decision);
      }
      const [id, , , , , receivedAt] = request.record;
      metrics.accepted(1, (performance.now() - started) / 1000);
      exchange.send(202, `{"id":"${id}","status":"accepted","received_at":"${new Date(receivedAt).toISOString()}"}`, rateHeaders(decision));
    } finally {
      release();
    }
  });

  router.on('post', '/api/events/batch', async (exchange, head) => {
    const started = performance.now();
    const body = readJson(exchange, head, MAX_BATCH_BODY);
    let principal: Principal;
    try {
      principal = await ctx.keys.authenticate(head);
    } catch (error) {
      if (error instanceof ApiError) return reject(exchange, error, null);
      throw error;
    }
    let items: unknown[];
    try {
      const parsed = await body;
      if (!isPlainObject(parsed) || !Array.isArray(parsed.events)) throw validationError('events', 'The body must be {"events": [...]}.');
      if (parsed.events.length > MAX_BATCH_EVENTS) throw validationError('events', `A batch holds at most ${MAX_BATCH_EVENTS} events.`);
      items = parsed.events;
    } catch (error) {
      if (error instanceof ApiError) return reject(exchange, error, limiter.take(principal.slot, principal.limitPerMinute, 0));
      throw error;
    }

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

    let release: () => void;
    try {
      release = reserve(valid.length);
    } catch (error) {
      return reject(exchange, error as ApiError, limiter.take(principal.slot, principal.limitPerMinute, 0), valid.length);
    }
    try {
      const decision = limiter.take(principal.slot, principal.limitPerMinute, valid.length);
      const admitted = valid.slice(0, decision.granted);
      for (const { index } of valid.slice(decision.granted)) failed(index, rateLimited(decision));

      // Within one batch the first of two equal dedup_ids wins.
      const firstByDedup = new Map<string, string>();
      const toAppend: Array<{ index: number; request: AppendRequest }> = [];
      for (const { index, input } of admitted) {
        const request = record(principal, input);
        const first = input.dedupId === null ? undefined : firstByDedup.get(input.dedupId);
        if (first !== undefined) {
          failed(index, new ApiError('duplicate_event', undefined, { id: first }));
          continue;
        }
        if (input.dedupId !== null) firstByDedup.set(input.dedupId, request.record[0]);
        toAppend.push({ index, request });
      }
      const appended = await log.append(toAppend.map((item) => item.request));
      let accepted = 0;
      appended.forEach((result, i) => {
        const { index, request } = toAppend[i]!;
        if (result.ok) {
          accepted++;
          results[index] = { index, id: request.record[0], status: 'accepted' };
        } else {
          failed(index, new ApiError('duplicate_event', undefined, { id: result.duplicateOf }));
        }
      });
      if (accepted > 0) metrics.accepted(accepted, (performance.now() - started) / 1000);
      const body = JSON.stringify({ accepted, rejected: items.length - accepted, results });
      exchange.send(200, body, rateHeaders(decision));
    } finally {
      release();
    }
  });

  router.on('get', '/api/events/:id', async (exchange, head) => {
    const principal = await ctx.keys.authenticate(head);
    const id = head.params[0]!;
    if (!UUID.test(id)) throw new ApiError('invalid_id');
    const entry = log.get(id.toLowerCase());
    // Another org's event is indistinguishable from a missing one.
    if (entry === undefined || entry[1] !== principal.org.id) throw new ApiError('not_found', 'No such event.');
    exchange.send(200, eventJson(entry));
  });
}
