// Errors the client throws. One class for everything that went wrong with a call, so callers
// switch on `code`: the API's own code for an answer, `network_error` / `timeout` when no answer came.

export class TriggersError extends Error {
  override readonly name = 'TriggersError';
  /** The HTTP status; 0 when no answer arrived (network error, timeout). */
  readonly status: number;
  /** The API's `code` (e.g. `rate_limited`, `validation_error`), or `network_error` / `timeout`. */
  readonly code: string;
  /** The field a `validation_error` is about. */
  readonly field?: string;
  /** Seconds the server asked to wait (`Retry-After`), on 429 and 503. */
  readonly retryAfter?: number;
  /** The whole error body: e.g. `id` of a `duplicate_event`, `limit` of a `rate_limited`. */
  readonly body: Record<string, unknown>;
  /** How many attempts the call made before giving up. */
  readonly attempts: number;

  constructor(init: { status: number; code: string; message: string; field?: string; retryAfter?: number; body?: Record<string, unknown>; attempts: number; cause?: unknown }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    if (init.field !== undefined) this.field = init.field;
    if (init.retryAfter !== undefined) this.retryAfter = init.retryAfter;
    this.body = init.body ?? {};
    this.attempts = init.attempts;
  }

  /** True when the request may or may not have reached the server (no answer was read). */
  get isNetworkError(): boolean {
    return this.status === 0;
  }
}

/** Why `verifyWebhook` refused a delivery. A receiver answers it with a 400. */
export type WebhookErrorCode = 'missing_headers' | 'invalid_signature' | 'invalid_timestamp';

export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError';
  constructor(readonly code: WebhookErrorCode, message: string) {
    super(message);
  }
}
