// Webhook delivery, on the main thread: claims due deliveries from Postgres, signs them, hands
// them to the Piscina delivery pool, and records every attempt with the next step of the retry
// schedule. A per-endpoint circuit breaker and in-flight cap keep a failing or slow endpoint
// from taking the pool away from the others.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Sql } from '../db/postgres.ts';
import type { Metrics } from '../metrics.ts';
import type { DeliveryInit, DeliveryResult, DeliveryTask } from '../protocol.ts';
import { createPool, type WorkerPool } from '../worker-pool.ts';
import { decryptSecret, signatureHeader } from './secrets.ts';
import { claimDue, disableEndpoint, recordDeliveries, type DeliveryRecord, type DueDelivery } from './store.ts';

/** Deliveries in flight per delivery worker (they are I/O bound). */
const IN_FLIGHT_PER_WORKER = 128;
/** Deliveries in flight to one endpoint at most. */
const IN_FLIGHT_PER_ENDPOINT = 32;
/** How often due retries are looked for when nothing wakes the loop. */
const POLL_MS = 250;
/** Outcomes are written in batches, at most this long after the attempt. */
const FLUSH_MS = 10;
/** Consecutive failures that open an endpoint's circuit; then it is probed after a pause that doubles. */
const BREAKER_THRESHOLD = 5;
const BREAKER_PAUSE_MIN_MS = 5_000;
const BREAKER_PAUSE_MAX_MS = 10 * 60_000;
/** How long a deferred delivery (endpoint busy or its circuit open) waits before it is due again. */
const BUSY_DEFER_MS = 200;
const JITTER = 0.2;
/** How long a delivery whose secret cannot be decrypted waits before it is tried again. */
const UNSIGNABLE_DEFER_MS = 60_000;

interface Breaker {
  failures: number;
  pauseMs: number;
  openUntil: number;
  /** A probe is in flight while the circuit is half-open. */
  probing: boolean;
}

export class Dispatcher {
  private readonly pool: WorkerPool<DeliveryTask, DeliveryResult>;
  private readonly secretKey: Buffer;
  private readonly inFlightByOrg = new Map<string, number>();
  private readonly breakers = new Map<string, Breaker>();
  private readonly outcomes: DeliveryRecord[] = [];
  private inFlight = 0;
  private stopping = false;
  private wake: () => void = () => {};
  private loop: Promise<void> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly sql: Sql,
    private readonly config: Config,
    secretKey: Buffer,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    this.secretKey = secretKey;
    this.pool = createPool<DeliveryTask, DeliveryResult>({
      worker: 'deliver',
      threads: config.deliveryWorkers,
      workerData: { allowPrivate: config.webhookAllowPrivate, timeoutMs: config.webhookTimeoutMs } satisfies DeliveryInit,
      concurrentTasksPerWorker: IN_FLIGHT_PER_WORKER,
      logger,
    });
  }

  start(): void {
    this.loop = this.run();
  }

  /** New events may be due (the drain just wrote some). */
  nudge(): void {
    this.wake();
  }

  private get capacity(): number {
    return this.config.deliveryWorkers * IN_FLIGHT_PER_WORKER - this.inFlight;
  }

  private async run(): Promise<void> {
    // A claim lasts longer than any attempt, so only a crashed instance's claims come due again.
    const leaseMs = this.config.webhookTimeoutMs + 60_000;
    while (!this.stopping) {
      let claimed: DueDelivery[] = [];
      if (this.capacity > 0) {
        try {
          claimed = await claimDue(this.sql, this.capacity, IN_FLIGHT_PER_ENDPOINT, leaseMs, this.saturatedOrgs(), this.room());
        } catch (error) {
          this.logger.warn({ err: error }, 'claiming due deliveries failed');
        }
      }
      for (const due of claimed) this.dispatch(due);
      if (claimed.length > 0 && this.capacity > 0) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Orgs whose endpoint takes nothing more right now: circuit open or probing, or at its in-flight cap. */
  private saturatedOrgs(): string[] {
    const now = Date.now();
    const orgs = new Set<string>();
    for (const [orgId, count] of this.inFlightByOrg) if (count >= IN_FLIGHT_PER_ENDPOINT) orgs.add(orgId);
    for (const [orgId, breaker] of this.breakers) {
      if (breaker.failures >= BREAKER_THRESHOLD && (now < breaker.openUntil || breaker.probing)) orgs.add(orgId);
    }
    return [...orgs];
  }

  /** Endpoints with deliveries in flight: how many more each may take now. */
  private room(): Map<string, number> {
    const room = new Map<string, number>();
    for (const [orgId, count] of this.inFlightByOrg) if (count > 0 && count < IN_FLIGHT_PER_ENDPOINT) room.set(orgId, IN_FLIGHT_PER_ENDPOINT - count);
    return room;
  }

  private breaker(orgId: string): Breaker {
    let breaker = this.breakers.get(orgId);
    if (!breaker) {
      breaker = { failures: 0, pauseMs: BREAKER_PAUSE_MIN_MS, openUntil: 0, probing: false };
      this.breakers.set(orgId, breaker);
    }
    return breaker;
  }

  private dispatch(due: DueDelivery): void {
    const orgId = due.organization_id;
    const breaker = this.breaker(orgId);
    const now = Date.now();
    const open = breaker.failures >= BREAKER_THRESHOLD;
    if (open && (now < breaker.openUntil || breaker.probing)) {
      return this.settle({ id: due.id, outcome: 'deferred', attempt: null, nextAttemptAt: new Date(Math.max(breaker.openUntil, now + BUSY_DEFER_MS)), scheduleStep: due.schedule_step });
    }
    if ((this.inFlightByOrg.get(orgId) ?? 0) >= IN_FLIGHT_PER_ENDPOINT) {
      return this.settle({ id: due.id, outcome: 'deferred', attempt: null, nextAttemptAt: new Date(now + BUSY_DEFER_MS), scheduleStep: due.schedule_step });
    }
    let task: DeliveryTask;
    try {
      task = this.sign(due);
    } catch (error) {
      // A secret sealed with another WEBHOOK_SECRET_KEY (instances must share it): nothing can be
      // signed, so nothing is sent; the event waits, and the operator is told.
      this.logger.error({ err: error, organizationId: orgId }, 'webhook secret cannot be decrypted (check WEBHOOK_SECRET_KEY)');
      return this.settle({ id: due.id, outcome: 'deferred', attempt: null, nextAttemptAt: new Date(now + UNSIGNABLE_DEFER_MS), scheduleStep: due.schedule_step });
    }
    if (open) breaker.probing = true;
    this.inFlight++;
    this.inFlightByOrg.set(orgId, (this.inFlightByOrg.get(orgId) ?? 0) + 1);
    const attemptedAt = new Date();
    void this.pool
      .run(task)
      .catch((error: Error): DeliveryResult => ({ error: `delivery worker failed: ${error.message}`, durationMs: 0 }))
      .then((result) => this.finish(due, attemptedAt, result, open))
      .finally(() => {
        const wasFull = this.capacity <= 0;
        this.inFlight--;
        const left = (this.inFlightByOrg.get(orgId) ?? 1) - 1;
        this.inFlightByOrg.set(orgId, left);
        // Refill a busy endpoint in batches (at half its cap, or when idle): a claim after every single
        // completion re-scans the endpoint's whole due backlog just to take one more.
        if (wasFull || left === IN_FLIGHT_PER_ENDPOINT / 2 || left === 0) this.wake();
      });
  }

  /** Body and Standard Webhooks headers; during a secret rotation both secrets sign. */
  private sign(due: DueDelivery): DeliveryTask {
    const body = `{"id":"${due.id}","type":${JSON.stringify(due.type)},"timestamp":"${due.received_at.toISOString()}","data":${due.payload}}`;
    const timestamp = Math.floor(Date.now() / 1000);
    const secrets = [decryptSecret(this.secretKey, due.secret_enc)];
    if (due.previous_secret_enc !== null && due.previous_secret_expires_at !== null && due.previous_secret_expires_at.getTime() > Date.now()) {
      // The previous secret only adds a second signature: if it cannot be read, sign without it.
      try {
        secrets.push(decryptSecret(this.secretKey, due.previous_secret_enc));
      } catch {
        this.logger.warn({ organizationId: due.organization_id }, 'previous webhook secret cannot be decrypted; signing with the current one only');
      }
    }
    return {
      url: due.url,
      body,
      headers: {
        'content-type': 'application/json',
        'webhook-id': due.id,
        'webhook-timestamp': String(timestamp),
        'webhook-signature': signatureHeader(secrets, due.id, timestamp, body),
      },
    };
  }

  private finish(due: DueDelivery, attemptedAt: Date, result: DeliveryResult, probe: boolean): void {
    const breaker = this.breaker(due.organization_id);
    if (probe) breaker.probing = false;
    const status = result.statusCode ?? null;
    const attempt = { number: due.attempt_count + 1, at: attemptedAt, statusCode: status, durationMs: result.durationMs, error: result.error ?? null };
    if (status !== null && status >= 200 && status < 300) {
      breaker.failures = 0;
      breaker.pauseMs = BREAKER_PAUSE_MIN_MS;
      return this.settle({ id: due.id, outcome: 'delivered', attempt, nextAttemptAt: null, scheduleStep: due.schedule_step });
    }
    breaker.failures++;
    if (breaker.failures >= BREAKER_THRESHOLD) {
      breaker.openUntil = Date.now() + breaker.pauseMs;
      if (probe) breaker.pauseMs = Math.min(BREAKER_PAUSE_MAX_MS, breaker.pauseMs * 2);
    }
    if (status === 410) {
      // Gone: the endpoint is disabled; this event fails now, the org's others wait for a new config.
      void disableEndpoint(this.sql, due.organization_id).catch((error) => this.logger.warn({ err: error }, 'disabling endpoint failed'));
      return this.settle({ id: due.id, outcome: 'failed', attempt, nextAttemptAt: null, scheduleStep: due.schedule_step });
    }
    const schedule = this.config.webhookRetryScheduleMs;
    const step = due.schedule_step;
    if (step >= schedule.length) {
      return this.settle({ id: due.id, outcome: 'failed', attempt, nextAttemptAt: null, scheduleStep: step });
    }
    let delayMs = schedule[step]! * (1 - JITTER + Math.random() * 2 * JITTER);
    // 429/503 with Retry-After: honoured, within the schedule's bounds.
    if ((status === 429 || status === 503) && result.retryAfterSeconds !== undefined) {
      delayMs = Math.min(Math.max(result.retryAfterSeconds * 1000, schedule[0]!), Math.max(...schedule));
    }
    this.settle({ id: due.id, outcome: 'retry', attempt, nextAttemptAt: new Date(Date.now() + delayMs), scheduleStep: step + 1 });
  }

  private settle(record: DeliveryRecord): void {
    this.metrics.delivery(record.outcome);
    this.outcomes.push(record);
    this.flushTimer ??= setTimeout(() => void this.flush(), FLUSH_MS);
  }

  /**
   * Writes the outcomes gathered so far; one writer at a time, and each write takes everything
   * that queued up meanwhile, so recording keeps pace with delivery instead of lagging in small batches.
   */
  private flush(): Promise<void> {
    this.flushTimer = null;
    this.flushing = this.flushing.then(async () => {
      while (this.outcomes.length > 0) {
        const batch = this.outcomes.splice(0);
        for (let attempt = 0; ; attempt++) {
          try {
            await recordDeliveries(this.sql, batch);
            break;
          } catch (error) {
            // Unrecorded outcomes come due again when their lease ends (a retry, at least once).
            if (attempt >= 3 || this.stopping) {
              this.logger.error({ err: error, outcomes: batch.length }, 'recording deliveries failed');
              break;
            }
            await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
          }
        }
      }
    });
    return this.flushing;
  }

  /** Stops claiming, lets in-flight deliveries finish (up to `timeoutMs`), records them, stops the pool. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.wake();
    await this.loop;
    const deadline = Date.now() + timeoutMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    if (this.flushTimer) clearTimeout(this.flushTimer);
    await this.flush();
    await this.pool.destroy();
  }
}
