// The soak's traffic, all at once for the whole run:
//   ingest   paced single-event POSTs over keep-alive sockets (native-bench PacedClient) to orgs
//            without a webhook endpoint;
//   webhook  the same, to orgs whose endpoints are the bench's receiver thread (native-bench/receiver-thread.ts);
//   batch    POST /api/events/batch (native-bench preload) to the inbox orgs, paced per 200 ms;
//   inbox    one consumer reading the inbox orgs' pending events and acking them, back to back;
//   limited  5 events/s to a free-tier org (100/min): past its burst, 429s by design.
// A PacedClient keeps a slot per request, so each paced stream runs as consecutive clients of
// SEGMENT_S seconds (started on a fixed schedule, so one's tail overlaps the next's start and
// the rate stays exact). The receiver thread keeps one webhook-id per delivery, a few MB per hour.
import { benchClock, EVENT, PacedClient, preload, sleep, StatusCounter } from '../../native-bench/lib.ts';
import { configureEndpoints, ReceiverThread } from '../../native-bench/receiver-thread.ts';
import type { LoadCounters } from './sampler.ts';

const SEGMENT_S = 10;
/** How long a segment may run past its schedule; what is unanswered then counts as late. */
const SEGMENT_GRACE_MS = 10_000;
const BATCH_PACE_MS = 200;
const INBOX_PAGE = 500;
/** The inbox consumer's pause when it found nothing to ack. */
const INBOX_IDLE_MS = 200;
const BATCH_EVENT = JSON.stringify({ ...EVENT, type: 'soak.batch' });
const REQUEST_TIMEOUT_MS = 30_000;

export interface JsonReply {
  status: number;
  body: any;
}

/** One JSON request with fetch (keep-alive); a transport error or timeout rejects. */
export async function api(
  port: number, method: string, route: string, options: { key?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<JsonReply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers['x-api-key'] = options.key;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`http://127.0.0.1:${port}${route}`, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

/** Paced single-event POSTs at `rate` per second over `keys`, for `seconds`, in segments. */
class PacedStream {
  readonly statuses = new StatusCounter();
  /** Connections that failed mid-request (reset, closed, unparseable answer). */
  errors = 0;
  /**
   * Requests not answered by their segment's deadline (SEGMENT_GRACE_MS after its last is due):
   * never sent because every connection stayed busy, or still in flight when the deadline cut
   * them. The server fell that far behind the schedule; the rate check sees it.
   */
  late = 0;
  private readonly running = new Set<PacedClient>();

  constructor(
    private readonly port: number,
    private readonly keys: string[],
    private readonly type: string,
    private readonly rate: number,
    private readonly connections: number,
  ) {}

  async run(seconds: number, startedAt: number, stopped: () => boolean): Promise<void> {
    const segments: Promise<void>[] = [];
    for (let start = 0; start < seconds && !stopped(); start += SEGMENT_S) {
      await sleep(startedAt + start * 1000 - benchClock());
      const total = Math.round(this.rate * Math.min(SEGMENT_S, seconds - start));
      if (total === 0) continue;
      const client = new PacedClient(this.port, this.keys, this.type, this.rate, total, this.connections);
      this.running.add(client);
      segments.push(
        client.run(Math.min(SEGMENT_S, seconds - start) * 1000 + SEGMENT_GRACE_MS).then(
          () => this.settle(client),
          () => {
            // The connections could not be opened: none of the segment's requests went out.
            this.running.delete(client);
            this.errors += total;
          },
        ),
      );
    }
    await Promise.all(segments);
  }

  private settle(client: PacedClient): void {
    this.running.delete(client);
    for (const [status, count] of client.statuses.counts) this.statuses.counts.set(status, (this.statuses.counts.get(status) ?? 0) + count);
    // PacedClient adds what was unanswered at its deadline to its errors: tell them apart.
    const late = client.total - client.completed;
    this.late += late;
    this.errors += client.errors - late;
  }

  /** Answers per status so far, the running segments included. */
  count(status: number): number {
    let n = this.statuses.counts.get(status) ?? 0;
    for (const client of this.running) n += client.statuses.counts.get(status) ?? 0;
    return n;
  }

  /** Requests answered or failed so far (late ones not included). */
  get requests(): number {
    let n = this.statuses.total + this.errors;
    for (const client of this.running) n += client.statuses.total + client.errors;
    return n;
  }

  /** Answers other than `allowed`, plus errors, so far. */
  unexpected(allowed: readonly number[]): number {
    let n = this.errors;
    const add = (counts: Map<number, number>) => {
      for (const [status, count] of counts) if (!allowed.includes(status)) n += count;
    };
    add(this.statuses.counts);
    for (const client of this.running) {
      add(client.statuses.counts);
      n += client.errors;
    }
    return n;
  }

  /** Status → count, e.g. for the summary. */
  describe(): string {
    return this.statuses.describeNon202();
  }
}

/** Distinct problems kept per stream: enough to diagnose, bounded over a long run. */
const MAX_PROBLEMS = 20;

function noteProblem(problems: Set<string>, what: string): void {
  if (problems.size < MAX_PROBLEMS) problems.add(what);
}

/** POST /api/events/batch to the inbox orgs at `rate` events per second. */
class BatchStream {
  /** Events whose requests have been answered (or failed), and how many of them were accepted. */
  sent = 0;
  accepted = 0;
  requests = 0;
  readonly problems = new Set<string>();
  private nextKey = 0;

  constructor(
    private readonly port: number,
    private readonly keys: string[],
    private readonly rate: number,
    private readonly batchSize: number,
  ) {}

  async run(seconds: number, startedAt: number, stopped: () => boolean): Promise<void> {
    let scheduled = 0;
    while (!stopped()) {
      const elapsed = Math.min(seconds, (benchClock() - startedAt) / 1000);
      const due = Math.floor(elapsed * this.rate) - scheduled;
      if (due > 0) {
        // preload() starts each call with its first key: rotate them, so every inbox org gets its share.
        const keys = [...this.keys.slice(this.nextKey), ...this.keys.slice(0, this.nextKey)];
        const requests = Math.ceil(due / this.batchSize);
        this.nextKey = (this.nextKey + requests) % this.keys.length;
        scheduled += due;
        try {
          const result = await preload(this.port, keys, due, 1, this.batchSize, BATCH_EVENT);
          this.accepted += result.accepted;
          for (const problem of result.problems) noteProblem(this.problems, problem);
        } catch (error) {
          noteProblem(this.problems, `batch request failed: ${String(error)}`);
        }
        this.sent += due;
        this.requests += requests;
      }
      if (elapsed >= seconds) return;
      await sleep(BATCH_PACE_MS);
    }
  }
}

/** Reads the inbox orgs' pending events, oldest first, and acks them, one request at a time. */
class InboxConsumer {
  acked = 0;
  requests = 0;
  errors = 0;
  readonly problems = new Set<string>();
  private slowest = 0;
  private fewestUnacked = Number.POSITIVE_INFINITY;

  constructor(
    private readonly port: number,
    private readonly keys: string[],
    private readonly unacked: () => number,
  ) {}

  /**
   * The fewest unacked events seen since the previous call (after each ack, and now). Batches arrive
   * every 200 ms, so the instant count saws between 0 and a batch whatever the consumer does; its low
   * point rises only when the consumer falls behind.
   */
  takeFewestUnacked(): number {
    const fewest = Math.min(this.fewestUnacked, this.unacked());
    this.fewestUnacked = Number.POSITIVE_INFINITY;
    return fewest;
  }

  /** The slowest read + ack cycle since the previous call. */
  takeSlowest(): number {
    const slowest = this.slowest;
    this.slowest = 0;
    return slowest;
  }

  private fail(what: string): void {
    this.errors++;
    noteProblem(this.problems, what);
  }

  async run(stopped: () => boolean): Promise<void> {
    for (let i = 0; !stopped(); i++) {
      const key = this.keys[i % this.keys.length]!;
      const started = benchClock();
      let ids: string[] = [];
      try {
        this.requests++;
        const page = await api(this.port, 'GET', `/api/inbox?limit=${INBOX_PAGE}`, { key });
        if (page.status !== 200) this.fail(`GET /api/inbox: ${page.status} ${JSON.stringify(page.body).slice(0, 200)}`);
        else ids = (page.body.events as Array<{ id: string }>).map((event) => event.id);
        if (ids.length > 0) {
          this.requests++;
          const ack = await api(this.port, 'POST', '/api/ack', { key, body: { ids } });
          if (ack.status !== 200) this.fail(`POST /api/ack: ${ack.status} ${JSON.stringify(ack.body).slice(0, 200)}`);
          else this.acked += (ack.body.acknowledged as string[]).length;
          this.fewestUnacked = Math.min(this.fewestUnacked, this.unacked());
        }
      } catch (error) {
        this.fail(`inbox/ack request failed: ${String(error)}`);
      }
      this.slowest = Math.max(this.slowest, benchClock() - started);
      if (ids.length === 0) await sleep(INBOX_IDLE_MS);
    }
  }
}

/**
 * The webhook orgs' endpoints: the bench's receiver in a worker thread (one port per org, answering 200
 * and verifying every signature), so the load generator's own event loop cannot slow the answers.
 */
class Endpoints {
  private constructor(private readonly receiver: ReceiverThread) {}

  static async start(port: number, keys: string[]): Promise<Endpoints> {
    const receiver = await ReceiverThread.start(keys.length);
    try {
      await configureEndpoints(port, keys, receiver);
    } catch (error) {
      await receiver.stop();
      throw error;
    }
    return new Endpoints(receiver);
  }

  /** Requests received (a redelivery counts again; the server's `retry` counter shows those). */
  get delivered(): number {
    return this.receiver.requests;
  }

  get badSignatures(): number {
    return this.receiver.badSignatures;
  }

  close(): Promise<void> {
    return this.receiver.stop();
  }
}

export interface LoadPlan {
  /** Events per second of each stream. */
  ingestRate: number;
  webhookRate: number;
  batchRate: number;
  limitedRate: number;
  batchSize: number;
  connections: number;
  keys: { ingest: string[]; webhook: string[]; inbox: string[]; limited: string };
}

export interface LoadTotals {
  requests: number;
  errors: number;
  designed429: number;
  /** One line per stream: what it sent and what came back. */
  lines: string[];
  /** Distinct problems seen (first few of each kind). */
  problems: string[];
}

export class SoakLoad {
  private stopping = false;
  private readonly ingest: PacedStream;
  private readonly webhook: PacedStream;
  private readonly limited: PacedStream;
  private readonly batches: BatchStream;
  private readonly inbox: InboxConsumer;

  private constructor(
    private readonly plan: LoadPlan,
    private readonly endpoints: Endpoints,
    port: number,
  ) {
    this.ingest = new PacedStream(port, plan.keys.ingest, 'soak.ingest', plan.ingestRate, plan.connections);
    this.webhook = new PacedStream(port, plan.keys.webhook, 'soak.webhook', plan.webhookRate, Math.max(1, Math.ceil(plan.connections / 8)));
    this.limited = new PacedStream(port, [plan.keys.limited], 'soak.limited', plan.limitedRate, 1);
    this.batches = new BatchStream(port, plan.keys.inbox, plan.batchRate, plan.batchSize);
    this.inbox = new InboxConsumer(port, plan.keys.inbox, () => this.batches.accepted - this.inbox.acked);
  }

  /** Starts the webhook endpoints; the load itself starts with run(). */
  static async prepare(port: number, plan: LoadPlan): Promise<SoakLoad> {
    return new SoakLoad(plan, await Endpoints.start(port, plan.keys.webhook), port);
  }

  /** Offers the load for `seconds` from `startedAt` (benchClock), or until stop(). */
  async run(seconds: number, startedAt: number): Promise<void> {
    const stopped = () => this.stopping;
    const inbox = this.inbox.run(stopped);
    await Promise.all([
      this.ingest.run(seconds, startedAt, stopped),
      this.webhook.run(seconds, startedAt, stopped),
      this.limited.run(seconds, startedAt, stopped),
      this.batches.run(seconds, startedAt, stopped),
    ]);
    this.stopping = true;
    await inbox;
  }

  stop(): void {
    this.stopping = true;
  }

  counters(): LoadCounters {
    const { errors, designed429 } = this.totals();
    return {
      errors,
      designed429,
      webhookAccepted: this.webhook.count(202),
      delivered: this.endpoints.delivered,
      inboxUnacked: this.inbox.takeFewestUnacked(),
      inboxMaxMs: this.inbox.takeSlowest(),
    };
  }

  totals(): LoadTotals {
    const batchErrors = this.batches.sent - this.batches.accepted;
    const requests = this.ingest.requests + this.webhook.requests + this.limited.requests + this.batches.sent + this.inbox.requests;
    const errors = this.ingest.unexpected([202]) + this.webhook.unexpected([202]) + this.limited.unexpected([202, 429])
      + batchErrors + this.inbox.errors + this.endpoints.badSignatures;
    const lines = [
      `ingest: ${this.ingest.requests} requests, non-202 ${this.ingest.describe()}, socket errors ${this.ingest.errors}, not answered by the deadline ${this.ingest.late}`,
      `webhook orgs: ${this.webhook.requests} requests, non-202 ${this.webhook.describe()}, socket errors ${this.webhook.errors}, not answered by the deadline ${this.webhook.late}; ${this.endpoints.delivered} deliveries verified, ${this.endpoints.badSignatures} did not verify`,
      `batches: ${this.batches.requests} requests of up to ${this.plan.batchSize}, ${this.batches.accepted} of ${this.batches.sent} events accepted`,
      `inbox: ${this.inbox.requests} reads and acks, ${this.inbox.acked} events acknowledged, ${this.inbox.errors} failed`,
      `limited (free tier, 429 by design): ${this.limited.count(202)} accepted, ${this.limited.count(429)} answered 429, other ${this.limited.unexpected([202, 429])}`,
    ];
    const problems = [...this.batches.problems, ...this.inbox.problems];
    return { requests, errors, designed429: this.limited.count(429), lines, problems };
  }

  async close(): Promise<void> {
    this.stop();
    await this.endpoints.close();
  }
}
