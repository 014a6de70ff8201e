// Request bodies: decoding, JSON parsing and the event schema. Only what Postgres jsonb stores
// faithfully is accepted, so nothing can get a 202 and then fail to store.
import { ApiError, validationError } from '../errors.ts';

export const MAX_PAYLOAD_BYTES = 262_144;
export const MAX_DEPTH = 64;
export const MAX_TEXT = 255;
/**
 * Nesting a body may have at all, checked on the bytes before JSON.parse: V8 takes about a second
 * to parse a few MB of `[[[[…`, and no accepted body comes near this (payload 64 + batch envelope 3).
 */
export const MAX_BODY_DEPTH = 128;

export interface EventInput {
  type: string;
  /** The payload serialized compactly: what the log stores and Postgres receives. */
  payloadJson: string;
  dedupId: string | null;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** A missing Content-Type is JSON; any other media type than application/json is a 415. */
export function checkContentType(contentType: string): void {
  if (contentType === '') return;
  const media = contentType.split(';', 1)[0]!.trim().toLowerCase();
  if (media !== 'application/json') throw new ApiError('unsupported_media_type');
}

/** True when brackets outside strings nest deeper than `limit` (the bytes need not be valid JSON). */
function nestsDeeperThan(body: Buffer, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const byte = body[i]!;
    if (inString) {
      if (byte === 0x5c) i++; // backslash: skip the escaped byte
      else if (byte === 0x22) inString = false;
    } else if (byte === 0x22) {
      inString = true;
    } else if (byte === 0x5b || byte === 0x7b) {
      if (++depth > limit) return true;
    } else if (byte === 0x5d || byte === 0x7d) {
      depth--;
    }
  }
  return false;
}

/** Decodes strict UTF-8 and parses JSON; both failures are `invalid_json`. */
export function parseJsonBody(body: Buffer): unknown {
  if (nestsDeeperThan(body, MAX_BODY_DEPTH)) throw validationError('body', `The body nests deeper than ${MAX_BODY_DEPTH} levels.`);
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw new ApiError('invalid_json', 'The body is not valid UTF-8.');
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ApiError('invalid_json', `The body is not valid JSON: ${(error as Error).message}`);
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Valid Unicode (no lone surrogates) and no U+0000: what jsonb text can hold. */
export function storableText(text: string): boolean {
  return text.isWellFormed() && !text.includes('\u0000');
}

/** A required or optional string field of 1..255 characters that jsonb can store. */
export function textField(body: Record<string, unknown>, field: string, required: boolean): string | null {
  const value = body[field];
  if (value === undefined || value === null) {
    if (required) throw validationError(field, `${field} is required.`);
    return null;
  }
  if (typeof value !== 'string') throw validationError(field, `${field} must be a string.`);
  const length = value.length <= MAX_TEXT ? value.length : [...value].length;
  if (length < 1 || length > MAX_TEXT) throw validationError(field, `${field} must be 1 to ${MAX_TEXT} characters.`);
  if (!storableText(value)) throw validationError(field, `${field} must be valid Unicode without U+0000.`);
  return value;
}

/**
 * Walks the payload without recursion: depth ≤ 64, finite numbers (JSON.parse turns 1e400
 * into Infinity), keys and strings valid Unicode without U+0000.
 */
function checkStorable(payload: Record<string, unknown>, field: string): void {
  const stack: Array<[unknown, number]> = [[payload, 1]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!;
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw validationError(field, `${field} contains a number out of range.`);
    } else if (typeof value === 'string') {
      if (!storableText(value)) throw validationError(field, `${field} contains text that is not valid Unicode or contains U+0000.`);
    } else if (typeof value === 'object' && value !== null) {
      if (depth > MAX_DEPTH) throw validationError(field, `${field} nests deeper than ${MAX_DEPTH} levels.`);
      if (Array.isArray(value)) {
        for (const item of value) stack.push([item, depth + 1]);
      } else {
        for (const key of Object.keys(value)) {
          if (!storableText(key)) throw validationError(field, `${field} has a key that is not valid Unicode or contains U+0000.`);
          stack.push([(value as Record<string, unknown>)[key], depth + 1]);
        }
      }
    }
  }
}

/** One event of `POST /api/events` or of a batch. Older clients send `data` for `payload`. */
export function parseEvent(body: unknown): EventInput {
  if (!isPlainObject(body)) throw validationError('body', 'The event must be a JSON object.');
  const type = textField(body, 'type', true)!;
  const field = body.payload !== undefined ? 'payload' : 'data';
  const payload = body[field];
  if (payload === undefined) throw validationError('payload', 'payload is required.');
  if (!isPlainObject(payload)) throw validationError(field, `${field} must be a JSON object.`);
  checkStorable(payload, field);
  const dedupId = textField(body, 'dedup_id', false);
  const payloadJson = JSON.stringify(payload);
  if (payloadJson.length > MAX_PAYLOAD_BYTES / 3 && Buffer.byteLength(payloadJson) > MAX_PAYLOAD_BYTES) {
    throw new ApiError('payload_too_large', `The payload exceeds ${MAX_PAYLOAD_BYTES} bytes as compact JSON.`, { field });
  }
  return { type, payloadJson, dedupId };
}
