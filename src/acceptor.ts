// One acceptor: a uWS app with every route, on one thread, listening on the shared port.
import { KeyCache } from './auth/key-cache.ts';
import type { Config } from './config.ts';
import type { AcceptorContext } from './context.ts';
import { connect } from './db/postgres.ts';
import { initDigests } from './digest.ts';
import { Router } from './http/router.ts';
import { closeConnections, closeListenSocket, createApp, listenPort, type us_listen_socket } from './http/uws.ts';
import { EventLog } from './log/event-log.ts';
import { LogProgress } from './log/progress.ts';
import { createLogger } from './logger.ts';
import { Metrics } from './metrics.ts';
import { CONTROL, type SharedBuffers } from './protocol.ts';
import { RateLimiter } from './rate-limit.ts';
import { docsRoutes } from './routes/docs.ts';
import { eventRoutes } from './routes/events.ts';
import { healthRoutes } from './routes/health.ts';
import { inboxRoutes } from './routes/inbox.ts';
import { webhookRoutes } from './routes/webhooks.ts';
import { keyRoutes } from './routes/keys.ts';

export interface Acceptor {
  ctx: AcceptorContext;
  port: number;
  /**
   * Stops listening and waits until in-flight appends are answered. On the main thread open
   * keep-alive connections end with the process.
   */
  close(): Promise<void>;
  /** Acceptor threads only, after close(): see closeConnections in http/uws.ts. */
  closeConnections(): void;
}

/** Every route module, in registration order (test/openapi.test.ts lists the routes from it). */
export const ROUTE_MODULES: ReadonlyArray<(router: Router, ctx: AcceptorContext) => void> = [
  eventRoutes, inboxRoutes, webhookRoutes, keyRoutes, healthRoutes, docsRoutes,
];

export async function createContext(config: Config, databaseUrl: string, shared: SharedBuffers, index: number): Promise<AcceptorContext> {
  await initDigests();
  const logger = createLogger(config.logLevel, { thread: index });
  const sql = connect(databaseUrl, { max: config.databasePoolSize });
  const progress = new LogProgress(shared);
  const log = new EventLog({ dataDir: config.dataDir, partition: index, durability: config.durability, dedupWindowMs: config.dedupWindowMs, progress });
  const limiter = new RateLimiter(shared);
  const keys = new KeyCache(sql, limiter, shared);
  const metrics = new Metrics(shared, log);
  return { config, logger, sql, log, keys, limiter, metrics, control: new Int32Array(shared.control) };
}

export async function startAcceptor(ctx: AcceptorContext, port: number): Promise<Acceptor> {
  const app = createApp();
  const router = new Router(app, (error, head) => ctx.logger.error({ err: error, method: head.method, url: head.url }, 'unexpected error'));
  for (const register of ROUTE_MODULES) register(router, ctx);
  router.finish();

  const socket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen(ctx.config.host, port, (listenSocket) => {
      if (listenSocket) resolve(listenSocket);
      else reject(new Error(`cannot listen on ${ctx.config.host}:${port}`));
    });
  });

  return {
    ctx,
    port: listenPort(socket),
    closeConnections: () => closeConnections(app),
    async close() {
      closeListenSocket(socket);
      while (Atomics.load(ctx.control, CONTROL.IN_FLIGHT) > 0) await new Promise((resolve) => setTimeout(resolve, 5));
      await ctx.sql.end({ timeout: 5 });
    },
  };
}
