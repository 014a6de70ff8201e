// GET /api/inbox, POST /api/ack/:id, POST /api/ack — the pull side, read from Postgres with
// read-your-writes (see pipeline/visibility.ts).
import type { Principal } from '../auth/key-cache.ts';
import type { AcceptorContext } from '../context.ts';
import { ApiError, validationError } from '../errors.ts';
import { UUID_PATTERN } from '../events/ids.ts';
import { acknowledge, EVENT_STATUSES, inboxPage, type EventStatus, type InboxFilter, type StoredEvent } from '../events/store.ts';
import { isPlainObject, MAX_TEXT, storableText } from '../events/validate.ts';
import type { Router } from '../http/router.ts';
import { visibleHorizon } from '../pipeline/visibility.ts';
import { readJson } from './json-body.ts';

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1000;
export const MAX_ACK_IDS = 1000;
export const MAX_ACK_BODY = 128 * 1024;

type Order = 'asc' | 'desc';

/** What a cursor carries: the last id seen and the filters it is valid for. */
interface Cursor {
  id: string;
  order: Order;
  filter: InboxFilter;
  type: string | null;
}

/** The same rule as an event's type: 1..255 characters that Postgres text can hold. */
function validType(type: string): boolean {
  return type.length >= 1 && [...type].length <= MAX_TEXT && storableText(type);
}

function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify([1, cursor.id, cursor.order, cursor.filter, cursor.type])).toString('base64url');
}

function decodeCursor(raw: string): Cursor {
  try {
    const [version, id, order, filter, type] = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as unknown[];
    if (
      version === 1 &&
      typeof id === 'string' && UUID_PATTERN.test(id) &&
      (order === 'asc' || order === 'desc') &&
      (filter === 'all' || filter === 'undelivered' || EVENT_STATUSES.includes(filter as EventStatus)) &&
      (type === null || (typeof type === 'string' && validType(type)))
    ) {
      return { id, order, filter: filter as InboxFilter, type };
    }
  } catch {
    // fall through
  }
  throw new ApiError('invalid_cursor');
}

interface InboxParams {
  filter: InboxFilter;
  type: string | null;
  order: Order;
  limit: number;
  after: string | null;
}

function single(params: URLSearchParams, name: string): string | null {
  const values = params.getAll(name);
  if (values.length > 1) throw validationError(name, `${name} may be given once.`);
  return values[0] ?? null;
}

export function parseInboxQuery(query: string): InboxParams {
  const params = new URLSearchParams(query);
  const status = single(params, 'status');
  if (status !== null && status !== 'all' && !EVENT_STATUSES.includes(status as EventStatus)) {
    throw validationError('status', `status must be one of ${[...EVENT_STATUSES, 'all'].join(', ')}.`);
  }
  const type = single(params, 'type');
  if (type !== null && !validType(type)) {
    throw validationError('type', `type must be 1 to ${MAX_TEXT} characters.`);
  }
  const rawLimit = single(params, 'limit');
  if (rawLimit !== null && !/^\d{1,4}$/.test(rawLimit)) throw validationError('limit', `limit must be a whole number from 1 to ${MAX_LIMIT}.`);
  const limit = rawLimit === null ? DEFAULT_LIMIT : Number(rawLimit);
  if (limit < 1 || limit > MAX_LIMIT) throw validationError('limit', `limit must be a whole number from 1 to ${MAX_LIMIT}.`);
  const order = single(params, 'order');
  if (order !== null && order !== 'asc' && order !== 'desc') throw validationError('order', 'order must be asc or desc.');

  const requested = {
    filter: (status ?? 'undelivered') as InboxFilter,
    type,
    order: (order ?? 'asc') as Order,
  };
  const rawCursor = single(params, 'cursor');
  if (rawCursor === null) return { ...requested, limit, after: null };
  // A cursor continues one listing: its filters apply, and conflicting ones are an error.
  const cursor = decodeCursor(rawCursor);
  if ((status !== null && requested.filter !== cursor.filter) || (type !== null && type !== cursor.type) || (order !== null && order !== cursor.order)) {
    throw new ApiError('invalid_cursor', 'The cursor belongs to a listing with other filters.');
  }
  return { filter: cursor.filter, type: cursor.type, order: cursor.order, limit, after: cursor.id };
}

function inboxEventJson(row: StoredEvent): string {
  return `{"id":"${row.id}","type":${JSON.stringify(row.type)},"payload":${row.payload},"dedup_id":${JSON.stringify(row.dedup_id)},"status":"${row.status}","attempts":${row.attempt_count},"created_at":"${row.received_at.toISOString()}"}`;
}

export function inboxRoutes(router: Router, ctx: AcceptorContext): void {
  const { sql, keys, log } = ctx;

  router.on('get', '/api/inbox', async (exchange, head) => {
    const principal = await keys.authenticate(head);
    const params = parseInboxQuery(head.query);
    const horizon = await visibleHorizon(log.progress);
    const rows = await inboxPage(sql, { organizationId: principal.org.id, ...params, horizon });
    const last = rows[rows.length - 1];
    const nextCursor = rows.length === params.limit && last
      ? encodeCursor({ id: last.id, order: params.order, filter: params.filter, type: params.type })
      : null;
    exchange.send(200, `{"events":[${rows.map(inboxEventJson).join(',')}],"next_cursor":${JSON.stringify(nextCursor)}}`);
  });

  /**
   * Acks the org's events. An id Postgres does not have yet may be an event accepted a moment
   * ago: wait until everything accepted so far is drained, then try those ids once more.
   * (Asking the log first would race the drain moving the event out of it.)
   */
  async function ack(principal: Principal, ids: readonly string[]): Promise<Map<string, Date>> {
    const acked = await acknowledge(sql, principal.org.id, ids);
    const missing = ids.filter((id) => !acked.has(id));
    if (missing.length === 0) return acked;
    await visibleHorizon(log.progress);
    for (const [id, at] of await acknowledge(sql, principal.org.id, missing)) acked.set(id, at);
    return acked;
  }

  router.on('post', '/api/ack/:id', async (exchange, head) => {
    const principal = await keys.authenticate(head);
    const id = head.params[0]!.toLowerCase();
    if (!UUID_PATTERN.test(id)) throw new ApiError('invalid_id');
    const at = (await ack(principal, [id])).get(id);
    if (at === undefined) throw new ApiError('not_found', 'No such event.');
    exchange.send(200, JSON.stringify({ id, status: 'acknowledged', acknowledged_at: at.toISOString() }));
  });

  router.on('post', '/api/ack', async (exchange, head) => {
    const body = readJson(exchange, head, MAX_ACK_BODY);
    const principal = await keys.authenticate(head);
    const parsed = await body;
    if (!isPlainObject(parsed) || !Array.isArray(parsed.ids)) throw validationError('ids', 'The body must be {"ids": [...]}.');
    if (parsed.ids.length > MAX_ACK_IDS) throw validationError('ids', `At most ${MAX_ACK_IDS} ids at once.`);
    const ids = parsed.ids.map((id, index) => {
      if (typeof id !== 'string' || !UUID_PATTERN.test(id)) throw validationError('ids', `ids[${index}] is not a valid event id.`);
      return id.toLowerCase();
    });
    const unique = [...new Set(ids)];
    const acked = unique.length === 0 ? new Map<string, Date>() : await ack(principal, unique);
    exchange.send(200, JSON.stringify({
      acknowledged: unique.filter((id) => acked.has(id)),
      not_found: unique.filter((id) => !acked.has(id)),
    }));
  });
}
