// Every error a client can see has a stable code, a status, a default sentence and,
// for some, headers the contract requires with it.
export const ERRORS = {
  missing_api_key: [401, 'An API key is required: send it in X-API-Key or Authorization: Bearer.', [['www-authenticate', 'ApiKey']]],
  invalid_api_key: [401, 'The API key is not valid.', [['www-authenticate', 'ApiKey']]],
  admin_token_required: [401, 'This route needs Authorization: Bearer <ADMIN_TOKEN>.', [['www-authenticate', 'Bearer']]],
  not_found: [404, 'Not found.'],
  method_not_allowed: [405, 'Method not allowed on this route.'],
  invalid_id: [400, 'The id is not a valid event id (UUID).'],
  invalid_json: [400, 'The body is not valid JSON.'],
  validation_error: [400, 'A field is invalid.'],
  invalid_cursor: [400, 'The cursor is not valid.'],
  unsupported_media_type: [415, 'Content-Type must be application/json.'],
  payload_too_large: [413, 'The payload is too large.'],
  duplicate_event: [409, 'An event with this dedup_id was already accepted.'],
  event_acknowledged: [409, 'The event is acknowledged: it is never delivered again.'],
  no_webhook_endpoint: [409, 'No active webhook endpoint is configured for this organization.'],
  rate_limited: [429, 'Rate limit exceeded for this organization.'],
  overloaded: [503, 'The server is overloaded; retry later.'],
  database_unavailable: [503, 'Recent events are not readable yet (the database is behind or unreachable); retry shortly.', [['retry-after', '1']]],
  internal_error: [500, 'Internal error.'],
  invalid_webhook_url: [400, 'The webhook URL is not valid.'],
  blocked_webhook_url: [400, 'The webhook URL points to a private, loopback, link-local or metadata address.'],
} as const satisfies Record<string, readonly [number, string, ...(readonly (readonly [string, string])[])[]]>;

export type ErrorCode = keyof typeof ERRORS;
export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

/** An error answered to the client as `{error, code, ...fields}`. */
export class ApiError extends Error {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  constructor(
    readonly code: ErrorCode,
    message: string = ERRORS[code][1],
    readonly fields: Record<string, unknown> = {},
  ) {
    super(message);
    const [status, , headers = []] = ERRORS[code] as readonly [number, string, ReadonlyArray<readonly [string, string]>?];
    this.status = status;
    this.headers = headers;
  }
}

export function validationError(field: string, message: string): ApiError {
  return new ApiError('validation_error', message, { field });
}
