// When and how long the client waits before trying a call again.
import { setTimeout as sleep } from 'node:timers/promises';

export interface RetryOptions {
  /** Retries after the first attempt (default 3, so at most 4 attempts). 0 turns retrying off. */
  retries: number;
  /** First backoff step in ms when the server gave no Retry-After (default 250); doubles each retry. */
  baseDelay: number;
  /** The longest wait in ms (default 60 000). A Retry-After beyond it is not waited for: the call fails. */
  maxDelay: number;
}

export const DEFAULT_RETRY: RetryOptions = { retries: 3, baseDelay: 250, maxDelay: 60_000 };

/** What `onRetry` is told before each wait. */
export interface RetryInfo {
  method: string;
  path: string;
  /** The attempt that failed, from 1. */
  attempt: number;
  /** The HTTP status, or 0 for a network error or timeout. */
  status: number;
  /** The API's error code, or `network_error` / `timeout`. */
  code: string;
  /** The server's Retry-After in seconds, when it sent one. */
  retryAfter?: number;
  /** How long the client waits before the next attempt. */
  delayMs: number;
}

/**
 * The wait before retry number `retry` (from 1). A Retry-After is a floor the server set: wait that
 * long plus up to 20 % so clients told the same second do not return in lockstep. Without one,
 * exponential backoff with "equal jitter" (between half and all of base·2^(retry-1)).
 * Returns null when the server asks for longer than `maxDelay`.
 */
export function retryDelay(options: RetryOptions, retry: number, retryAfterSeconds: number | undefined, random = Math.random): number | null {
  if (retryAfterSeconds !== undefined) {
    const floor = retryAfterSeconds * 1000;
    if (floor > options.maxDelay) return null;
    return Math.min(options.maxDelay, Math.round(floor * (1 + 0.2 * random())));
  }
  const step = Math.min(options.maxDelay, options.baseDelay * 2 ** (retry - 1));
  return Math.round(step / 2 + (step / 2) * random());
}

/** Parses a Retry-After header in seconds (the API sends whole seconds; an HTTP date is honoured too). */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

export { sleep };
