// `triggers inbox`, `ack` and `tail`: the pull side.
import { setTimeout as sleep } from 'node:timers/promises';
import type { EventStatus, InboxEvent, InboxQuery, TriggersClient } from '../index.ts';
import { EXIT, eventLine, inboxTable, printJson } from './output.ts';

export interface InboxOptions {
  status?: EventStatus | 'all';
  type?: string;
  limit?: number;
  order?: 'asc' | 'desc';
  cursor?: string;
  all?: boolean;
  json?: boolean;
}

export async function showInbox(client: TriggersClient, options: InboxOptions): Promise<void> {
  const query: InboxQuery = { status: options.status, type: options.type, limit: options.limit, order: options.order, cursor: options.cursor };
  let events: InboxEvent[];
  let nextCursor: string | null;
  if (options.all) {
    events = [];
    for await (const event of client.inbox(query)) events.push(event);
    nextCursor = null;
  } else {
    ({ events, next_cursor: nextCursor } = await client.inboxPage(query));
  }
  if (options.json) {
    printJson({ events, next_cursor: nextCursor });
    return;
  }
  process.stdout.write(events.length === 0 ? 'no events\n' : `${inboxTable(events)}\n`);
  if (nextCursor !== null) process.stderr.write(`more events: --cursor ${nextCursor} (or --all)\n`);
}

export async function ackIds(client: TriggersClient, ids: string[], options: { json?: boolean }): Promise<number> {
  const result = await client.ackMany(ids);
  if (options.json) {
    printJson(result);
  } else {
    for (const id of result.acknowledged) process.stdout.write(`acknowledged ${id}\n`);
    for (const id of result.not_found) process.stderr.write(`triggers: not_found: no such event ${id}\n`);
  }
  return result.not_found.length > 0 ? EXIT.api : EXIT.ok;
}

export interface TailOptions {
  status?: EventStatus | 'all';
  type?: string;
  limit: number;
  interval: number;
  ack?: boolean;
  json?: boolean;
}

/**
 * Prints the listing's events, then new ones as they arrive, until SIGINT/SIGTERM. The server hands
 * out a cursor only after a full page, so the last, partial page is asked for again on each poll and
 * the events already printed from it are skipped by id.
 */
export async function tail(client: TriggersClient, options: TailOptions): Promise<void> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    let cursor: string | undefined;
    let printed = new Set<string>();
    while (!stop.signal.aborted) {
      const page = await client.inboxPage({ status: options.status, type: options.type, limit: options.limit, order: 'asc', cursor });
      const fresh = page.events.filter((event) => !printed.has(event.id));
      for (const event of fresh) {
        process.stdout.write(options.json ? `${JSON.stringify(event)}\n` : `${eventLine(event.created_at, event.id, event.type, event.payload)}\n`);
      }
      if (options.ack && fresh.length > 0) await client.ackMany(fresh.map((event) => event.id));
      if (page.next_cursor !== null) {
        cursor = page.next_cursor;
        printed = new Set();
        continue;
      }
      // Only ids still on the page can come back: the set stays as small as a page.
      printed = new Set(page.events.map((event) => event.id));
      await sleep(options.interval, undefined, { signal: stop.signal }).catch(() => {});
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
