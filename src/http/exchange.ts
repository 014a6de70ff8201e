// One request/response pair on uWebSockets.js. uWS rules, kept here once:
// copy what is needed out of `req` before the handler returns (req is stack-allocated),
// register onAborted before any async step, copy onData chunks (their memory is reused),
// and write the whole response inside cork() (one syscall, and required off the uWS callback).
import { STATUS_CODES } from 'node:http';
import { ApiError } from '../errors.ts';
import type { HttpRequest, HttpResponse } from './uws.ts';

export type Headers = ReadonlyArray<readonly [string, string]>;

/**
 * How long an answer decided before the request body has arrived waits for it (see reply): long
 * enough for an upload on a loaded machine to finish, shorter than uWS's 10 s idle timeout, which
 * would close the connection without an answer.
 */
const HOLD_MAX_MS = 5_000;

const STATUS_LINES = new Map<number, string>(
  Object.entries(STATUS_CODES).map(([code, text]) => [Number(code), `${code} ${text}`]),
);

/** What a handler may read of the request, copied out of uWS's stack-allocated request. */
export interface RequestHead {
  readonly method: string;
  readonly url: string;
  readonly query: string;
  readonly params: readonly string[];
  readonly apiKeyHeader: string;
  readonly authorization: string;
  readonly contentType: string;
  readonly contentLength: string;
}

export function readHead(req: HttpRequest, paramCount: number): RequestHead {
  const params: string[] = [];
  for (let i = 0; i < paramCount; i++) params.push(req.getParameter(i));
  return {
    method: req.getMethod(),
    url: req.getUrl(),
    query: req.getQuery() ?? '',
    params,
    apiKeyHeader: req.getHeader('x-api-key'),
    authorization: req.getHeader('authorization'),
    contentType: req.getHeader('content-type'),
    contentLength: req.getHeader('content-length'),
  };
}

export class Exchange {
  aborted = false;
  /** The body was not read to its end: the connection is closed after the answer. */
  private closeAfterReply = false;
  /** readBody is collecting and the body's last chunk has not arrived yet. */
  private bodyPending = false;
  /** An answer is decided (written or held): the rest of the body is dropped, never parsed. */
  private answered = false;
  /** An answer decided while the body was still arriving (a 401), written once it has. */
  private heldReply: (() => void) | null = null;
  private holdTimer: NodeJS.Timeout | undefined;

  /** `headOnly`: a HEAD request, answered with the GET answer's status and headers, no body. */
  constructor(private readonly res: HttpResponse, private readonly headOnly = false) {
    res.onAborted(() => {
      this.aborted = true;
      clearTimeout(this.holdTimer);
    });
  }

  /**
   * Collects the body, refusing (413) as soon as it passes `limit` bytes: a declared
   * Content-Length over the limit is refused before any byte is read, and a streamed body
   * is never buffered past the limit. A 413 goes out at once and closes the connection (what
   * is left of an oversized body is not worth reading; a client still writing it may see a
   * reset instead). The rest of a body whose request is answered before it arrived (a 401) is
   * read and dropped, never parsed (see reply).
   */
  readBody(head: RequestHead, limit: number): Promise<Buffer> {
    const tooLarge = () => {
      this.closeAfterReply = true;
      this.bodyPending = false;
      return new ApiError('payload_too_large', `The request body exceeds ${limit} bytes.`);
    };
    let refused = false;
    const declared = head.contentLength === '' ? 0 : Number(head.contentLength);
    this.bodyPending = true;
    return new Promise((resolve, reject) => {
      if (declared > limit) {
        refused = true;
        reject(tooLarge());
      }
      const chunks: Buffer[] = [];
      let size = 0;
      this.res.onData((chunk, isLast) => {
        if (isLast) this.bodyArrived();
        if (refused || this.answered) return;
        size += chunk.byteLength;
        if (size > limit) {
          refused = true;
          reject(tooLarge());
          return;
        }
        chunks.push(Buffer.from(chunk.slice(0)));
        if (isLast) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
      });
    });
  }

  send(status: number, body: string | Buffer, headers: Headers = [], contentType = 'application/json'): void {
    this.reply(() => {
      this.res.writeStatus(STATUS_LINES.get(status) ?? String(status));
      this.res.writeHeader('content-type', contentType);
      this.res.writeHeader('x-content-type-options', 'nosniff');
      for (const [name, value] of headers) this.res.writeHeader(name, value);
      if (this.headOnly) this.res.endWithoutBody(Buffer.byteLength(body), this.closeAfterReply);
      else this.res.end(body, this.closeAfterReply);
    });
  }

  /** An answer without a body (204). */
  sendEmpty(status: number): void {
    this.reply(() => {
      this.res.writeStatus(STATUS_LINES.get(status) ?? String(status));
      this.res.endWithoutBody(undefined, this.closeAfterReply);
    });
  }

  /**
   * Writes the answer now, or once the request body has arrived. uWS never times out a
   * connection answered before the end of its request body (an early 401 on a POST: its idle
   * timer is not re-armed when the rest of the body comes in), so such a connection would stay
   * open for good. So an early answer waits for the body (dropped as it comes), at most
   * HOLD_MAX_MS; a body still unfinished by then gets the answer and a closed connection.
   */
  private reply(write: () => void): void {
    if (this.aborted) return;
    this.answered = true;
    if (!this.bodyPending) {
      this.res.cork(write);
      return;
    }
    this.heldReply = write;
    this.holdTimer = setTimeout(() => {
      this.closeAfterReply = true;
      this.writeHeld();
    }, HOLD_MAX_MS);
  }

  private bodyArrived(): void {
    this.bodyPending = false;
    this.writeHeld();
  }

  private writeHeld(): void {
    clearTimeout(this.holdTimer);
    const held = this.heldReply;
    this.heldReply = null;
    if (held && !this.aborted) this.res.cork(held);
  }

  sendError(error: ApiError, headers: Headers = []): void {
    this.send(error.status, JSON.stringify({ error: error.message, code: error.code, ...error.fields }), [...error.headers, ...headers]);
  }
}
