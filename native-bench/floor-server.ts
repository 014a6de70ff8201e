// The stack's floor for bench:compare: the same Node and uWebSockets.js build as the server, doing
// only what no ingestion server can skip. `POST /api/events` reads the body and answers 202
// `{id, status}`: no key check, no rate limit, no parsing, no storage. With FLOOR_FSYNC=1 it also
// makes each event-loop turn's bodies durable the cheapest way there is, before answering: one
// `pwrite` + `fdatasync` into a file written out in advance (so no flush also has to write the
// file's size or block map). Whatever the real server costs above these two rows is its own.
// `POST /api/keys/generate` hands out a random key (nothing checks it), so the harness treats it
// like the other contenders. Prints the `listening` JSON line the harness waits for.
import { randomBytes, randomUUID } from 'node:crypto';
import { fdatasyncSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { createApp, listenPort, type HttpResponse } from '../src/http/uws.ts';

/** Written out before the first request; appends wrap around at its end. */
const FILE_BYTES = 64 << 20;
const WRITE_CHUNK = 1 << 20;

const fsync = process.env.FLOOR_FSYNC === '1';
if (!process.env.DATA_DIR) throw new Error('floor server: DATA_DIR must name a directory for its file');
const fd = openSync(path.join(process.env.DATA_DIR, 'floor-journal'), 'w+');
if (fsync) {
  const zeros = Buffer.alloc(WRITE_CHUNK);
  for (let at = 0; at < FILE_BYTES; at += WRITE_CHUNK) writeSync(fd, zeros, 0, WRITE_CHUNK, at);
  fdatasyncSync(fd);
}
let position = 0;

/** Answers waiting for this turn's flush. */
let waiting: Array<{ res: Response; body: Buffer }> = [];

function answer(res: HttpResponse): void {
  res.cork(() => res.writeStatus('202 Accepted').writeHeader('content-type', 'application/json')
    .end(`{"id":"${randomUUID()}","status":"accepted"}`));
}

function flushTurn(): void {
  const group = waiting;
  waiting = [];
  const bytes = Buffer.concat(group.map(({ body }) => body));
  if (position + bytes.length > FILE_BYTES) position = 0;
  writeSync(fd, bytes, 0, bytes.length, position);
  position += bytes.length;
  fdatasyncSync(fd);
  for (const { res } of group) if (!res.aborted) answer(res);
}

type Response = HttpResponse & { aborted?: boolean };

function readBody(res: Response, done: (body: Buffer) => void): void {
  const chunks: Buffer[] = [];
  res.onAborted(() => (res.aborted = true));
  res.onData((chunk, last) => {
    chunks.push(Buffer.from(chunk.slice(0))); // uWS reuses the chunk's memory
    if (last) done(Buffer.concat(chunks));
  });
}

const app = createApp()
  .post('/api/events', (res: Response) => readBody(res, (body) => {
    if (!fsync) {
      if (!res.aborted) answer(res);
      return;
    }
    waiting.push({ res, body });
    if (waiting.length === 1) setImmediate(flushTurn);
  }))
  .post('/api/keys/generate', (res: Response) => readBody(res, () => {
    if (res.aborted) return;
    res.cork(() => res.writeStatus('201 Created').writeHeader('content-type', 'application/json')
      .end(JSON.stringify({ api_key: randomBytes(24).toString('base64url') })));
  }))
  .get('/health', (res) => {
    res.cork(() => res.end('{"status":"ok"}'));
  });

app.listen(process.env.HOST ?? '127.0.0.1', Number(process.env.PORT ?? 0), (socket) => {
  if (!socket) throw new Error('floor server: cannot listen');
  console.log(JSON.stringify({ msg: 'listening', port: listenPort(socket), fsync }));
});

process.once('SIGTERM', () => process.exit(0));
