// What one acceptor thread works with. The main thread builds one for itself, and each
// acceptor thread builds its own from the same shared buffers.
import type { Logger } from 'pino';
import type { KeyCache } from './auth/key-cache.ts';
import type { Config } from './config.ts';
import type { Sql } from './db/postgres.ts';
import type { EventLog } from './log/event-log.ts';
import type { Metrics } from './metrics.ts';
import type { RateLimiter } from './rate-limit.ts';

export interface AcceptorContext {
  config: Config;
  logger: Logger;
  sql: Sql;
  log: EventLog;
  keys: KeyCache;
  limiter: RateLimiter;
  metrics: Metrics;
  /** The `control` slots of the shared memory (see CONTROL in protocol.ts). */
  control: Int32Array;
}
