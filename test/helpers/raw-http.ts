// Raw HTTP for tests that fetch cannot express: exact bytes, no Content-Type at all, a declared
// Content-Length with no body behind it, or a chunked body that is never finished. Every call has
// a deadline, so a server that hangs fails the test instead of stalling the run.
import http, { type IncomingHttpHeaders } from 'node:http';
import { assertMatchesContract } from './openapi.ts';

export interface RawReply<T = any> {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  body: T;
}

export interface RawRequest {
  method?: string;
  path: string;
  /** Sent exactly as given (plus Host and Connection, which Node adds). */
  headers?: Record<string, string>;
  /** Sent as is; a Content-Length is added unless `headers` already has one or transfer-encoding. */
  body?: string | Buffer;
  timeoutMs?: number;
}

/** The text parsed as JSON, or undefined when it is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | null {
  const value = headers[name];
  return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
}

function lower(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
}

/** Reads a response to its end; rejects if the connection closes before it is complete. */
export function readReply<T = any>(response: http.IncomingMessage): Promise<RawReply<T>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.on('error', reject);
    response.on('close', () => {
      if (!response.complete) reject(new Error(`connection closed before the response was complete (status ${response.statusCode})`));
    });
    response.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      resolve({ status: response.statusCode ?? 0, headers: response.headers, text, body: parseJson(text) as T });
    });
  });
}

/** The reply to `request`; rejects on a network error, or after `timeoutMs` (destroying the request) with `timeoutMessage`. */
function answerTo<T>(request: http.ClientRequest, timeoutMs: number, timeoutMessage: string): Promise<RawReply<T>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      request.destroy();
      reject(new Error(timeoutMessage));
    }, timeoutMs);
    const settle = <A>(how: (value: A) => void) => (value: A) => {
      clearTimeout(timer);
      how(value);
    };
    let answered = false;
    request.on('response', (response) => {
      answered = true;
      readReply<T>(response)
        .then((reply) => {
          assertMatchesContract({ method: request.method, url: request.path, status: reply.status, header: (name) => headerValue(reply.headers, name), text: reply.text });
          return reply;
        })
        .then(settle(resolve), settle(reject));
    });
    // A server that refuses early (413) may close while we are still writing the body: the write
    // then fails with EPIPE/ECONNRESET, but the answer that came first is what counts.
    request.on('error', (error) => {
      if (!answered) settle(reject)(error);
    });
  });
}

/** One request on a fresh connection; rejects on a network error or after `timeoutMs`. */
export async function rawRequest<T = any>(port: number, options: RawRequest): Promise<RawReply<T>> {
  const headers = lower(options.headers ?? {});
  const body = options.body === undefined ? undefined : Buffer.from(options.body);
  if (body !== undefined && headers['content-length'] === undefined && headers['transfer-encoding'] === undefined) {
    headers['content-length'] = String(body.length);
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  const request = http.request({ host: '127.0.0.1', port, method: options.method ?? 'POST', path: options.path, headers, agent: false });
  const answer = answerTo<T>(request, timeoutMs, `no answer within ${timeoutMs} ms to ${options.method ?? 'POST'} ${options.path}`);
  request.end(body);
  return answer;
}

export interface StreamOutcome {
  reply: RawReply;
  /** Resolves when the connection is closed (by the server, or by destroy()). */
  closed: Promise<void>;
  /** Ends our side of the connection (the request itself is never finished). */
  destroy(): void;
}

/**
 * Sends the request head and then `bytes` body bytes (chunked unless `headers` declares a
 * Content-Length), and NEVER finishes the request: no terminating chunk, or fewer bytes than
 * declared. A server that waits for the whole body therefore never answers and the call fails
 * at its deadline; a server that refuses as the body streams in answers while the request is open.
 *
 * The bytes go out in one write, sized by the caller to be just what the server needs to decide
 * (e.g. limit + 1): a server that refuses mid-body closes a connection with unread input, which
 * resets it, and a client still writing then fails with EPIPE before it reads the answer.
 */
export async function streamPartial(
  port: number,
  options: { path: string; headers?: Record<string, string>; bytes: number; fill?: number; timeoutMs?: number },
): Promise<StreamOutcome> {
  const headers = lower(options.headers ?? {});
  if (headers['content-length'] === undefined) headers['transfer-encoding'] = 'chunked';
  const timeoutMs = options.timeoutMs ?? 15_000;
  const request = http.request({ host: '127.0.0.1', port, method: 'POST', path: options.path, headers, agent: false });
  const closed = new Promise<void>((resolve) => request.on('socket', (socket) => socket.once('close', () => resolve())));
  const answer = answerTo(request, timeoutMs, `no answer within ${timeoutMs} ms after streaming ${options.bytes} bytes (unfinished) to ${options.path}`);
  request.flushHeaders();
  if (options.bytes > 0) request.write(Buffer.alloc(options.bytes, options.fill ?? 0x20));
  return { reply: await answer, closed, destroy: () => request.destroy() };
}

/** Resolves true if `promise` settles within `ms`, false otherwise. */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.then(() => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(resolve, ms, false);
    }),
  ]).finally(() => clearTimeout(timer));
}
