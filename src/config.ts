// Configuration: read from the environment once at start, validated, frozen.
// A bad value stops the server with one line that names the variable.
import path from 'node:path';
import ms from 'ms';

export type Durability = 'fsync' | 'commit';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  readonly port: number;
  readonly host: string;
  readonly dataDir: string;
  /** Unset: an embedded Postgres is started under `dataDir`. */
  readonly databaseUrl: string | null;
  readonly acceptorThreads: number;
  readonly adminToken: string | null;
  readonly durability: Durability;
  readonly dedupWindowMs: number;
  readonly logLevel: LogLevel;
  /** Appends not yet committed, across all acceptor threads; over it: 503 overloaded. */
  readonly logMaxInFlight: number;
  /** Orgs one instance can rate-limit at once (slots in the shared table). */
  readonly rateLimitSlots: number;
  readonly databasePoolSize: number;
  readonly embeddedPostgresPort: number;
  /** Piscina threads writing drain batches to Postgres. */
  readonly persistWorkers: number;
  readonly persistBatchSize: number;
  /** How long the drain waits after new appends to gather a larger batch. */
  readonly persistLingerMs: number;
  /** Undrained events the log may hold (Postgres down or slow); beyond it: 503 overloaded. */
  readonly logMaxBacklog: number;
  readonly retentionDays: number;
  /** At shutdown, how long to wait for the log to drain into Postgres. */
  readonly shutdownDrainMs: number;
  /** Local development and tests only: allow webhook URLs on loopback/private addresses. */
  readonly webhookAllowPrivate: boolean;
  readonly webhookTimeoutMs: number;
  /** Delays before retries 1..n, each jittered ±20 %. */
  readonly webhookRetryScheduleMs: readonly number[];
  readonly deliveryWorkers: number;
  /** Base64 of the 32-byte key that encrypts webhook secrets at rest; null: generated under DATA_DIR. */
  readonly webhookSecretKey: string | null;
}

export class ConfigError extends Error {
  constructor(readonly variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/** Describes every variable once; docs and the README table are written from it. */
export const CONFIG_VARIABLES = [
  ['PORT', '8080', 'HTTP port; 0 picks a free one (printed in the `listening` log line).'],
  ['HOST', '0.0.0.0', 'Address to listen on.'],
  ['DATA_DIR', './data', 'LMDB log and, without DATABASE_URL, the embedded Postgres.'],
  ['DATABASE_URL', '(embedded)', 'Postgres connection string. Unset: an embedded Postgres under DATA_DIR/postgres.'],
  ['ACCEPTOR_THREADS', '1', 'HTTP acceptor threads (1..64) sharing the port via SO_REUSEPORT.'],
  ['ADMIN_TOKEN', '(unset)', 'When set, POST /api/keys/generate needs `Authorization: Bearer <ADMIN_TOKEN>`. Unset: the route is open and a warning is logged at start.'],
  ['DURABILITY', 'fsync', '`fsync`: 202 after the LMDB commit and the events are flushed to disk, in the journal (survives power loss). `commit`: 202 after the LMDB commit (survives kill -9 only).'],
  ['DEDUP_WINDOW', '24h', 'How long a dedup_id is remembered (e.g. 90s, 30m, 24h, 7d).'],
  ['LOG_LEVEL', 'info', 'fatal, error, warn, info, debug, trace or silent.'],
  ['LOG_MAX_IN_FLIGHT', '16384', 'Uncommitted appends allowed at once; beyond it POST /api/events answers 503 overloaded.'],
  ['RATE_LIMIT_SLOTS', '65536', 'Capacity of the shared rate-limit table (organisations active in one instance).'],
  ['DATABASE_POOL_SIZE', '4', 'Postgres connections per acceptor thread.'],
  ['EMBEDDED_POSTGRES_PORT', '54329', 'Port of the embedded Postgres (only without DATABASE_URL).'],
  ['PERSIST_WORKERS', '1', 'Piscina threads that write drained batches into Postgres (1..16).'],
  ['PERSIST_BATCH_SIZE', '2000', 'Most events in one drain batch (one INSERT).'],
  ['PERSIST_LINGER', '100ms', 'After new appends, the drain waits this long to gather a larger batch: fewer Postgres commits and LMDB compaction commits competing with ingest for the CPU and the disk, at the cost of webhook lag (reads that must see their own writes cut the wait short); 0 drains at once.'],
  ['LOG_MAX_BACKLOG', '5000000', 'Undrained events the log may hold while Postgres is down or slow; beyond it 503 overloaded.'],
  ['RETENTION_DAYS', '7', 'Delivered, acknowledged and failed events older than this are deleted (checked at start and every minute).'],
  ['WEBHOOK_ALLOW_PRIVATE', 'false', '`true` allows webhook URLs on loopback, private and link-local addresses (local development and tests only).'],
  ['WEBHOOK_TIMEOUT', '10s', 'How long a webhook delivery may take before it counts as failed.'],
  ['WEBHOOK_RETRY_SCHEDULE', '5s,5m,30m,2h,5h,10h,10h', 'Delays before each retry of a failed delivery (each ±20 % jitter); after the last one the event is failed.'],
  ['DELIVERY_WORKERS', '1', 'Piscina threads that send webhooks (1..16).'],
  ['WEBHOOK_SECRET_KEY', '(generated)', 'Base64 of 32 bytes that encrypts webhook secrets in Postgres. Unset: generated once into DATA_DIR/webhook-secret.key. Instances sharing a database must share it.'],
  ['SHUTDOWN_DRAIN_TIMEOUT', '10s', 'On SIGTERM, how long to wait for the log to drain into Postgres before exiting (the rest drains at the next start).'],
] as const;

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `expected a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function oneOf<T extends string>(env: Env, name: string, fallback: T, allowed: readonly T[]): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${allowed.join(', ')}, got "${raw}"`);
  }
  return raw as T;
}

/** Parses `90s`, `30m`, `24h`, `7d` (or plain milliseconds) into milliseconds. */
export function parseDuration(name: string, raw: string): number {
  const value = /^\d+$/.test(raw) ? Number(raw) : ms(raw as ms.StringValue);
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new ConfigError(name, `expected a positive duration such as 30s, 5m, 24h, got "${raw}"`);
  }
  return value;
}

function duration(env: Env, name: string, fallback: string, allowZero = false): number {
  const raw = env[name] === undefined || env[name] === '' ? fallback : env[name]!;
  return allowZero && /^0+(ms|s)?$/.test(raw) ? 0 : parseDuration(name, raw);
}

function secretKey(env: Env, name: string): string | null {
  const raw = optional(env, name);
  if (raw !== null && Buffer.from(raw, 'base64').length !== 32) {
    throw new ConfigError(name, 'must be the base64 of exactly 32 bytes (e.g. `openssl rand -base64 32`)');
  }
  return raw;
}

function optional(env: Env, name: string): string | null {
  const raw = env[name];
  return raw === undefined || raw === '' ? null : raw;
}

export function loadConfig(env: Env = process.env): Config {
  const databaseUrl = optional(env, 'DATABASE_URL');
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL', 'must start with postgres:// or postgresql://');
  }
  return Object.freeze({
    port: integer(env, 'PORT', 8080, 0, 65535),
    host: env.HOST || '0.0.0.0',
    dataDir: path.resolve(env.DATA_DIR || './data'),
    databaseUrl,
    acceptorThreads: integer(env, 'ACCEPTOR_THREADS', 1, 1, 64),
    adminToken: optional(env, 'ADMIN_TOKEN'),
    durability: oneOf<Durability>(env, 'DURABILITY', 'fsync', ['fsync', 'commit']),
    dedupWindowMs: duration(env, 'DEDUP_WINDOW', '24h'),
    logLevel: oneOf<LogLevel>(env, 'LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    logMaxInFlight: integer(env, 'LOG_MAX_IN_FLIGHT', 16384, 1, 250_000),
    rateLimitSlots: integer(env, 'RATE_LIMIT_SLOTS', 65536, 16, 1 << 24),
    databasePoolSize: integer(env, 'DATABASE_POOL_SIZE', 4, 1, 100),
    embeddedPostgresPort: integer(env, 'EMBEDDED_POSTGRES_PORT', 54329, 1, 65535),
    persistWorkers: integer(env, 'PERSIST_WORKERS', 1, 1, 16),
    persistBatchSize: integer(env, 'PERSIST_BATCH_SIZE', 2000, 1, 50_000),
    persistLingerMs: duration(env, 'PERSIST_LINGER', '100ms', true),
    logMaxBacklog: integer(env, 'LOG_MAX_BACKLOG', 5_000_000, 1, 1_000_000_000),
    retentionDays: integer(env, 'RETENTION_DAYS', 7, 1, 36_500),
    shutdownDrainMs: duration(env, 'SHUTDOWN_DRAIN_TIMEOUT', '10s', true),
    webhookAllowPrivate: oneOf(env, 'WEBHOOK_ALLOW_PRIVATE', 'false', ['true', 'false']) === 'true',
    webhookTimeoutMs: duration(env, 'WEBHOOK_TIMEOUT', '10s'),
    webhookRetryScheduleMs: Object.freeze(
      (env.WEBHOOK_RETRY_SCHEDULE || '5s,5m,30m,2h,5h,10h,10h').split(',').map((part) => parseDuration('WEBHOOK_RETRY_SCHEDULE', part.trim())),
    ),
    deliveryWorkers: integer(env, 'DELIVERY_WORKERS', 1, 1, 16),
    webhookSecretKey: secretKey(env, 'WEBHOOK_SECRET_KEY'),
  });
}
