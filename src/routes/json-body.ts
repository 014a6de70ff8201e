import { checkContentType, parseJsonBody } from '../events/validate.ts';
import type { Exchange, RequestHead } from '../http/exchange.ts';

/**
 * Bounded body read, Content-Type check, strict UTF-8 JSON parse: the same for every JSON route.
 * The read starts at once (uWS delivers body chunks only to a handler registered in time);
 * the returned promise is marked handled so an early 401 leaves no unhandled rejection behind.
 */
export function readJson(exchange: Exchange, head: RequestHead, limit: number): Promise<unknown> {
  const parsed = exchange.readBody(head, limit).then((bytes) => {
    checkContentType(head.contentType);
    return parseJsonBody(bytes);
  });
  parsed.catch(() => {});
  return parsed;
}
