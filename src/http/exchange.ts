// One request/response pair on uWebSockets.js. uWS rules, kept here once:
// copy what is needed out of `req` before the handler returns (req is stack-allocated),
// register onAborted before any async step, copy onData chunks (their memory is reused),
// and write the whole response inside cork() (one syscall, and required off the uWS callback).
import { STATUS_CODES } from 'node:http';
import { ApiError } from '../errors.ts';
import type { HttpRequest, HttpResponse } from './uws.ts';

export type Headers = ReadonlyArray<readonly [string, string]>;

/** After a 413, how much more of a declared body is read and dropped rather than cut off. */
const DISCARD_MAX_BYTES = 16 * 1024 * 1024;

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
  /** Set when a declared body is too large to drop: the connection is closed after the 413. */
  private closeAfterReply = false;

  /** `headOnly`: a HEAD request, answered with the GET answer's status and headers, no body. */
  constructor(private readonly res: HttpResponse, private readonly headOnly = false) {
    res.onAborted(() => {
      this.aborted = true;
    });
  }

  /**
   * Collects the body, refusing (413) as soon as it passes `limit` bytes: a declared
   * Content-Length over the limit is refused before any byte is read, and a streamed body
   * is never buffered past the limit. After the 413 the rest of the body is read and dropped,
   * so a client still sending gets the answer instead of a reset connection; only a declared
   * body far over the limit gets its connection closed instead.
   */
  readBody(head: RequestHead, limit: number): Promise<Buffer> {
    const tooLarge = () => new ApiError('payload_too_large', `The request body exceeds ${limit} bytes.`);
    let refused = false;
    const declared = head.contentLength === '' ? 0 : Number(head.contentLength);
    if (declared > limit) {
      refused = true;
      this.closeAfterReply = declared > limit + DISCARD_MAX_BYTES;
    }
    return new Promise((resolve, reject) => {
      if (refused) reject(tooLarge());
      const chunks: Buffer[] = [];
      let size = 0;
      this.res.onData((chunk, isLast) => {
        if (refused) return;
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
    if (this.aborted) return;
    this.res.cork(() => {
      this.res.writeStatus(STATUS_LINES.get(status) ?? String(status));
      this.res.writeHeader('content-type', contentType);
      for (const [name, value] of headers) this.res.writeHeader(name, value);
      if (this.headOnly) this.res.endWithoutBody(Buffer.byteLength(body), this.closeAfterReply);
      else this.res.end(body, this.closeAfterReply);
    });
  }

  /** An answer without a body (204). */
  sendEmpty(status: number): void {
    if (this.aborted) return;
    this.res.cork(() => {
      this.res.writeStatus(STATUS_LINES.get(status) ?? String(status));
      this.res.endWithoutBody(undefined, this.closeAfterReply);
    });
  }

  sendError(error: ApiError, headers: Headers = []): void {
    this.send(error.status, JSON.stringify({ error: error.message, code: error.code, ...error.fields }), [...error.headers, ...headers]);
  }
}
