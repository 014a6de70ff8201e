// Routes on a uWS app, with the contract's 404/405 answers and one error boundary.
import { isUnreachable } from '../db/postgres.ts';
import { ApiError } from '../errors.ts';
import { Exchange, readHead, type RequestHead } from './exchange.ts';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.ts';

export type Handler = (exchange: Exchange, head: RequestHead) => void | Promise<void>;
type Method = 'get' | 'post' | 'del';

const DATABASE_UNREACHABLE = 'The database is unreachable right now; retry shortly.';

const METHOD_NAMES: Record<Method, string> = { get: 'GET', post: 'POST', del: 'DELETE' };

export class Router {
  private readonly allowed = new Map<string, string[]>();

  constructor(
    private readonly app: TemplatedApp,
    private readonly onUnexpected: (error: unknown, head: RequestHead) => void,
  ) {}

  on(method: Method, pattern: string, handler: Handler): this {
    const paramCount = pattern.split('/').filter((part) => part.startsWith(':')).length;
    this.app[method](pattern, (res, req) => this.run(res, req, paramCount, handler));
    const methods = [METHOD_NAMES[method]];
    if (method === 'get') {
      this.app.head(pattern, (res, req) => this.run(res, req, paramCount, handler, true));
      methods.push('HEAD');
    }
    this.allowed.set(pattern, [...(this.allowed.get(pattern) ?? []), ...methods]);
    return this;
  }

  /** Registers the fallbacks: 405 on known paths (with Allow), 404 everywhere else. */
  finish(): void {
    for (const [pattern, methods] of this.allowed) {
      const allow = methods.join(', ');
      this.app.any(pattern, (res, req) =>
        this.run(res, req, 0, (exchange) => exchange.sendError(new ApiError('method_not_allowed'), [['allow', allow]])),
      );
    }
    this.app.any('/*', (res, req) =>
      this.run(res, req, 0, (exchange) => exchange.sendError(new ApiError('not_found', 'No such route.'))),
    );
  }

  private run(res: HttpResponse, req: HttpRequest, paramCount: number, handler: Handler, headOnly = false): void {
    const head = readHead(req, paramCount);
    const exchange = new Exchange(res, headOnly);
    const fail = (error: unknown) => {
      if (error instanceof ApiError) return exchange.sendError(error);
      // A Postgres outage is the server's state, not a bug: 503 with Retry-After, not 500.
      if (isUnreachable(error)) return exchange.sendError(new ApiError('database_unavailable', DATABASE_UNREACHABLE));
      this.onUnexpected(error, head);
      exchange.sendError(new ApiError('internal_error'));
    };
    try {
      const pending = handler(exchange, head);
      if (pending) pending.catch(fail);
    } catch (error) {
      fail(error);
    }
  }
}
