// Liveness, readiness and Prometheus metrics.
import type { AcceptorContext } from '../context.ts';
import type { Router } from '../http/router.ts';
import { CONTROL } from '../protocol.ts';

const READY_PROBE_TIMEOUT_MS = 1000;

export function healthRoutes(router: Router, ctx: AcceptorContext): void {
  const ok = JSON.stringify({ status: 'ok' });
  router.on('get', '/health', (exchange) => exchange.send(200, ok));
  router.on('get', '/health/live', (exchange) => exchange.send(200, ok));

  router.on('get', '/health/ready', async (exchange) => {
    const database = await Promise.race([
      ctx.sql`select 1`.then(() => 'connected', () => 'unreachable'),
      new Promise<string>((resolve) => setTimeout(resolve, READY_PROBE_TIMEOUT_MS, 'unreachable').unref()),
    ]);
    const backlog = ctx.log.progress.backlog();
    // Ready means events are accepted; that needs the log, not Postgres (the log absorbs outages).
    if (Atomics.load(ctx.control, CONTROL.READY) === 1) {
      return exchange.send(200, JSON.stringify({ status: 'ready', database, backlog }));
    }
    exchange.send(503, JSON.stringify({ status: 'not_ready', code: 'not_ready', error: 'The server cannot accept events right now.', database, backlog }));
  });

  router.on('get', '/metrics', async (exchange) => {
    exchange.send(200, await ctx.metrics.render(), [], ctx.metrics.contentType);
  });
}
