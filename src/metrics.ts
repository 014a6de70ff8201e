// Metrics kept in shared memory (every acceptor thread adds to the same counters with Atomics)
// and rendered by prom-client from whichever thread serves GET /metrics.
import { isMainThread } from 'node:worker_threads';
import client from 'prom-client';
import { ERROR_CODES, type ErrorCode } from './errors.ts';
import type { EventLog } from './log/event-log.ts';
import { CONTROL, COUNTER, DELIVERY_OUTCOMES, LATENCY_BUCKETS, type SharedBuffers } from './protocol.ts';

type MetricValue = { value: number; labels?: Record<string, string | number>; metricName?: string };

export class Metrics {
  private readonly counters: BigInt64Array;
  private readonly registry = new client.Registry();

  constructor(shared: SharedBuffers, log: EventLog) {
    this.counters = new BigInt64Array(shared.counters);
    const control = new Int32Array(shared.control);
    this.register('triggers_events_accepted_total', 'Events accepted (202 or accepted in a batch).', 'counter', () => [
      { value: this.read(COUNTER.ACCEPTED) },
    ]);
    this.register('triggers_events_rejected_total', 'Events rejected, by error code.', 'counter', () =>
      ERROR_CODES.map((code, i) => ({ value: this.read(COUNTER.REJECTED_BASE + i), labels: { code } })),
    );
    this.register('triggers_ingest_latency_seconds', 'From request start to the durable 202.', 'histogram', () =>
      this.latencyValues(),
    );
    this.register('triggers_log_backlog', 'Accepted events in the local log not yet in Postgres.', 'gauge', () => [
      { value: log.progress.backlog() },
    ]);
    this.register('triggers_drain_lag_seconds', 'Age of the oldest event not yet in Postgres (0 when caught up).', 'gauge', () => {
      const oldest = log.oldestUndrained();
      return [{ value: oldest === null ? 0 : Math.max(0, Date.now() - oldest) / 1000 }];
    });
    this.register('triggers_events_drained_total', 'Events written from the log into Postgres.', 'counter', () => [
      { value: this.read(COUNTER.DRAINED) },
    ]);
    this.register('triggers_webhook_deliveries_total', 'Webhook delivery outcomes (deferred: held back by a circuit breaker or the per-endpoint cap, not sent).', 'counter', () =>
      DELIVERY_OUTCOMES.map((outcome, i) => ({ value: this.read(COUNTER.DELIVERY_BASE + i), labels: { outcome } })),
    );
    this.register('triggers_database_up', '1 while the last drain batch reached Postgres.', 'gauge', () => [
      { value: Atomics.load(control, CONTROL.DATABASE_UP) },
    ]);
    this.register('triggers_persist_pool_utilization', 'Share of time the persist workers were busy (0..1).', 'gauge', () => [
      { value: Atomics.load(control, CONTROL.PERSIST_UTILIZATION_PERMILLE) / 1000 },
    ]);
    // prom-client's process and V8 figures (RSS, heap, event-loop delay, GC) for the main thread,
    // which runs the drain and the webhook dispatcher beside acceptor 0. Other acceptor threads are
    // isolates of their own: a scrape they answer leaves these out rather than mix in another heap.
    if (isMainThread) client.collectDefaultMetrics({ register: this.registry });
  }

  private read(slot: number): number {
    return Number(Atomics.load(this.counters, slot));
  }

  private register(name: string, help: string, type: 'counter' | 'gauge' | 'histogram', values: () => MetricValue[]): void {
    // prom-client renders any object with this shape (its own metrics are the same).
    this.registry.registerMetric({ name, help, type, aggregator: 'sum', get: () => ({ name, help, type, values: values(), aggregator: 'sum' }) } as never);
  }

  private latencyValues(): MetricValue[] {
    const name = 'triggers_ingest_latency_seconds';
    const values: MetricValue[] = [];
    let cumulative = 0;
    LATENCY_BUCKETS.forEach((le, i) => {
      cumulative += this.read(COUNTER.LATENCY_BASE + i);
      values.push({ value: cumulative, labels: { le }, metricName: `${name}_bucket` });
    });
    cumulative += this.read(COUNTER.LATENCY_BASE + LATENCY_BUCKETS.length);
    values.push({ value: cumulative, labels: { le: '+Inf' }, metricName: `${name}_bucket` });
    values.push({ value: this.read(COUNTER.LATENCY_SUM_US) / 1e6, metricName: `${name}_sum` });
    values.push({ value: cumulative, metricName: `${name}_count` });
    return values;
  }

  accepted(count: number, latencySeconds: number): void {
    Atomics.add(this.counters, COUNTER.ACCEPTED, BigInt(count));
    let bucket = LATENCY_BUCKETS.findIndex((le) => latencySeconds <= le);
    if (bucket === -1) bucket = LATENCY_BUCKETS.length;
    Atomics.add(this.counters, COUNTER.LATENCY_BASE + bucket, 1n);
    Atomics.add(this.counters, COUNTER.LATENCY_SUM_US, BigInt(Math.round(latencySeconds * 1e6)));
  }

  drained(count: number): void {
    Atomics.add(this.counters, COUNTER.DRAINED, BigInt(count));
  }

  delivery(outcome: (typeof DELIVERY_OUTCOMES)[number]): void {
    Atomics.add(this.counters, COUNTER.DELIVERY_BASE + DELIVERY_OUTCOMES.indexOf(outcome), 1n);
  }

  rejected(code: ErrorCode, count = 1): void {
    Atomics.add(this.counters, COUNTER.REJECTED_BASE + ERROR_CODES.indexOf(code), BigInt(count));
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
