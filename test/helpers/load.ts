// Concurrent load for the concurrency and durability tests: every request goes over its own TCP
// connection (`Connection: close`), so with ACCEPTOR_THREADS > 1 the kernel's SO_REUSEPORT hash
// spreads them over the acceptor threads. burst() opens all connections first and only then writes
// the requests, so they really race inside the server.
import http from 'node:http';
import net from 'node:net';
import { readReply, type RawReply } from './raw-http.ts';

export interface LoadRequest {
  method?: string;
  path: string;
  key?: string;
  /** JSON-encoded and sent with `Content-Type: application/json`. */
  body?: unknown;
  headers?: Record<string, string>;
}

export interface LoadReply<T = any> extends RawReply<T> {
  /** Wall-clock time (ms) the reply was complete. */
  at: number;
}

export interface Outcome<T = any> {
  request: LoadRequest;
  reply?: LoadReply<T>;
  error?: Error;
}

function target(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: Number(parsed.port) };
}

function connectSocket(url: string): Promise<net.Socket> {
  const { host, port } = target(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

interface Transport extends Pick<http.RequestOptions, 'agent' | 'createConnection'> {
  /** Sent unless the request has its own. */
  headers?: Record<string, string>;
  /** Fires once the request has been handed to the kernel. */
  onWritten?: () => void;
}

/**
 * Sends `request` through the given agent or connection and resolves with the outcome once the
 * reply is complete. Never rejects: a transport error (refused, reset, hang up, a reply cut
 * short) becomes `outcome.error`.
 */
function exchange<T>(url: string, request: LoadRequest, { headers: defaults, onWritten, ...transport }: Transport): Promise<Outcome<T>> {
  const headers: Record<string, string> = { ...defaults, ...request.headers };
  if (request.key !== undefined) headers['x-api-key'] = request.key;
  const payload = request.body === undefined ? undefined : JSON.stringify(request.body);
  if (payload !== undefined) {
    headers['content-type'] ??= 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve) => {
    const req = http.request({ ...target(url), ...transport, method: request.method ?? 'POST', path: request.path, headers });
    req.on('response', (res) => {
      readReply<T>(res).then(
        (reply) => resolve({ request, reply: { ...reply, at: Date.now() } }),
        (error: Error) => resolve({ request, error }),
      );
    });
    req.on('error', (error) => resolve({ request, error }));
    req.end(payload, onWritten);
  });
}

/**
 * Sends one request over `socket` (or a fresh connection) and resolves with the reply.
 * Never rejects: a transport error (refused, reset, hang up) becomes `outcome.error`.
 */
export function sendOne<T = any>(url: string, request: LoadRequest, socket?: net.Socket): Promise<Outcome<T>> {
  return exchange<T>(url, request, { agent: false, headers: { connection: 'close' }, ...(socket ? { createConnection: () => socket } : {}) });
}

export interface BurstOptions<T> {
  /** Called as each outcome arrives (e.g. to crash the server mid-burst). */
  onOutcome?: (outcome: Outcome<T>, index: number) => void;
}

/**
 * Opens one connection per request, waits until all are established, then writes every request
 * in the same tick. Resolves with the outcomes in request order.
 */
export async function burst<T = any>(url: string, requests: readonly LoadRequest[], options: BurstOptions<T> = {}): Promise<Outcome<T>[]> {
  const sockets = await Promise.all(requests.map(() => connectSocket(url)));
  return Promise.all(
    requests.map(async (request, index) => {
      const outcome = await sendOne<T>(url, request, sockets[index]);
      options.onOutcome?.(outcome, index);
      return outcome;
    }),
  );
}

export interface SustainedLoad<T> {
  /** Every outcome so far, in completion order. */
  readonly outcomes: Outcome<T>[];
  /** Resolves once every worker has ended (after stop(), or on transport errors). */
  readonly finished: Promise<Outcome<T>[]>;
  /** Stops issuing requests and resolves once every outstanding one has settled. */
  stop(): Promise<Outcome<T>[]>;
}

/**
 * Keeps `concurrency` requests outstanding at all times (each on a fresh connection) until
 * stop(), or until a worker sees a transport error (the server is gone). `make(n)` builds the
 * n-th request.
 */
export function sustain<T = any>(
  url: string,
  concurrency: number,
  make: (n: number) => LoadRequest,
  onOutcome?: (outcome: Outcome<T>) => void,
): SustainedLoad<T> {
  const outcomes: Outcome<T>[] = [];
  let stopped = false;
  let issued = 0;
  const worker = async () => {
    while (!stopped) {
      const outcome = await sendOne<T>(url, make(issued++));
      outcomes.push(outcome);
      onOutcome?.(outcome);
      if (outcome.error) return;
    }
  };
  const workers = Promise.all(Array.from({ length: concurrency }, worker));
  return {
    outcomes,
    finished: workers.then(() => outcomes),
    async stop() {
      stopped = true;
      await workers;
      return outcomes;
    },
  };
}

/**
 * Opens `count` keep-alive connections and returns a client that sends one request on each,
 * all in the same tick. Used to put requests on connections the server already accepted.
 */
export async function openConnections(url: string, count: number): Promise<KeepAliveClients> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: count, maxFreeSockets: count });
  return new KeepAliveClients(url, agent, count);
}

export class KeepAliveClients {
  constructor(
    private readonly url: string,
    private readonly agent: http.Agent,
    readonly count: number,
  ) {}

  /**
   * Sends `requests` (at most `count`) concurrently through the pool. `onWritten` fires once every
   * request has been handed to the kernel.
   */
  send<T = any>(requests: readonly LoadRequest[], onWritten?: () => void): Promise<Outcome<T>[]> {
    let written = 0;
    return Promise.all(
      requests.map((request) =>
        exchange<T>(this.url, request, {
          agent: this.agent,
          onWritten: () => {
            if (++written === requests.length) onWritten?.();
          },
        }),
      ),
    );
  }

  /** Sockets currently open in the pool (free or busy). */
  openSockets(): number {
    const count = (table: NodeJS.ReadOnlyDict<unknown[]>) => Object.values(table).reduce((sum, list) => sum + (list?.length ?? 0), 0);
    return count(this.agent.freeSockets) + count(this.agent.sockets);
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Counts outcomes by HTTP status (`error` for transport errors). */
export function tally(outcomes: readonly Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const outcome of outcomes) {
    const label = outcome.reply ? String(outcome.reply.status) : 'error';
    counts[label] = (counts[label] ?? 0) + 1;
  }
  return counts;
}

/** A header as a single string (node lowercases names). */
export function header(reply: LoadReply, name: string): string | undefined {
  const value = reply.headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}
