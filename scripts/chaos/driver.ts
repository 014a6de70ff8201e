// The chaos load: `concurrency` workers send, `rate` requests per second in all, a seeded mix of
// single events, batches and re-sent dedup_ids over several orgs, each request on a fresh
// connection (test/helpers/load.ts sendOne). Every event sent is recorded with what its answer
// says about it, for the reconcile: accepted (202), duplicate (409 with the original id), rejected
// (any other answer, or a refused connection: nothing reached the server) or unknown (the answer
// was lost to a kill -9: the event may or may not be stored).
import { setTimeout as sleep } from 'node:timers/promises';
import { sendOne, type LoadRequest, type Outcome } from '../../test/helpers/load.ts';
import { pick, randomInt, type Random } from './random.ts';
import type { ChaosTarget } from './target.ts';

export interface Org {
  index: number;
  id: string;
  key: string;
}

export type EventOutcome = 'accepted' | 'duplicate' | 'rejected' | 'unknown';

export interface SentEvent {
  /** Unique per event sent (its index); carried in the payload, so its row can be found. */
  token: number;
  org: number;
  dedupId: string | null;
  /** Sends a dedup_id sent before. */
  resend: boolean;
  /** For a re-send: the id the dedup_id was accepted under, when known at send time (its 409 must name it). */
  original: string | null;
  outcome: EventOutcome;
  /** The id of the 202, or the original id named by the 409. */
  id: string | null;
  /** The error code of a rejection (`refused` when the connection was refused). */
  code: string | null;
}

/** A dedup_id whose first send was accepted (id known) or lost to a kill (id null until an answer tells). */
interface DedupEntry {
  dedupId: string;
  id: string | null;
}

export interface DriverOptions {
  /** Requests per second, all workers together. */
  rate: number;
  concurrency: number;
}

/** Share of requests that re-send a dedup_id, and that are batches; the rest are single new events. */
const RESEND_SHARE = 0.15;
const BATCH_SHARE = 0.25;
const BATCH_SIZE = [2, 20] as const;
/** Share of batch items that re-send a dedup_id, and of new events that carry one. */
const BATCH_RESEND_SHARE = 0.1;
const DEDUP_SHARE = 0.3;
/** A request with no answer by then counts as stalled (the server stopped answering). */
const ANSWER_DEADLINE_MS = 30_000;
/** Answers slower than this are noted in the timeline. */
const SLOW_MS = 5_000;
/** Answers the chaos may legitimately cause besides success and 409: rate limit, overload, no database. */
const EXPECTED_REJECTIONS = new Set(['rate_limited', 'overloaded', 'database_unavailable']);

export class Driver {
  readonly events: SentEvent[] = [];
  /** Requests by answer: HTTP status, `refused`, `lost` (transport error) or `stalled`. */
  readonly answers = new Map<string, number>();
  requests = 0;
  /** Requests sent and not answered yet. */
  inFlight = 0;
  /** The longest a request waited for its answer (or its failure), ms. */
  slowestMs = 0;
  /** Failures no fault explains: a connection lost with no kill, or no answer in time (the server crashed or hung). */
  readonly failures: string[] = [];
  /** Answers other than success, 409 and the rejections faults cause (e.g. a 500), by route, status and code. */
  readonly oddAnswers = new Map<string, number>();
  private readonly dedup: DedupEntry[][];
  private stopping = false;
  private stopSignal: () => void = () => {};
  private readonly stopped = new Promise<void>((resolve) => (this.stopSignal = resolve));
  private nextSlot = 0;
  private sendWaiters: Array<() => void> = [];
  private workers: Promise<void[]> = Promise.resolve([]);

  constructor(
    private readonly target: ChaosTarget,
    private readonly orgs: readonly Org[],
    private readonly random: Random,
    private readonly options: DriverOptions,
    private readonly note: (message: string) => void,
  ) {
    this.dedup = orgs.map(() => []);
  }

  start(): void {
    this.workers = Promise.all(Array.from({ length: this.options.concurrency }, () => this.work()));
  }

  /** Stops sending; resolves once every request in flight has its answer. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.stopSignal();
    await this.workers;
  }

  /** Resolves when a worker next sends a request: a kill a few ms later catches it in flight. */
  nextSend(): Promise<void> {
    return new Promise((resolve) => this.sendWaiters.push(resolve));
  }

  private async work(): Promise<void> {
    while (!this.stopping) {
      await this.pace();
      // Checked again after each wait: a kill may come in the same turn as the restart that woke us.
      while (this.target.down && !this.stopping) await Promise.race([this.target.whenUp(), this.stopped]);
      if (this.stopping) return;
      // Read in the same tick as the send: a kill from now on bumps it.
      const generation = this.target.generation;
      const { request, events, batch } = this.nextRequest();
      this.requests++;
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<'stalled'>((resolve) => (timer = setTimeout(() => resolve('stalled'), ANSWER_DEADLINE_MS)));
      const sentAt = Date.now();
      const answer = sendOne(this.target.url, request);
      this.inFlight++;
      for (const resolve of this.sendWaiters.splice(0)) resolve();
      const result = await Promise.race([answer, stalled]);
      this.inFlight--;
      clearTimeout(timer);
      const took = Date.now() - sentAt;
      if (took > this.slowestMs) this.slowestMs = took;
      if (took > SLOW_MS) this.note(`slow answer: ${took} ms for ${request.path} (${result === 'stalled' ? 'stalled' : result.error ? result.error.message : result.reply!.status})`);
      this.record(events, batch, result, generation);
    }
  }

  /** Waits for this worker's next send slot, so that all workers together keep to `rate`. */
  private async pace(): Promise<void> {
    const now = Date.now();
    const slot = Math.max(now, this.nextSlot);
    this.nextSlot = slot + 1000 / this.options.rate;
    if (slot > now) await Promise.race([sleep(slot - now), this.stopped]);
  }

  private nextRequest(): { request: LoadRequest; events: SentEvent[]; batch: boolean } {
    const org = pick(this.random, this.orgs);
    const pool = this.dedup[org.index]!;
    const roll = this.random();
    if (roll < RESEND_SHARE && pool.length > 0) {
      const event = this.resend(org, pick(this.random, pool));
      return { request: { path: '/api/events', key: org.key, body: this.body(event) }, events: [event], batch: false };
    }
    if (roll < RESEND_SHARE + BATCH_SHARE) {
      const events: SentEvent[] = [];
      const resent = new Set<DedupEntry>();
      for (let i = randomInt(this.random, ...BATCH_SIZE); i > 0; i--) {
        const entry = pool.length > 0 && this.random() < BATCH_RESEND_SHARE ? pick(this.random, pool) : undefined;
        // Within a batch the first of two equal dedup_ids wins: keep them distinct, each judged by the log.
        if (entry && !resent.has(entry)) {
          resent.add(entry);
          events.push(this.resend(org, entry));
        } else {
          events.push(this.fresh(org));
        }
      }
      return { request: { path: '/api/events/batch', key: org.key, body: { events: events.map((event) => this.body(event)) } }, events, batch: true };
    }
    const event = this.fresh(org);
    return { request: { path: '/api/events', key: org.key, body: this.body(event) }, events: [event], batch: false };
  }

  private fresh(org: Org): SentEvent {
    const token = this.events.length;
    const dedupId = this.random() < DEDUP_SHARE ? `chaos-${token}` : null;
    const event: SentEvent = { token, org: org.index, dedupId, resend: false, original: null, outcome: 'unknown', id: null, code: null };
    this.events.push(event);
    return event;
  }

  private resend(org: Org, entry: DedupEntry): SentEvent {
    const event: SentEvent = { token: this.events.length, org: org.index, dedupId: entry.dedupId, resend: true, original: entry.id, outcome: 'unknown', id: null, code: null };
    this.events.push(event);
    return event;
  }

  private body(event: SentEvent): Record<string, unknown> {
    const payload = { org: event.org, token: event.token, text: 'x'.repeat(event.token % 200) };
    return { type: event.resend ? 'chaos.resend' : 'chaos.event', payload, ...(event.dedupId === null ? {} : { dedup_id: event.dedupId }) };
  }

  private failed(what: string): void {
    this.failures.push(what);
    // The first few go into the timeline, where the faults around them show.
    if (this.failures.length <= 5) this.note(`failure: ${what}`);
  }

  private oddAnswer(what: string): void {
    const seen = this.oddAnswers.get(what) ?? 0;
    this.oddAnswers.set(what, seen + 1);
    if (seen === 0) this.note(`answer: ${what}`);
  }

  private count(answer: string): void {
    this.answers.set(answer, (this.answers.get(answer) ?? 0) + 1);
  }

  private record(events: SentEvent[], batch: boolean, result: Outcome | 'stalled', generation: number): void {
    const route = batch ? 'POST /api/events/batch' : 'POST /api/events';
    if (result === 'stalled') {
      this.count('stalled');
      this.failed(`${route}: no answer within ${ANSWER_DEADLINE_MS / 1000} s`);
      for (const event of events) event.outcome = 'unknown';
    } else if (result.error) {
      // Refused: the connection never opened, so nothing reached the server.
      const refused = (result.error as NodeJS.ErrnoException).code === 'ECONNREFUSED';
      this.count(refused ? 'refused' : 'lost');
      if (generation === this.target.generation) this.failed(`${route}: ${result.error.message}, with no kill (${Date.now() - this.target.bootedAt} ms after the last start)`);
      for (const event of events) {
        event.outcome = refused ? 'rejected' : 'unknown';
        if (refused) event.code = 'refused';
      }
    } else {
      const { status, body, text } = result.reply!;
      this.count(String(status));
      if (batch && status === 200) {
        for (const item of body.results as Array<{ index: number; id?: string; status?: string; code?: string }>) {
          this.judge(events[item.index]!, item.status === 'accepted' ? 202 : 0, item.code ?? null, item.id ?? null, route);
        }
      } else {
        for (const event of events) this.judge(event, status, body?.code ?? null, body?.id ?? null, route, text);
      }
    }
    for (const event of events) this.remember(event);
  }

  private judge(event: SentEvent, status: number, code: string | null, id: string | null, route: string, text = ''): void {
    if (status === 202) {
      event.outcome = 'accepted';
      event.id = id;
    } else if (code === 'duplicate_event') {
      event.outcome = 'duplicate';
      event.id = id;
    } else {
      event.outcome = 'rejected';
      event.code = code ?? String(status);
      if (code === null || !EXPECTED_REJECTIONS.has(code)) this.oddAnswer(`${route}: ${status || 'item'} ${code ?? text.slice(0, 100)}`);
    }
  }

  /** Makes a dedup_id available for re-sending once its fate is accepted or unknown; learns the id of an unknown one. */
  private remember(event: SentEvent): void {
    if (event.dedupId === null) return;
    const pool = this.dedup[event.org]!;
    if (!event.resend) {
      if (event.outcome === 'accepted' || event.outcome === 'unknown') pool.push({ dedupId: event.dedupId, id: event.id });
      return;
    }
    if (event.original === null && (event.outcome === 'accepted' || event.outcome === 'duplicate')) {
      const entry = pool.find((candidate) => candidate.dedupId === event.dedupId);
      if (entry && entry.id === null) entry.id = event.id;
    }
  }
}
