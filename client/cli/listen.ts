// `triggers listen`: a local webhook receiver that verifies each delivery and prints it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifyWebhook, WebhookVerificationError } from '../index.ts';
import { eventLine } from './output.ts';

/** Deliveries are at most 256 KiB of payload plus the envelope; anything far larger is not one. */
const MAX_BODY = 2 * 1024 * 1024;

export interface ListenOptions {
  host: string;
  port: number;
  secret: string;
  json?: boolean;
}

function answer(response: http.ServerResponse, status: number, body?: object): void {
  if (body === undefined) {
    response.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

function handle(request: http.IncomingMessage, response: http.ServerResponse, options: ListenOptions): void {
  if (request.method !== 'POST') {
    answer(response, 405, { error: 'Only POST is accepted.', code: 'method_not_allowed' });
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  request.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      answer(response, 413, { error: 'The body is too large for a delivery.', code: 'payload_too_large' });
      request.destroy();
      return;
    }
    chunks.push(chunk);
  });
  request.on('end', () => {
    // Verify the bytes as received: parsing and re-serialising first would break the signature.
    const raw = Buffer.concat(chunks);
    try {
      const event = verifyWebhook(options.secret, raw, request.headers);
      process.stdout.write(options.json ? `${JSON.stringify(event)}\n` : `${eventLine(event.timestamp, event.id, event.type, event.data)}  signature ok\n`);
      answer(response, 204);
    } catch (error) {
      const id = request.headers['webhook-id'] ?? '(no webhook-id)';
      if (error instanceof WebhookVerificationError) {
        process.stderr.write(`rejected delivery ${id}: ${error.code}: ${error.message}\n`);
        answer(response, 400, { error: error.message, code: error.code });
      } else {
        process.stderr.write(`failed on delivery ${id}: ${(error as Error).message}\n`);
        answer(response, 500, { error: 'The receiver failed on this delivery.', code: 'internal_error' });
      }
    }
  });
}

/** Serves until SIGINT/SIGTERM. */
export async function listen(options: ListenOptions): Promise<void> {
  const server = http.createServer((request, response) => handle(request, response, options));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  process.stderr.write(`listening on http://${host}:${port}/ (verifying signatures; Ctrl-C to stop)\n`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      server.close(() => resolve());
      server.closeAllConnections();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
