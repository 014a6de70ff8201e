// A webhook receiver for the delivery tests: a node:http server on 127.0.0.1:0 that records every
// request (headers, raw body, arrival time) and answers each one as its policy says: a status,
// after a delay, with a Retry-After, or never (the request hangs until the client gives up or the
// receiver closes). When `secret` is set, each delivery is verified on arrival with the
// `standardwebhooks` package, exactly as a real receiver would, and the outcome is recorded.
// Also the few API calls every webhook test makes (configure an endpoint, send, read an event).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { waitFor, type Reply, type TestServer } from './server.ts';

export interface Received {
  /** Arrival order at this receiver, from 0. */
  index: number;
  /** Date.now() when the request head arrived. */
  at: number;
  /** Date.now() when the answer was sent; undefined while pending or when it was never answered. */
  answeredAt?: number;
  /** The status answered (undefined while pending or when the request hung). */
  answeredStatus?: number;
  method: string;
  path: string;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  raw: Buffer;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  body: any;
  /** The webhook-id header ('' when absent). */
  id: string;
  /** 'ok', or why verification failed ('no secret set' when the receiver had none). */
  verification: string;
}

export interface Answer {
  /** Default 200. */
  status?: number;
  /** Answer after this many ms. */
  delayMs?: number;
  /** Sent as the Retry-After header. */
  retryAfter?: string;
  /** Never answer: the request stays open until the client aborts it or the receiver closes. */
  hang?: boolean;
  body?: string;
}

/**
 * How to answer a request. `nth` counts the requests with this webhook-id so far, from 1
 * (so `nth === 1` is the first attempt of an event).
 */
export type Policy = (request: Received, nth: number) => Answer;

export const always = (answer: Answer): Policy => () => answer;

/** Answers in turn from `answers` per webhook-id; after the list, `then` (default 200). */
export const sequence = (answers: Answer[], then: Answer = { status: 200 }): Policy => (_request, nth) => answers[nth - 1] ?? then;

/** Verifies one recorded delivery with `secret`; returns the payload, throws WebhookVerificationError. */
export function verifyDelivery(secret: string, request: Received): unknown {
  return new Webhook(secret).verify(request.raw.toString('utf8'), request.headers);
}

export class Receiver {
  readonly requests: Received[] = [];
  /** Decides each answer; may be replaced at any time (applies to requests arriving afterwards). */
  policy: Policy;
  /** When set, every arriving delivery is verified with it. */
  secret: string | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private port = 0;

  private constructor(private readonly server: http.Server, policy: Policy) {
    this.policy = policy;
  }

  static async start(policy: Policy = always({ status: 200 })): Promise<Receiver> {
    const server = http.createServer();
    const receiver = new Receiver(server, policy);
    server.on('connection', (socket) => {
      receiver.sockets.add(socket);
      socket.once('close', () => receiver.sockets.delete(socket));
    });
    server.on('request', (request, response) => receiver.handle(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    receiver.port = (server.address() as AddressInfo).port;
    return receiver;
  }

  /** The URL to configure as the webhook endpoint. */
  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const at = Date.now();
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const raw = Buffer.concat(chunks);
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        body = undefined;
      }
      const id = headers['webhook-id'] ?? '';
      let verification = 'no secret set';
      if (this.secret !== null) {
        try {
          new Webhook(this.secret).verify(raw.toString('utf8'), headers);
          verification = 'ok';
        } catch (error) {
          verification = `${(error as Error).name}: ${(error as Error).message}`;
        }
      }
      const received: Received = { index: this.requests.length, at, method: request.method ?? '', path: request.url ?? '', headers, raw, body, id, verification };
      this.requests.push(received);
      const nth = this.requests.filter((other) => other.id === id).length;
      let answer: Answer;
      try {
        answer = this.policy(received, nth);
      } catch {
        answer = { status: 500 };
      }
      if (answer.hang) return;
      const send = () => {
        const status = answer.status ?? 200;
        const extra: Record<string, string> = answer.retryAfter === undefined ? {} : { 'retry-after': answer.retryAfter };
        response.writeHead(status, { 'content-type': 'text/plain', ...extra });
        response.end(answer.body ?? (status >= 200 && status < 300 ? 'ok' : 'no'));
        received.answeredAt = Date.now();
        received.answeredStatus = status;
      };
      if (answer.delayMs) {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          send();
        }, answer.delayMs);
        this.timers.add(timer);
      } else {
        send();
      }
    });
  }

  /** Requests carrying this webhook-id, in arrival order. */
  byId(id: string): Received[] {
    return this.requests.filter((request) => request.id === id);
  }

  /** The distinct webhook-ids received. */
  ids(): Set<string> {
    return new Set(this.requests.map((request) => request.id));
  }

  /** Waits until `probe` holds over the recorded requests (polled every 50 ms). */
  async until(what: string, probe: (requests: Received[]) => boolean, timeoutMs = 10_000): Promise<void> {
    await waitFor(what, () => probe(this.requests), timeoutMs, 50);
  }

  /** Waits for the `count`-th request with this webhook-id and returns it. */
  async nth(id: string, count: number, timeoutMs = 10_000): Promise<Received> {
    await this.until(`delivery #${count} of ${id}`, () => this.byId(id).length >= count, timeoutMs);
    return this.byId(id)[count - 1]!;
  }

  /** Throws unless every request so far was verified on arrival with the receiver's secret. */
  assertAllVerified(): void {
    const bad = this.requests.filter((request) => request.verification !== 'ok');
    if (bad.length > 0) {
      throw new Error(`${bad.length} of ${this.requests.length} deliveries did not verify: ${bad.slice(0, 5).map((r) => `#${r.index} ${r.id}: ${r.verification}`).join('; ')}`);
    }
  }

  /** Stops listening and cuts every connection, including hanging requests. */
  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    this.server.closeAllConnections();
    await closed;
  }
}

// --- API calls shared by the webhook tests -------------------------------------------------------

export const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** POST /api/webhook/config; throws unless 200. Sets the receiver's secret when one is given. */
export async function configureEndpoint(server: TestServer, key: string, receiver: Receiver | string): Promise<{ webhook_url: string; secret: string; updated_at: string }> {
  const url = typeof receiver === 'string' ? receiver : receiver.url;
  const reply = await server.request('POST', '/api/webhook/config', { key, body: { webhook_url: url } });
  if (reply.status !== 200) throw new Error(`configuring ${url} failed: ${reply.status} ${reply.text}`);
  if (typeof receiver !== 'string') receiver.secret = reply.body.secret;
  return reply.body;
}

export interface Sent {
  id: string;
  received_at: string;
  /** Date.now() just before the request was sent. */
  sentAt: number;
}

/** POST /api/events; throws unless 202. */
export async function sendEvent(server: TestServer, key: string, type = 'test.event', payload: Record<string, unknown> = {}): Promise<Sent> {
  const sentAt = Date.now();
  const reply = await server.request('POST', '/api/events', { key, body: { type, payload } });
  if (reply.status !== 202) throw new Error(`POST /api/events: ${reply.status} ${reply.text}`);
  return { id: reply.body.id, received_at: reply.body.received_at, sentAt };
}

/** GET /api/events/:id; throws unless 200. */
export async function getEvent(server: TestServer, key: string, id: string): Promise<any> {
  const reply: Reply = await server.request('GET', `/api/events/${id}`, { key });
  if (reply.status !== 200) throw new Error(`GET /api/events/${id}: ${reply.status} ${reply.text}`);
  return reply.body;
}

/** Polls GET /api/events/:id until `probe(event)` holds; returns the event. */
export async function waitForEvent(server: TestServer, key: string, id: string, what: string, probe: (event: any) => boolean, timeoutMs = 10_000): Promise<any> {
  let last: any;
  try {
    return await waitFor(what, async () => {
      last = await getEvent(server, key, id);
      return probe(last) ? last : null;
    }, timeoutMs, 50);
  } catch (error) {
    throw new Error(`${(error as Error).message}; last seen: ${JSON.stringify(last)}`);
  }
}

export function waitForStatus(server: TestServer, key: string, id: string, status: string, timeoutMs = 10_000): Promise<any> {
  return waitForEvent(server, key, id, `event ${id} to be ${status}`, (event) => event.status === status, timeoutMs);
}
