// The cross-thread protocol, in one place: what the main thread hands an acceptor thread,
// the messages they exchange, and the layout of the shared memory they both touch.
import type { Config } from './config.ts';
import { ERROR_CODES } from './errors.ts';

/** Slots of the `control` Int32Array. */
export const CONTROL = {
  /** Appends handed to LMDB and not yet answered, across threads (the overload cap). */
  IN_FLIGHT: 0,
  /** 1 while the instance accepts events; 0 while starting or draining for shutdown. */
  READY: 1,
  /** Events in the log not yet in Postgres (acceptors add on commit, the drain subtracts). */
  BACKLOG: 2,
  /** Bumped (and notified) by acceptors after each commit: wakes the idle drain. */
  APPENDED: 3,
  /** Bumped (and notified) by the drain after each watermark advance: wakes read-your-writes waits. */
  DRAINED: 4,
  /** 1 while the last drain attempt reached Postgres. */
  DATABASE_UP: 5,
  /** Persist pool utilization × 1000, sampled by the main thread. */
  PERSIST_UTILIZATION_PERMILLE: 6,
  /** Bumped to void every cached API key (the key-rotation notifications may have had a gap). */
  KEY_EPOCH: 7,
  /** Read-your-writes waits in progress, across threads: while above 0 the drain does not linger. */
  DRAIN_WAITERS: 8,
} as const;
const CONTROL_SLOTS = 9;

/** Log partitions (one per acceptor thread; a later start with fewer threads still drains them all). */
export const MAX_PARTITIONS = 64;

/** Upper bounds (seconds) of the ingest latency histogram; the last bucket is +Inf. */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1] as const;

/** Slots of the `counters` BigInt64Array. */
export const COUNTER = {
  ACCEPTED: 0,
  /** Sum of ingest latencies in microseconds. */
  LATENCY_SUM_US: 1,
  DRAINED: 2,
  /** One slot per delivery outcome, in DELIVERY_OUTCOMES order. */
  DELIVERY_BASE: 3,
  /** One slot per error code, in ERROR_CODES order. */
  REJECTED_BASE: 3 + 4,
  /** One slot per latency bucket plus +Inf. */
  LATENCY_BASE: 3 + 4 + ERROR_CODES.length,
} as const;

/** Webhook delivery outcomes counted in /metrics (4 slots from COUNTER.DELIVERY_BASE). */
export const DELIVERY_OUTCOMES = ['delivered', 'retry', 'failed', 'deferred'] as const;
const COUNTER_SLOTS = COUNTER.LATENCY_BASE + LATENCY_BUCKETS.length + 1;

/** Shared memory created once by the main thread and passed to every acceptor. */
export interface SharedBuffers {
  control: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  /** Rate-limit table: org number per slot (0 = free), claimed with compareExchange. */
  rateOrgs: SharedArrayBuffer;
  /** Per slot: bumped when the org's key is rotated; cached keys of an older generation are void. */
  keyGenerations: SharedArrayBuffer;
  /** Per slot: GCRA theoretical arrival time, nanoseconds on the process's monotonic clock. */
  rateTat: SharedArrayBuffer;
  /** Per partition: the last sequence number handed out (BigInt64). */
  issued: SharedArrayBuffer;
  /** Per partition: every seq up to this one is resolved (committed, or its conditional write lost). */
  resolved: SharedArrayBuffer;
  /** Per partition: every seq up to this one is in Postgres (the persisted watermark). */
  drained: SharedArrayBuffer;
}

export function createSharedBuffers(rateLimitSlots: number): SharedBuffers {
  return {
    control: new SharedArrayBuffer(CONTROL_SLOTS * Int32Array.BYTES_PER_ELEMENT),
    counters: new SharedArrayBuffer(COUNTER_SLOTS * BigInt64Array.BYTES_PER_ELEMENT),
    rateOrgs: new SharedArrayBuffer(rateLimitSlots * Int32Array.BYTES_PER_ELEMENT),
    keyGenerations: new SharedArrayBuffer(rateLimitSlots * Int32Array.BYTES_PER_ELEMENT),
    rateTat: new SharedArrayBuffer(rateLimitSlots * BigInt64Array.BYTES_PER_ELEMENT),
    issued: new SharedArrayBuffer(MAX_PARTITIONS * BigInt64Array.BYTES_PER_ELEMENT),
    resolved: new SharedArrayBuffer(MAX_PARTITIONS * BigInt64Array.BYTES_PER_ELEMENT),
    drained: new SharedArrayBuffer(MAX_PARTITIONS * BigInt64Array.BYTES_PER_ELEMENT),
  };
}

/** `workerData` of an acceptor thread. */
export interface AcceptorInit {
  config: Config;
  databaseUrl: string;
  shared: SharedBuffers;
  /** The thread's index: its log partition. The main thread is acceptor 0. */
  index: number;
  /** The port the main thread bound (resolves PORT=0 for every thread). */
  port: number;
}

export type MainToAcceptor =
  /** Stop listening, answer what is in flight, then reply `closed`. */
  { kind: 'close' };

export type AcceptorToMain =
  | { kind: 'listening' }
  | { kind: 'closed' }
  | { kind: 'fatal'; message: string };

/** `workerData` of a persist worker (Piscina). */
export interface PersistInit {
  databaseUrl: string;
}

/** One drain batch: msgpackr-packed LogRecord[] in a transferred buffer. */
export interface PersistTask {
  records: Uint8Array;
}

/** `workerData` of a delivery worker (Piscina). */
export interface DeliveryInit {
  allowPrivate: boolean;
  timeoutMs: number;
}

/** One webhook POST, signed by the main thread (secrets never leave it in clear otherwise). */
export interface DeliveryTask {
  url: string;
  body: string;
  headers: Record<string, string>;
}

export interface DeliveryResult {
  /** Absent when no HTTP answer came (connect error, timeout, blocked address). */
  statusCode?: number;
  /** Retry-After of a 429/503, in seconds. */
  retryAfterSeconds?: number;
  error?: string;
  durationMs: number;
}
