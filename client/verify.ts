// Verifying a webhook delivery on the receiving side (Standard Webhooks, via the standardwebhooks
// package). The signature covers the exact bytes sent: pass the raw body, never a re-serialised
// object (docs/webhooks-raw-body.md).
import { Webhook, WebhookVerificationError as StandardError } from 'standardwebhooks';
import { WebhookVerificationError, type WebhookErrorCode } from './errors.ts';
import type { WebhookEvent } from './types.ts';

/** fetch `Headers`, node:http `IncomingHttpHeaders`, or a plain record. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

function plainHeaders(headers: WebhookHeaders): Record<string, string> {
  const plain: Record<string, string> = {};
  const entries: Iterable<[string, string | string[] | undefined]> = headers instanceof Headers ? headers.entries() : Object.entries(headers);
  for (const [name, value] of entries) {
    if (value !== undefined) plain[name.toLowerCase()] = Array.isArray(value) ? value.join(' ') : value;
  }
  return plain;
}

function codeOf(message: string): WebhookErrorCode {
  if (message.startsWith('Missing required headers')) return 'missing_headers';
  if (message.startsWith('No matching signature')) return 'invalid_signature';
  // "Message timestamp too old/new", or a webhook-timestamp that is not a number.
  return 'invalid_timestamp';
}

/**
 * Checks a delivery's `webhook-signature` against `secret` (the endpoint's `whsec_...`) and its
 * `webhook-timestamp` against the clock (±5 min), then returns the parsed body.
 * Throws WebhookVerificationError (`missing_headers`, `invalid_signature`, `invalid_timestamp`).
 */
export function verifyWebhook(secret: string, rawBody: string | Uint8Array, headers: WebhookHeaders): WebhookEvent {
  if (typeof rawBody !== 'string' && !(rawBody instanceof Uint8Array)) {
    throw new TypeError('verifyWebhook needs the raw request body (string or bytes), not a parsed object: see docs/webhooks-raw-body.md');
  }
  const body = typeof rawBody === 'string' || Buffer.isBuffer(rawBody) ? rawBody : Buffer.from(rawBody.buffer, rawBody.byteOffset, rawBody.byteLength);
  try {
    return new Webhook(secret).verify(body, plainHeaders(headers)) as WebhookEvent;
  } catch (error) {
    if (error instanceof StandardError) throw new WebhookVerificationError(codeOf(error.message), error.message);
    throw error;
  }
}
