// Attacks below HTTP: bytes on a raw socket (protocol garbage, pipelining, smuggling shapes, huge
// header blocks) and slowloris connections that trickle a request. uWS answers none of the
// protocol violations: it stops reading and closes the connection at its idle timeout (10 s,
// checked every 4 s, so 8..12 s; body bytes trickling in do not reset it). So an attack either gets
// answers (parsed and checked like any other) or the connection goes quiet; a quiet connection is
// handed to `Lingering`, which checks that the server closes it in time while the fuzzing goes on.
import net from 'node:net';
import fc from 'fast-check';
import { parseJson } from '../helpers/raw-http.ts';

/** Stands for the fuzzing org's API key in attack bytes; replaced when the attack is sent. */
const KEY_PLACEHOLDER = '{{API_KEY}}';

/** How long the server may keep a quiet connection after the last byte we sent (uWS: at most ~14 s, plus slack for a busy machine). */
export const SERVER_CLOSE_DEADLINE_MS = 20_000;

export interface ParsedReply {
  status: number;
  headers: Record<string, string>;
  text: string;
  body: any;
}

export interface RawAttack {
  label: string;
  /** Written in order, `gapMs` apart (split writes land in separate TCP segments). */
  segments: Buffer[];
  gapMs: number;
  /** At most this many answers are allowed (a smuggled request inside a body must not be answered). */
  maxReplies?: number;
  /**
   * Valid requests ahead of any garbage: each must be answered, unless the server closes the
   * connection (uWS does when a request is pipelined behind an answer still pending).
   */
  minReplies?: number;
}

export interface RawOutcome {
  replies: ParsedReply[];
  /** The server closed (FIN or reset) within the quiet window. */
  closed: boolean;
  /** Unparseable bytes the server sent (should never happen). */
  junk: string;
  /** Still open after the quiet window: the caller hands it to Lingering. */
  socket: net.Socket | null;
}

/** Parses complete HTTP/1.1 responses off the front of `data`; returns them and the rest. */
function parseResponses(data: Buffer): { replies: ParsedReply[]; rest: Buffer } {
  const replies: ParsedReply[] = [];
  let rest = data;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) break;
    const [statusLine, ...lines] = rest.subarray(0, end).toString('latin1').split('\r\n');
    const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '');
    if (!match) break;
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim().toLowerCase();
      headers[name] = headers[name] === undefined ? line.slice(colon + 1).trim() : `${headers[name]}, ${line.slice(colon + 1).trim()}`;
    }
    const status = Number(match[1]);
    const length = status === 204 || status === 304 ? 0 : Number(headers['content-length'] ?? NaN);
    // uWS always frames with Content-Length; anything else cannot be split reliably.
    if (!Number.isFinite(length) || rest.length < end + 4 + length) break;
    const text = rest.subarray(end + 4, end + 4 + length).toString('utf8');
    replies.push({ status, headers, text, body: parseJson(text) });
    rest = rest.subarray(end + 4 + length);
  }
  return { replies, rest };
}

/**
 * Sends the attack and collects what comes back until the server closes, or until nothing has
 * arrived for `quietMs` after the last write. A connection still open then is returned open.
 */
export function sendAttack(port: number, attack: RawAttack, apiKey: string, quietMs = 250): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let quiet: NodeJS.Timeout | undefined;
    let writing = true;
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(quiet);
      const { replies, rest } = parseResponses(data);
      socket.removeAllListeners('data');
      resolve({ replies, closed, junk: rest.toString('latin1').slice(0, 200), socket: closed ? null : socket });
    };
    const rearm = () => {
      clearTimeout(quiet);
      if (!writing) quiet = setTimeout(() => finish(false), quietMs);
    };
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      rearm();
    });
    socket.once('close', () => finish(true));
    // A reset while we still write (the server refused and closed) counts as closed; so does a
    // refused connection, which the health checks between batches then report.
    socket.on('error', () => finish(true));
    socket.once('connect', async () => {
      for (const [i, segment] of attack.segments.entries()) {
        if (settled || socket.destroyed) break;
        if (i > 0 && attack.gapMs > 0) await new Promise((done) => setTimeout(done, attack.gapMs));
        socket.write(Buffer.from(segment.toString('latin1').replaceAll(KEY_PLACEHOLDER, apiKey), 'latin1'));
      }
      writing = false;
      rearm();
    });
  });
}

/** Quiet connections the server still has to close (a protocol violation, an idle keep-alive). */
export class Lingering {
  private readonly open = new Map<net.Socket, { label: string; since: number; closed: Promise<number> }>();

  add(socket: net.Socket, label: string): void {
    const since = Date.now();
    const closed = new Promise<number>((resolve) => {
      if (socket.destroyed) resolve(0);
      socket.once('close', () => resolve(Date.now() - since));
      socket.on('error', () => {});
      // Whatever the server still says is read and dropped, so its writes never block.
      socket.on('data', () => {});
    });
    this.open.set(socket, { label, since, closed });
  }

  get size(): number {
    return this.open.size;
  }

  /**
   * Waits until the server has closed every connection; returns a line for each it left open past
   * SERVER_CLOSE_DEADLINE_MS (those are then destroyed here), and the longest time one stayed open.
   */
  async drain(): Promise<{ leftOpen: string[]; longestMs: number }> {
    const leftOpen: string[] = [];
    let longestMs = 0;
    await Promise.all(
      [...this.open].map(async ([socket, { label, since, closed }]) => {
        const remaining = Math.max(0, since + SERVER_CLOSE_DEADLINE_MS - Date.now());
        let timer: NodeJS.Timeout | undefined;
        const took = await Promise.race([closed, new Promise<null>((resolve) => (timer = setTimeout(resolve, remaining, null)))]);
        clearTimeout(timer);
        if (took === null) {
          leftOpen.push(`${label}: still open ${Date.now() - since} ms after our last byte`);
          socket.destroy();
        } else {
          longestMs = Math.max(longestMs, took);
        }
      }),
    );
    this.open.clear();
    return { leftOpen, longestMs };
  }

  destroyAll(): void {
    for (const socket of this.open.keys()) socket.destroy();
    this.open.clear();
  }
}

// ---- attack generators -------------------------------------------------------------------------------------

const crlf = (...lines: string[]) => `${lines.join('\r\n')}\r\n\r\n`;
const get = (path: string, ...headers: string[]) => crlf(`GET ${path} HTTP/1.1`, 'Host: fuzz', ...headers);
const post = (path: string, body: string, ...headers: string[]) =>
  crlf(`POST ${path} HTTP/1.1`, 'Host: fuzz', `X-API-Key: ${KEY_PLACEHOLDER}`, 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`, ...headers) + body;

/** Requests the server must answer (each with a JSON answer, none a 5xx). */
const answerable = fc.constantFrom(
  get('/health'),
  get('/health/ready'),
  get('/api/keys', `X-API-Key: ${KEY_PLACEHOLDER}`),
  get('/api/inbox?limit=1&type=%27%20OR%201%3D1--', `X-API-Key: ${KEY_PLACEHOLDER}`),
  get('/api/events/not-a-uuid', `X-API-Key: ${KEY_PLACEHOLDER}`),
  get('/nope/../../etc/passwd'),
  post('/api/events', '{"type":"x","payload":'),
  post('/api/events', '{"__proto__":{"type":"x","payload":{}}}'),
  post('/api/ack', '{"ids":["../../etc/passwd"]}'),
  crlf('DELETE /api/keys HTTP/1.1', 'Host: fuzz'),
  // Refused before the body is read: a connection answered before its body arrived must still be
  // timed out (see Exchange.reply).
  `${crlf('POST /api/ack HTTP/1.1', 'Host: fuzz', 'Content-Length: 2')}{}`,
);

/** Request-line and header-block violations; the server may answer with a JSON 4xx or close. */
const PROTOCOL_VIOLATIONS: Array<[string, string]> = [
  ['binary garbage', '\x00\x01\x02\xff\xfeGARBAGE\r\n\r\n'],
  ['request line only', 'GET\r\n\r\n'],
  ['no version', 'GET /health\r\nHost: fuzz\r\n\r\n'],
  ['HTTP/1.0', 'GET /health HTTP/1.0\r\nHost: fuzz\r\n\r\n'],
  ['HTTP/2.0 line', 'GET /health HTTP/2.0\r\nHost: fuzz\r\n\r\n'],
  ['HTTP/9.9', 'GET /health HTTP/9.9\r\nHost: fuzz\r\n\r\n'],
  ['h2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
  ['TLS hello on plain port', '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03'],
  ['missing Host', 'GET /health HTTP/1.1\r\n\r\n'],
  ['bare LF', 'GET /health HTTP/1.1\nHost: fuzz\n\n'],
  ['header without colon', 'GET /health HTTP/1.1\r\nHost: fuzz\r\nNoColonHere\r\n\r\n'],
  ['obs-fold', 'GET /health HTTP/1.1\r\nHost: fuzz\r\nX-A: a\r\n folded\r\n\r\n'],
  ['space before colon', 'GET /health HTTP/1.1\r\nHost : fuzz\r\n\r\n'],
  ['NUL in header value', 'GET /health HTTP/1.1\r\nHost: fuzz\r\nX-A: a\x00b\r\n\r\n'],
  ['CR in header value', 'GET /health HTTP/1.1\r\nHost: fuzz\r\nX-A: a\rb\r\n\r\n'],
  ['space in path', 'GET /hea lth HTTP/1.1\r\nHost: fuzz\r\n\r\n'],
  ['absolute-form URL', 'GET http://evil.example/health HTTP/1.1\r\nHost: fuzz\r\n\r\n'],
  ['asterisk-form', 'OPTIONS * HTTP/1.1\r\nHost: fuzz\r\n\r\n'],
  ['CONNECT', 'CONNECT 127.0.0.1:5432 HTTP/1.1\r\nHost: 127.0.0.1:5432\r\n\r\n'],
  ['lower-case method', 'get /health HTTP/1.1\r\nHost: fuzz\r\n\r\n'],
  ['unknown method', 'PROPFIND /api/keys HTTP/1.1\r\nHost: fuzz\r\n\r\n'],
  ['made-up method', 'FUZZ /health HTTP/1.1\r\nHost: fuzz\r\n\r\n'],
  ['CL and TE', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['two Content-Lengths', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
  ['negative Content-Length', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nContent-Length: -1\r\n\r\n'],
  ['non-numeric Content-Length', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nContent-Length: abc\r\n\r\n'],
  // Answered (413) only after the server gave up waiting for the body, then closed.
  ['declared body over the limit, never sent', `POST /api/keys/generate HTTP/1.1\r\nHost: fuzz\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`],
  ['huge Content-Length', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 99999999999999999999999\r\n\r\n{}'],
  ['bad chunk size', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n'],
  ['chunk size overflow', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n'],
  ['TE not chunked', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: gzip\r\n\r\nxx'],
  ['TE with obs whitespace', 'POST /api/events HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n'],
  ['CRLF-encoded header injection in path', 'GET /api/events/%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: fuzz\r\n\r\n'],
];

const violation = fc.constantFrom(...PROTOCOL_VIOLATIONS);

/** Huge or numerous headers: up to 64 KB uWS reads them, beyond it resets the connection. */
const headerFlood = fc.oneof(
  fc.integer({ min: 8 * 1024, max: 2 * 1024 * 1024 }).map((size): [string, string] => [`one ${size}-byte header`, get('/health', `X-Big: ${'a'.repeat(size)}`)]),
  fc.integer({ min: 40, max: 2000 }).map((count): [string, string] => [
    `${count} headers`,
    get('/health', ...Array.from({ length: count }, (_, i) => `X-H${i}: v`)),
  ]),
  fc.integer({ min: 2, max: 200 }).map((count): [string, string] => [
    `${count} X-API-Key headers`,
    get('/api/keys', ...Array.from({ length: count }, (_, i) => `X-API-Key: ${i === count - 1 ? KEY_PLACEHOLDER : `zap_live_${i}`}`)),
  ]),
  fc.integer({ min: 8 * 1024, max: 512 * 1024 }).map((size): [string, string] => [`${size}-byte request target`, get(`/api/inbox?type=${'a'.repeat(size)}`)]),
);

/**
 * Requests answered before their body has arrived (no key: 401; a body over the limit: 413), whole
 * or with the body a moment later. Sent in every batch: uWS stops timing out such a connection
 * unless the server holds the answer (Exchange.reply), and Lingering then reports it left open.
 */
export const EARLY_ANSWERS: readonly RawAttack[] = [
  ['no key, body in the same packet', [`${crlf('POST /api/events HTTP/1.1', 'Host: fuzz', 'Content-Length: 2')}{}`]],
  ['no key, no body', [crlf('POST /api/ack HTTP/1.1', 'Host: fuzz')]],
  ['no key, body 100 ms later', [crlf('POST /api/events/batch HTTP/1.1', 'Host: fuzz', 'Content-Length: 2'), '{}']],
  ['no key, chunked, last chunk 100 ms later', [crlf('POST /api/webhook/config HTTP/1.1', 'Host: fuzz', 'Transfer-Encoding: chunked'), '2\r\n{}\r\n0\r\n\r\n']],
  ['no admin token, body 100 ms later', [crlf('POST /api/keys/generate HTTP/1.1', 'Host: fuzz', 'Content-Length: 2'), '{}']],
  ['body over the limit, rest 100 ms later', [crlf('POST /api/ack HTTP/1.1', 'Host: fuzz', `X-API-Key: ${KEY_PLACEHOLDER}`, `Content-Length: ${128 * 1024 + 1}`), 'x'.repeat(128 * 1024 + 1)]],
].map(([name, segments]) => ({ label: `early answer: ${name as string}`, segments: (segments as string[]).map((text) => Buffer.from(text, 'latin1')), gapMs: 100, minReplies: 1 }));

export const rawAttack: fc.Arbitrary<RawAttack> = fc.oneof(
  // One violation, alone or after valid requests (which must still be answered), sometimes split into tiny segments.
  fc.tuple(fc.array(answerable, { maxLength: 3 }), violation, fc.boolean()).map(([before, [name, bytes], split]): RawAttack => {
    const text = before.join('') + bytes;
    return {
      label: `violation: ${name}${before.length ? ` after ${before.length} valid` : ''}${split ? ', byte by byte' : ''}`,
      segments: split ? [...Buffer.from(text, 'latin1')].map((byte) => Buffer.from([byte])) : [Buffer.from(text, 'latin1')],
      gapMs: split ? 1 : 0,
      minReplies: before.length,
    };
  }),
  // Pipelined requests, all answered in order.
  fc.array(answerable, { minLength: 2, maxLength: 24 }).map((requests): RawAttack => ({
    label: `pipelined ${requests.length}`,
    segments: [Buffer.from(requests.join(''), 'latin1')],
    gapMs: 0,
    minReplies: requests.length,
    maxReplies: requests.length,
  })),
  // Pipelined garbage: random bytes after a valid request.
  fc.tuple(answerable, fc.uint8Array({ minLength: 1, maxLength: 300 })).map(([request, bytes]): RawAttack => ({
    label: 'valid request then random bytes',
    segments: [Buffer.concat([Buffer.from(request, 'latin1'), Buffer.from(bytes)])],
    gapMs: 0,
    minReplies: 1,
  })),
  // A request hidden in a Content-Length body: one answer only.
  answerable.map((inner): RawAttack => ({
    label: 'request smuggled in a body',
    segments: [Buffer.from(post('/api/events', inner), 'latin1')],
    gapMs: 0,
    minReplies: 1,
    maxReplies: 1,
  })),
  headerFlood.map(([name, text]): RawAttack => ({ label: `header flood: ${name.replace(/\d+/g, 'N')}`, segments: [Buffer.from(text, 'latin1')], gapMs: 0 })),
  fc.uint8Array({ minLength: 1, maxLength: 2000 }).map((bytes): RawAttack => ({ label: 'random bytes', segments: [Buffer.from(bytes)], gapMs: 0 })),
);

// ---- slowloris ------------------------------------------------------------------------------------------

export type SlowMode = 'headers' | 'body' | 'chunked';

export interface SlowOutcome {
  mode: SlowMode;
  /** ms from connect until the server closed; null if it was still open at `maxMs`. */
  closedAfterMs: number | null;
  bytesSent: number;
  replies: ParsedReply[];
}

/**
 * `connections` connections (modes in turn) that each send a request one byte per `intervalMs`:
 * a header block that never ends, a body behind a Content-Length, or chunks. Resolves once the
 * server has closed them all, or at `maxMs` (the rest are destroyed and reported open).
 */
export function slowloris(port: number, apiKey: string, connections: number, intervalMs = 500, maxMs = SERVER_CLOSE_DEADLINE_MS): Promise<SlowOutcome[]> {
  const modes: SlowMode[] = ['headers', 'body', 'chunked'];
  // Invalid JSON (trailing comma): were it ever completed, it still could not add an event.
  const body = `${JSON.stringify({ type: 'slow', payload: { pad: 'x'.repeat(2000) } })},`;
  const script: Record<SlowMode, [head: string, trickle: string]> = {
    headers: ['GET /health HTTP/1.1\r\nHost: fuzz\r\n', `X-Slow: ${'s'.repeat(4000)}\r\n\r\n`],
    body: [`POST /api/events HTTP/1.1\r\nHost: fuzz\r\nX-API-Key: ${apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, body],
    chunked: [`POST /api/events/batch HTTP/1.1\r\nHost: fuzz\r\nX-API-Key: ${apiKey}\r\nTransfer-Encoding: chunked\r\n\r\n`, '1\r\n{\r\n'.repeat(2000)],
  };
  return Promise.all(
    Array.from({ length: connections }, (_, i) => {
      const mode = modes[i % modes.length]!;
      const [head, trickle] = script[mode];
      return new Promise<SlowOutcome>((resolve) => {
        const started = Date.now();
        const socket = net.connect(port, '127.0.0.1');
        let data = Buffer.alloc(0);
        let sent = 0;
        let timer: NodeJS.Timeout | undefined;
        const done = (closed: boolean) => {
          clearInterval(timer);
          clearTimeout(deadline);
          socket.destroy();
          resolve({ mode, closedAfterMs: closed ? Date.now() - started : null, bytesSent: sent, replies: parseResponses(data).replies });
        };
        const deadline = setTimeout(() => done(false), maxMs);
        socket.on('data', (chunk: Buffer) => (data = Buffer.concat([data, chunk])));
        socket.on('error', () => {});
        socket.once('close', () => done(true));
        socket.once('connect', () => {
          socket.write(head);
          timer = setInterval(() => {
            if (sent >= trickle.length) return;
            socket.write(trickle[sent++]!);
          }, intervalMs);
        });
      });
    }),
  );
}
