// HTTP on a brand-new TCP connection per request (raw-http.ts: node:http, no agent,
// `Connection: close`), sending exactly the headers given: with SO_REUSEPORT the kernel spreads
// new connections over the acceptor threads, so many fresh requests reach every thread. Also a
// small parser for the Prometheus text format of GET /metrics.
import net from 'node:net';
import { parseJson, rawRequest } from './raw-http.ts';
import type { Reply } from './server.ts';

export interface FreshRequestOptions {
  key?: string;
  /** JSON-encoded, with `content-type: application/json` unless a content-type header is given. */
  body?: unknown;
  /** Sent as is, with no Content-Type unless one is given in `headers`. */
  raw?: string | Buffer;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/** One request on its own connection; the reply has the harness's Reply shape (fetch Headers). */
export async function freshRequest<T = any>(port: number, method: string, route: string, options: FreshRequestOptions = {}): Promise<Reply<T>> {
  const headers: Record<string, string> = { connection: 'close', ...options.headers };
  if (options.key !== undefined) headers['x-api-key'] = options.key;
  let body: string | Buffer | undefined = options.raw;
  if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    if (!Object.keys(headers).some((name) => name.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  }
  const reply = await rawRequest<T>(port, { method, path: route, headers, body, timeoutMs: options.timeoutMs });
  const replyHeaders = new Headers();
  for (const [name, value] of Object.entries(reply.headers)) {
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) replyHeaders.append(name, item);
  }
  return { status: reply.status, headers: replyHeaders, body: reply.body, text: reply.text };
}

/**
 * Writes `head` (request line and headers, without the blank line) and then `body` bytes on a raw
 * socket, and reads one response (by Content-Length, or until the server closes). For requests
 * no HTTP client would send, e.g. a Content-Length with no body behind it.
 */
export function rawExchange<T = any>(port: number, head: string[], body: string | Buffer = '', timeoutMs = 10_000): Promise<Reply<T>> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`raw request ${head[0]}: no complete answer in time`)), timeoutMs);
    const parse = (): Reply<T> | null => {
      const data = Buffer.concat(chunks);
      const end = data.indexOf('\r\n\r\n');
      if (end === -1) return null;
      const [statusLine, ...lines] = data.subarray(0, end).toString('latin1').split('\r\n');
      const headers = new Headers();
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
      const length = headers.get('content-length');
      const rest = data.subarray(end + 4);
      if (length === null ? !socket.readableEnded : rest.length < Number(length)) return null;
      const text = rest.subarray(0, length === null ? rest.length : Number(length)).toString('utf8');
      return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0), headers, body: parseJson(text) as T, text };
    };
    const finish = (error: Error | null, reply?: Reply<T>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(reply!);
    };
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const reply = parse();
      if (reply) finish(null, reply);
    });
    socket.on('end', () => {
      const reply = parse();
      finish(reply ? null : new Error(`raw request ${head[0]}: connection closed before a complete answer`), reply ?? undefined);
    });
    socket.on('error', (error) => finish(error));
    socket.write(`${head.join('\r\n')}\r\n\r\n`);
    if (body.length > 0) socket.write(body);
  });
}

/** Runs `count` fresh-connection requests, `concurrency` at a time, in order of index. */
export async function freshRequests<T = any>(count: number, concurrency: number, send: (index: number) => Promise<Reply<T>>): Promise<Reply<T>[]> {
  const replies: Reply<T>[] = new Array(count);
  let next = 0;
  const lane = async () => {
    while (next < count) {
      const index = next++;
      replies[index] = await send(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return replies;
}

/** Prometheus text exposition → Map of `name{labels as written}` → value. */
export function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!match) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    const value = match[2] === '+Inf' ? Infinity : match[2] === '-Inf' ? -Infinity : Number(match[2]);
    samples.set(match[1]!, value);
  }
  return samples;
}

/** The value of one sample; throws if the series is absent. */
export function sample(samples: Map<string, number>, series: string): number {
  const value = samples.get(series);
  if (value === undefined) {
    const family = series.split('{')[0]!;
    const near = [...samples.keys()].filter((key) => key.startsWith(family)).slice(0, 20);
    throw new Error(`metric ${series} not found; series of that family: ${near.join(', ') || '(none)'}`);
  }
  return value;
}
