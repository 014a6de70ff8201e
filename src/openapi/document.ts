// The OpenAPI 3.1 description of the API, served at GET /openapi.json and rendered at GET /docs.
// Limits, error codes, tiers and statuses come from the modules that enforce them, so the
// document cannot drift from them; test/openapi.test.ts checks it against the registered routes
// and every JSON answer the test suite receives is validated against it (test/helpers/openapi.ts).
import { MAX_URL_LENGTH } from '../delivery/ssrf.ts';
import { ERROR_CODES, ERRORS, type ErrorCode } from '../errors.ts';
import { EVENT_STATUSES } from '../events/store.ts';
import { MAX_DEPTH, MAX_PAYLOAD_BYTES, MAX_TEXT } from '../events/validate.ts';
import { PER_MINUTE, TIERS } from '../rate-limit.ts';
import { MAX_BATCH_BODY, MAX_BATCH_EVENTS, MAX_EVENT_BODY } from '../routes/events.ts';
import { DEFAULT_LIMIT, MAX_ACK_BODY, MAX_ACK_IDS, MAX_LIMIT } from '../routes/inbox.ts';
import { MAX_KEYS_BODY } from '../routes/keys.ts';
import { MAX_CONFIG_BODY, SECRET_OVERLAP_MS } from '../routes/webhooks.ts';

/** A JSON Schema (2020-12, the OpenAPI 3.1 dialect). */
export type Schema = { [keyword: string]: unknown };

export interface Header {
  description: string;
  required?: boolean;
  schema: Schema;
}

export interface MediaType {
  schema: Schema;
  example?: unknown;
  examples?: Record<string, { summary?: string; value: unknown }>;
}

export interface Response {
  description: string;
  headers?: Record<string, Header | { $ref: string }>;
  content?: Record<string, MediaType>;
}

export interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  description: string;
  required?: boolean;
  schema: Schema;
  example?: unknown;
}

export interface Operation {
  operationId: string;
  tags: string[];
  summary: string;
  description?: string;
  security?: Array<Record<string, string[]>>;
  parameters?: Array<Parameter | { $ref: string }>;
  requestBody?: { required: boolean; description?: string; content: Record<string, MediaType> };
  responses: Record<string, Response | { $ref: string }>;
}

export type Method = 'get' | 'post' | 'delete';
export type PathItem = Partial<Record<Method, Operation>> & { parameters?: Array<Parameter | { $ref: string }> };

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; summary: string; description: string };
  tags: Array<{ name: string; description: string }>;
  security: Array<Record<string, string[]>>;
  paths: Record<string, PathItem>;
  webhooks: Record<string, PathItem>;
  components: {
    securitySchemes: Record<string, Record<string, string>>;
    schemas: Record<string, Schema>;
    headers: Record<string, Header>;
  };
}

const schema = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (body: Schema, example?: unknown): Record<string, MediaType> => ({
  'application/json': example === undefined ? { schema: body } : { schema: body, example },
});
const size = (bytes: number) => (bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${bytes / 1024} KiB`);

const EXAMPLE_ID = '01966b2e-5b7c-7f3a-9c1d-2e4f6a8b0c1d';
const EXAMPLE_ORG = '6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f';
const EXAMPLE_TIME = '2025-04-16T09:30:12.345Z';
const EXAMPLE_PAYLOAD = { order_id: 'ord_1042', amount_cents: 4999, currency: 'EUR' };
const EXAMPLE_KEY = 'zap_live_q3Vt0cW1mZ8a2nR5yK7bH4dJ6fL9pX0sE1gU3iO5wA7';
const EXAMPLE_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

const headers: Record<string, Header> = {
  'RateLimit-Limit': { description: 'Events per minute of the organization\'s tier.', schema: { type: 'integer', minimum: 1 } },
  'RateLimit-Remaining': { description: 'Events that may be sent right now (the bucket\'s tokens).', schema: { type: 'integer', minimum: 0 } },
  'RateLimit-Reset': { description: 'Seconds until the bucket is full again.', schema: { type: 'integer', minimum: 0 } },
  'X-RateLimit-Limit': { description: 'Same as `RateLimit-Limit`, for older clients.', schema: { type: 'integer', minimum: 1 } },
  'X-RateLimit-Remaining': { description: 'Same as `RateLimit-Remaining`, for older clients.', schema: { type: 'integer', minimum: 0 } },
  'Retry-After': { description: 'Whole seconds (≥ 1) to wait before retrying.', required: true, schema: { type: 'integer', minimum: 1 } },
  'WWW-Authenticate': { description: 'The expected credentials: `ApiKey` (or `Bearer` for the admin token).', required: true, schema: { type: 'string' } },
};

/** Headers every answer of POST /api/events and /api/events/batch carries once the key is known. */
const RATE_HEADER_NAMES = ['RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset', 'X-RateLimit-Limit', 'X-RateLimit-Remaining'] as const;

function rateHeaders(required = true): Record<string, Header> {
  return Object.fromEntries(RATE_HEADER_NAMES.map((name) => [name, { ...headers[name]!, required }]));
}

/** src/errors.ts names headers in lower case; the document spells them as usual. */
const HEADER_NAMES = new Map(Object.keys(headers).map((name) => [name.toLowerCase(), name]));

/** The headers src/errors.ts sends with a code. */
function errorHeaders(code: ErrorCode): string[] {
  const [, , extra = []] = ERRORS[code] as readonly [number, string, ReadonlyArray<readonly [string, string]>?];
  return extra.map(([name]) => HEADER_NAMES.get(name) ?? name);
}

/** Codes answered on any route that are not per operation: the router's fallbacks. */
export const ROUTER_ERROR_CODES: readonly ErrorCode[] = ['not_found', 'method_not_allowed'];

/** Error bodies with more than `{error, code, field?}`. */
const ERROR_SCHEMAS: Partial<Record<ErrorCode, string>> = {
  duplicate_event: 'DuplicateEventError',
  rate_limited: 'RateLimitedError',
};

function errorExample(code: ErrorCode): Record<string, unknown> {
  const example: Record<string, unknown> = { error: ERRORS[code][1], code };
  if (code === 'validation_error') Object.assign(example, { error: 'type must be 1 to 255 characters.', field: 'type' });
  if (code === 'invalid_webhook_url' || code === 'blocked_webhook_url') example.field = 'webhook_url';
  if (code === 'duplicate_event') example.id = EXAMPLE_ID;
  if (code === 'rate_limited') Object.assign(example, { error: 'Rate limit of 100 events per minute exceeded.', limit: 100, retry_after: 1 });
  return example;
}

/**
 * The error answers of an operation, grouped by status (from src/errors.ts), each with `code`
 * narrowed to the codes that status can carry there. `extraHeaders(status)` adds headers.
 */
function errorResponses(codes: readonly ErrorCode[], extraHeaders: (status: number) => Record<string, Header> = () => ({})): Record<string, Response> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) {
    const status = ERRORS[code][0];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const responses: Record<string, Response> = {};
  for (const [status, statusCodes] of byStatus) {
    const special = statusCodes.length === 1 ? ERROR_SCHEMAS[statusCodes[0]!] : undefined;
    const body = special
      ? schema(special)
      : { allOf: [schema('Error'), { type: 'object', properties: { code: { enum: statusCodes } } }] };
    // A header is required when every code of the status sends it.
    const statusHeaders: Record<string, Header> = {};
    for (const name of new Set(statusCodes.flatMap(errorHeaders))) {
      statusHeaders[name] = { ...headers[name]!, required: statusCodes.every((code) => errorHeaders(code).includes(name)) };
    }
    Object.assign(statusHeaders, extraHeaders(status));
    responses[status] = {
      description: statusCodes.map((code) => `\`${code}\`: ${ERRORS[code][1]}`).join('\n\n'),
      ...(Object.keys(statusHeaders).length > 0 ? { headers: statusHeaders } : {}),
      content: {
        'application/json': {
          schema: body,
          examples: Object.fromEntries(statusCodes.map((code) => [code, { value: errorExample(code) }])),
        },
      },
    };
  }
  return responses;
}

/** Codes every operation behind an API key can answer (a key not cached yet is looked up in Postgres). */
const AUTHENTICATED: readonly ErrorCode[] = ['missing_api_key', 'invalid_api_key', 'overloaded', 'database_unavailable', 'internal_error'];
/** Codes of reading a bounded JSON body. */
const JSON_BODY: readonly ErrorCode[] = ['invalid_json', 'validation_error', 'payload_too_large', 'unsupported_media_type'];

/**
 * Ingest answers carry the rate-limit headers once the key is known: not on a 401, nor on a 503
 * from the rate-limit table being full before the key's bucket is found; 429 and 503 say when to retry.
 */
const ingestHeaders = (status: number): Record<string, Header> => {
  const retry: Record<string, Header> = status === 429 || status === 503 ? { 'Retry-After': headers['Retry-After']! } : {};
  if (status === 401 || status === 500) return {};
  if (status === 503) return { ...rateHeaders(false), ...retry };
  return { ...rateHeaders(), ...retry };
};

const jsonBodyNote = (limit: number) =>
  `A missing \`Content-Type\` is read as JSON; any other media type than \`application/json\` is a 415. ` +
  `A body over ${size(limit)} is refused (413) as it streams in.`;

const text = (description: string, extra: Schema = {}): Schema => ({ type: 'string', minLength: 1, maxLength: MAX_TEXT, description, ...extra });
const timestamp = (description: string): Schema => ({ type: 'string', format: 'date-time', description, examples: [EXAMPLE_TIME] });
const object = (required: string[], properties: Record<string, Schema>, description?: string): Schema => ({
  type: 'object',
  ...(description ? { description } : {}),
  required,
  properties,
  additionalProperties: false,
});

const schemas: Record<string, Schema> = {
  Error: {
    type: 'object',
    description: 'Every error answer. Some codes add fields (see `DuplicateEventError`, `RateLimitedError`).',
    required: ['error', 'code'],
    properties: {
      error: { type: 'string', description: 'One human sentence; may change between versions.' },
      code: { type: 'string', enum: ERROR_CODES, description: 'Stable machine-readable code.' },
      field: { type: 'string', description: 'The request field that is invalid (`validation_error`, URL errors, `payload_too_large` of an event).' },
    },
  },
  DuplicateEventError: {
    allOf: [schema('Error'), {
      type: 'object',
      required: ['id'],
      properties: { code: { const: 'duplicate_event' }, id: { ...schema('EventId'), description: 'The id of the event first accepted with this `dedup_id`.' } },
    }],
  },
  RateLimitedError: {
    allOf: [schema('Error'), {
      type: 'object',
      required: ['limit', 'retry_after'],
      properties: {
        code: { const: 'rate_limited' },
        limit: { type: 'integer', minimum: 1, description: 'Events per minute of the tier.' },
        retry_after: { type: 'integer', minimum: 1, description: 'Seconds until one more event is admitted (= `Retry-After`).' },
      },
    }],
  },
  EventId: { type: 'string', format: 'uuid', description: 'UUIDv7: time ordered; the id the event keeps everywhere.', examples: [EXAMPLE_ID] },
  EventType: text('The event\'s type, e.g. `order.created`.', { examples: ['order.created'] }),
  EventStatus: {
    type: 'string',
    enum: EVENT_STATUSES,
    description: '`pending`: not yet delivered (or no webhook endpoint); `delivered`: a webhook attempt got a 2xx; ' +
      '`failed`: every scheduled attempt failed; `acknowledged`: acked through the API (never delivered again).',
  },
  Payload: {
    type: 'object',
    description: `Any JSON object whose compact serialization (\`JSON.stringify\`) is at most ${MAX_PAYLOAD_BYTES} UTF-8 bytes ` +
      `(413 \`payload_too_large\` otherwise), nesting at most ${MAX_DEPTH} levels, finite numbers only and strings/keys of valid ` +
      'Unicode without U+0000 (400 `validation_error` otherwise): exactly what Postgres `jsonb` stores faithfully. ' +
      'Once stored, keys come back in Postgres\' order.',
    examples: [EXAMPLE_PAYLOAD],
  },
  DedupId: text('Idempotency key: a second event of the organization with the same `dedup_id` within `DEDUP_WINDOW` (default 24 h) is refused with 409 `duplicate_event`.', { examples: ['order-1042-created'] }),
  EventInput: {
    type: 'object',
    description: 'One event. Unknown top-level fields are ignored; when both `payload` and `data` are sent, `payload` wins.',
    required: ['type'],
    anyOf: [{ required: ['payload'] }, { required: ['data'] }],
    properties: {
      type: schema('EventType'),
      payload: schema('Payload'),
      data: { ...schema('Payload'), deprecated: true, description: 'Alias of `payload` sent by older clients.' },
      dedup_id: { anyOf: [schema('DedupId'), { type: 'null' }] },
    },
    examples: [{ type: 'order.created', payload: EXAMPLE_PAYLOAD, dedup_id: 'order-1042-created' }],
  },
  EventAccepted: object(['id', 'status', 'received_at'], {
    id: schema('EventId'),
    status: { const: 'accepted' },
    received_at: timestamp('When the event was committed to the log.'),
  }, 'The event is durably committed (see Durability in the description).'),
  BatchRequest: {
    type: 'object',
    required: ['events'],
    properties: {
      events: { type: 'array', maxItems: MAX_BATCH_EVENTS, items: schema('EventInput'), description: `At most ${MAX_BATCH_EVENTS} events; each is judged alone (an invalid one is rejected in \`results\`, not the batch).` },
    },
  },
  BatchAccepted: object(['index', 'id', 'status'], {
    index: { type: 'integer', minimum: 0, description: 'Position of the event in `events`.' },
    id: schema('EventId'),
    status: { const: 'accepted' },
  }),
  BatchRejected: {
    type: 'object',
    required: ['index', 'code', 'error'],
    properties: {
      index: { type: 'integer', minimum: 0, description: 'Position of the event in `events`.' },
      code: { enum: ['validation_error', 'payload_too_large', 'rate_limited', 'duplicate_event'] satisfies ErrorCode[] },
      error: { type: 'string' },
      field: { type: 'string', description: 'The invalid field (`validation_error`, `payload_too_large`).' },
      id: { ...schema('EventId'), description: '`duplicate_event`: the id of the event first accepted with this `dedup_id`.' },
      limit: { type: 'integer', minimum: 1, description: '`rate_limited`: events per minute of the tier.' },
      retry_after: { type: 'integer', minimum: 1, description: '`rate_limited`: seconds until one more event is admitted.' },
    },
    additionalProperties: false,
  },
  BatchResult: object(['accepted', 'rejected', 'results'], {
    accepted: { type: 'integer', minimum: 0 },
    rejected: { type: 'integer', minimum: 0 },
    results: { type: 'array', items: { oneOf: [schema('BatchAccepted'), schema('BatchRejected')] }, description: 'One result per event, in order.' },
  }),
  DeliveryAttempt: object(['attempted_at', 'duration_ms'], {
    attempted_at: timestamp('When the attempt started.'),
    status_code: { type: 'integer', minimum: 100, maximum: 599, description: 'The endpoint\'s HTTP status; absent when no answer came (timeout, connection error).' },
    duration_ms: { type: 'integer', minimum: 0 },
    error: { type: 'string', description: 'Why the attempt failed, when it did.' },
  }),
  Event: object(['id', 'type', 'payload', 'dedup_id', 'status', 'created_at', 'attempts'], {
    id: schema('EventId'),
    type: schema('EventType'),
    payload: schema('Payload'),
    dedup_id: { anyOf: [schema('DedupId'), { type: 'null' }] },
    status: schema('EventStatus'),
    created_at: timestamp('When the event was accepted.'),
    delivered_at: timestamp('When a webhook attempt got a 2xx.'),
    acknowledged_at: timestamp('When the event was acknowledged.'),
    attempts: { type: 'array', items: schema('DeliveryAttempt'), description: 'Webhook delivery attempts, oldest first.' },
  }),
  InboxEvent: object(['id', 'type', 'payload', 'dedup_id', 'status', 'attempts', 'created_at'], {
    id: schema('EventId'),
    type: schema('EventType'),
    payload: schema('Payload'),
    dedup_id: { anyOf: [schema('DedupId'), { type: 'null' }] },
    status: schema('EventStatus'),
    attempts: { type: 'integer', minimum: 0, description: 'How many delivery attempts were made (the list is on `GET /api/events/{id}`).' },
    created_at: timestamp('When the event was accepted.'),
  }),
  InboxPage: object(['events', 'next_cursor'], {
    events: { type: 'array', items: schema('InboxEvent') },
    next_cursor: {
      type: ['string', 'null'],
      description: 'Set when the page is full (there may be more): pass it as `cursor` for the next page. `null` otherwise.',
    },
  }),
  Acknowledgement: object(['id', 'status', 'acknowledged_at'], {
    id: schema('EventId'),
    status: { const: 'acknowledged' },
    acknowledged_at: timestamp('When the event was first acknowledged (the same on every repeat).'),
  }),
  AckRequest: {
    type: 'object',
    required: ['ids'],
    properties: { ids: { type: 'array', maxItems: MAX_ACK_IDS, items: schema('EventId') } },
  },
  AckResult: object(['acknowledged', 'not_found'], {
    acknowledged: { type: 'array', items: schema('EventId'), description: 'Ids now acknowledged (including ones acknowledged before); duplicates removed.' },
    not_found: { type: 'array', items: schema('EventId'), description: 'Ids unknown to this organization.' },
  }),
  Redelivery: object(['id', 'status'], { id: schema('EventId'), status: { const: 'scheduled' } }),
  Tier: {
    type: 'string',
    enum: TIERS,
    description: `Rate limit per minute: ${TIERS.map((tier) => `${tier} ${PER_MINUTE[tier]}`).join(', ')}.`,
  },
  RateLimitPerMinute: { type: 'integer', enum: TIERS.map((tier) => PER_MINUTE[tier]) },
  ApiKey: {
    type: 'string',
    pattern: '^zap_live_[A-Za-z0-9_-]{43}$',
    description: '`zap_live_` + 256 random bits in base64url. Shown once: only a digest is stored.',
    examples: [EXAMPLE_KEY],
  },
  KeyRequest: {
    type: 'object',
    required: ['organization_name'],
    properties: {
      organization_name: text('The organization\'s name.', { examples: ['Acme Inc.'] }),
      tier: { ...schema('Tier'), default: 'free' },
    },
  },
  KeyCreated: object(['organization_id', 'organization_name', 'api_key', 'tier', 'rate_limit_per_minute', 'created_at'], {
    organization_id: { type: 'string', format: 'uuid' },
    organization_name: { type: 'string' },
    api_key: schema('ApiKey'),
    tier: schema('Tier'),
    rate_limit_per_minute: schema('RateLimitPerMinute'),
    created_at: timestamp('When the organization was created.'),
  }),
  Organization: object(['organization_id', 'organization_name', 'tier', 'rate_limit_per_minute', 'webhook_url', 'created_at'], {
    organization_id: { type: 'string', format: 'uuid' },
    organization_name: { type: 'string' },
    tier: schema('Tier'),
    rate_limit_per_minute: schema('RateLimitPerMinute'),
    webhook_url: { type: ['string', 'null'], format: 'uri' },
    created_at: timestamp('When the organization was created.'),
  }),
  KeyRotated: object(['api_key', 'rotated_at'], {
    api_key: schema('ApiKey'),
    rotated_at: timestamp('When the old key stopped working.'),
  }),
  WebhookUrl: {
    type: 'string',
    format: 'uri',
    maxLength: MAX_URL_LENGTH,
    description: 'An absolute `http` or `https` URL without credentials. Hosts that are or resolve to loopback, private, ' +
      'link-local or metadata addresses are refused (`blocked_webhook_url`) unless the server runs with `WEBHOOK_ALLOW_PRIVATE=true`.',
    examples: ['https://hooks.example.com/triggers'],
  },
  WebhookSecret: {
    type: 'string',
    pattern: '^whsec_[A-Za-z0-9+/]{32,}={0,2}$',
    description: '`whsec_` + base64 of 24 random bytes: the Standard Webhooks signing secret.',
    examples: [EXAMPLE_SECRET],
  },
  WebhookConfigRequest: { type: 'object', required: ['webhook_url'], properties: { webhook_url: schema('WebhookUrl') } },
  WebhookEndpoint: object(['webhook_url', 'secret', 'updated_at'], {
    webhook_url: schema('WebhookUrl'),
    secret: schema('WebhookSecret'),
    updated_at: timestamp('When the endpoint was last configured.'),
  }),
  WebhookEndpointInfo: object(['webhook_url', 'secret', 'updated_at', 'disabled'], {
    webhook_url: schema('WebhookUrl'),
    secret: { anyOf: [schema('WebhookSecret'), { type: 'null' }], description: '`null` if the stored secret cannot be decrypted with this server\'s `WEBHOOK_SECRET_KEY` (configure the endpoint again).' },
    updated_at: timestamp('When the endpoint was last configured.'),
    disabled: { type: 'boolean', description: '`true` after the endpoint answered 410 Gone; configuring it again re-enables it.' },
  }),
  WebhookSecretRotated: object(['secret'], { secret: schema('WebhookSecret') }),
  Health: object(['status'], { status: { const: 'ok' } }),
  Ready: object(['status', 'database', 'backlog'], {
    status: { const: 'ready' },
    database: { enum: ['connected', 'unreachable'], description: 'Postgres reachability. Ingestion does not need it (the log absorbs an outage).' },
    backlog: { type: 'integer', minimum: 0, description: 'Accepted events in the log not yet in Postgres.' },
  }),
  NotReady: object(['status', 'code', 'error', 'database', 'backlog'], {
    status: { const: 'not_ready' },
    code: { const: 'not_ready' },
    error: { type: 'string' },
    database: { enum: ['connected', 'unreachable'] },
    backlog: { type: 'integer', minimum: 0 },
  }),
  WebhookDelivery: object(['id', 'type', 'timestamp', 'data'], {
    id: schema('EventId'),
    type: schema('EventType'),
    timestamp: timestamp('When the event was accepted.'),
    data: schema('Payload'),
  }, 'What the server POSTs to the organization\'s webhook endpoint.'),
};

const eventIdParameter: Parameter = {
  name: 'id',
  in: 'path',
  required: true,
  description: 'Event id (any UUID form is read, case-insensitively). Malformed → 400 `invalid_id`; unknown or another organization\'s → 404.',
  schema: schema('EventId'),
};

const inboxParameters: Parameter[] = [
  {
    name: 'status',
    in: 'query',
    description: 'Which events: one status, or `all`. Default: not yet delivered nor acknowledged (`pending` and `failed`).',
    schema: { type: 'string', enum: [...EVENT_STATUSES, 'all'] },
  },
  { name: 'type', in: 'query', description: 'Only events of this type.', schema: schema('EventType') },
  { name: 'limit', in: 'query', description: 'Page size.', schema: { type: 'integer', minimum: 1, maximum: MAX_LIMIT, default: DEFAULT_LIMIT } },
  {
    name: 'cursor',
    in: 'query',
    description: 'Opaque: the previous page\'s `next_cursor`. It carries its listing\'s filters; a malformed one, or one sent with ' +
      'other `status`/`type`/`order`, is 400 `invalid_cursor`. Paging visits each matching event exactly once, even while new events arrive.',
    schema: { type: 'string' },
  },
  { name: 'order', in: 'query', description: '`asc`: oldest first; `desc`: newest first.', schema: { type: 'string', enum: ['asc', 'desc'], default: 'asc' } },
];

const idempotentNote = 'Idempotent: acking again answers 200 with the same `acknowledged_at`. An acknowledged event is never delivered or retried again and leaves the default inbox.';

const paths: Record<string, PathItem> = {
  '/api/keys/generate': {
    post: {
      operationId: 'generateKey',
      tags: ['Keys'],
      summary: 'Create an organization and its API key',
      description: 'The key is shown once (only its digest is stored). When the server has `ADMIN_TOKEN` set this route needs ' +
        '`Authorization: Bearer <ADMIN_TOKEN>`; without it the route is open (and the server logs a warning at start). ' +
        jsonBodyNote(MAX_KEYS_BODY),
      security: [{ adminToken: [] }, {}],
      requestBody: { required: true, content: json(schema('KeyRequest'), { organization_name: 'Acme Inc.', tier: 'pro' }) },
      responses: {
        201: {
          description: 'Created.',
          content: json(schema('KeyCreated'), {
            organization_id: EXAMPLE_ORG, organization_name: 'Acme Inc.', api_key: EXAMPLE_KEY, tier: 'pro', rate_limit_per_minute: 1000, created_at: EXAMPLE_TIME,
          }),
        },
        ...errorResponses(['admin_token_required', ...JSON_BODY, 'database_unavailable', 'internal_error']),
      },
    },
  },
  '/api/keys': {
    get: {
      operationId: 'getOrganization',
      tags: ['Keys'],
      summary: 'The organization behind the key',
      responses: {
        200: {
          description: 'The organization.',
          content: json(schema('Organization'), {
            organization_id: EXAMPLE_ORG, organization_name: 'Acme Inc.', tier: 'pro', rate_limit_per_minute: 1000, webhook_url: null, created_at: EXAMPLE_TIME,
          }),
        },
        ...errorResponses(AUTHENTICATED),
      },
    },
  },
  '/api/keys/rotate': {
    post: {
      operationId: 'rotateKey',
      tags: ['Keys'],
      summary: 'Replace the API key',
      description: 'The old key is refused at once on every thread of this instance, and within about a second on other instances sharing the database.',
      responses: {
        200: { description: 'The new key (shown once).', content: json(schema('KeyRotated'), { api_key: EXAMPLE_KEY, rotated_at: EXAMPLE_TIME }) },
        ...errorResponses(AUTHENTICATED),
      },
    },
  },
  '/api/webhook/config': {
    post: {
      operationId: 'configureWebhook',
      tags: ['Webhooks'],
      summary: 'Set the webhook endpoint',
      description: 'Creates the endpoint with a new signing secret, or changes its URL (the secret is kept; a disabled endpoint is re-enabled). ' +
        jsonBodyNote(MAX_CONFIG_BODY),
      requestBody: { required: true, content: json(schema('WebhookConfigRequest'), { webhook_url: 'https://hooks.example.com/triggers' }) },
      responses: {
        200: {
          description: 'The endpoint and its secret.',
          content: json(schema('WebhookEndpoint'), { webhook_url: 'https://hooks.example.com/triggers', secret: EXAMPLE_SECRET, updated_at: EXAMPLE_TIME }),
        },
        ...errorResponses([...AUTHENTICATED, ...JSON_BODY, 'invalid_webhook_url', 'blocked_webhook_url']),
      },
    },
    get: {
      operationId: 'getWebhook',
      tags: ['Webhooks'],
      summary: 'Show the webhook endpoint',
      responses: {
        200: {
          description: 'The endpoint.',
          content: json(schema('WebhookEndpointInfo'), { webhook_url: 'https://hooks.example.com/triggers', secret: EXAMPLE_SECRET, updated_at: EXAMPLE_TIME, disabled: false }),
        },
        ...errorResponses([...AUTHENTICATED, 'not_found']),
      },
    },
    delete: {
      operationId: 'deleteWebhook',
      tags: ['Webhooks'],
      summary: 'Remove the webhook endpoint',
      description: 'Stops delivery; pending deliveries are unscheduled (the events stay in the inbox).',
      responses: { 204: { description: 'Removed.' }, ...errorResponses([...AUTHENTICATED, 'not_found']) },
    },
  },
  '/api/webhook/rotate-secret': {
    post: {
      operationId: 'rotateWebhookSecret',
      tags: ['Webhooks'],
      summary: 'Replace the signing secret',
      description: `For ${SECRET_OVERLAP_MS / 3_600_000} h deliveries carry signatures by both the old and the new secret.`,
      responses: {
        200: { description: 'The new secret.', content: json(schema('WebhookSecretRotated'), { secret: EXAMPLE_SECRET }) },
        ...errorResponses([...AUTHENTICATED, 'not_found']),
      },
    },
  },
  '/api/events': {
    post: {
      operationId: 'sendEvent',
      tags: ['Events'],
      summary: 'Send an event',
      description: 'Checks run auth → validation → rate → dedup → append; the 202 is sent only after the event is durably committed ' +
        'to the log. A 409 costs a rate-limit token too. ' + jsonBodyNote(MAX_EVENT_BODY),
      requestBody: { required: true, content: json(schema('EventInput'), { type: 'order.created', payload: EXAMPLE_PAYLOAD, dedup_id: 'order-1042-created' }) },
      responses: {
        202: {
          description: 'Accepted and durable.',
          headers: rateHeaders(),
          content: json(schema('EventAccepted'), { id: EXAMPLE_ID, status: 'accepted', received_at: EXAMPLE_TIME }),
        },
        ...errorResponses([...AUTHENTICATED, ...JSON_BODY, 'duplicate_event', 'rate_limited'], ingestHeaders),
      },
    },
  },
  '/api/events/batch': {
    post: {
      operationId: 'sendEvents',
      tags: ['Events'],
      summary: 'Send up to 1000 events',
      description: `Each event is judged alone (validation, size, rate, dedup) and each accepted one is durable before the answer; ` +
        'within one batch the first of two equal `dedup_id`s wins. A batch of n valid events costs n rate-limit tokens; ' +
        'events beyond the tokens left are rejected with `rate_limited` in `results`. A body that is not `{events: [...]}` or holds ' +
        `more than ${MAX_BATCH_EVENTS} events is 400 \`validation_error\`. ` + jsonBodyNote(MAX_BATCH_BODY),
      requestBody: {
        required: true,
        content: json(schema('BatchRequest'), {
          events: [{ type: 'order.created', payload: EXAMPLE_PAYLOAD }, { type: 'order.paid', payload: { order_id: 'ord_1042' }, dedup_id: 'order-1042-paid' }],
        }),
      },
      responses: {
        200: {
          description: 'One result per event.',
          headers: rateHeaders(),
          content: json(schema('BatchResult'), {
            accepted: 1,
            rejected: 1,
            results: [
              { index: 0, id: EXAMPLE_ID, status: 'accepted' },
              { index: 1, code: 'validation_error', error: 'type must be 1 to 255 characters.', field: 'type' },
            ],
          }),
        },
        ...errorResponses([...AUTHENTICATED, ...JSON_BODY], ingestHeaders),
      },
    },
  },
  '/api/events/{id}': {
    parameters: [eventIdParameter],
    get: {
      operationId: 'getEvent',
      tags: ['Events'],
      summary: 'Read one event with its delivery attempts',
      description: 'Read-your-writes: an event that got its 202 is found at once (from the log before it reached Postgres).',
      responses: {
        200: {
          description: 'The event.',
          content: json(schema('Event'), {
            id: EXAMPLE_ID, type: 'order.created', payload: EXAMPLE_PAYLOAD, dedup_id: null, status: 'delivered', created_at: EXAMPLE_TIME,
            delivered_at: EXAMPLE_TIME, attempts: [{ attempted_at: EXAMPLE_TIME, status_code: 200, duration_ms: 42 }],
          }),
        },
        ...errorResponses([...AUTHENTICATED, 'invalid_id', 'not_found']),
      },
    },
  },
  '/api/events/{id}/redeliver': {
    parameters: [eventIdParameter],
    post: {
      operationId: 'redeliverEvent',
      tags: ['Events'],
      summary: 'Schedule a fresh round of deliveries',
      description: 'The retry schedule starts over. Needs an active webhook endpoint (409 `no_webhook_endpoint`); an acknowledged event is never delivered again (409 `event_acknowledged`).',
      responses: {
        202: { description: 'Scheduled.', content: json(schema('Redelivery'), { id: EXAMPLE_ID, status: 'scheduled' }) },
        ...errorResponses([...AUTHENTICATED, 'invalid_id', 'not_found', 'no_webhook_endpoint', 'event_acknowledged']),
      },
    },
  },
  '/api/inbox': {
    get: {
      operationId: 'listInbox',
      tags: ['Inbox'],
      summary: 'List events (pull side)',
      description: 'Read-your-writes: shows every event for which this organization already got its 202. If Postgres stays unreachable for 5 s the answer is 503 `database_unavailable`.',
      parameters: inboxParameters,
      responses: {
        200: {
          description: 'A page of events.',
          content: json(schema('InboxPage'), {
            events: [{ id: EXAMPLE_ID, type: 'order.created', payload: EXAMPLE_PAYLOAD, dedup_id: null, status: 'pending', attempts: 0, created_at: EXAMPLE_TIME }],
            next_cursor: null,
          }),
        },
        ...errorResponses([...AUTHENTICATED, 'validation_error', 'invalid_cursor']),
      },
    },
  },
  '/api/ack/{id}': {
    parameters: [eventIdParameter],
    post: {
      operationId: 'ackEvent',
      tags: ['Inbox'],
      summary: 'Acknowledge one event',
      description: idempotentNote,
      responses: {
        200: { description: 'Acknowledged.', content: json(schema('Acknowledgement'), { id: EXAMPLE_ID, status: 'acknowledged', acknowledged_at: EXAMPLE_TIME }) },
        ...errorResponses([...AUTHENTICATED, 'invalid_id', 'not_found']),
      },
    },
  },
  '/api/ack': {
    post: {
      operationId: 'ackEvents',
      tags: ['Inbox'],
      summary: `Acknowledge up to ${MAX_ACK_IDS} events`,
      description: `${idempotentNote} ${jsonBodyNote(MAX_ACK_BODY)}`,
      requestBody: { required: true, content: json(schema('AckRequest'), { ids: [EXAMPLE_ID] }) },
      responses: {
        200: { description: 'Which ids were acknowledged.', content: json(schema('AckResult'), { acknowledged: [EXAMPLE_ID], not_found: [] }) },
        ...errorResponses([...AUTHENTICATED, ...JSON_BODY]),
      },
    },
  },
  '/health': {
    get: { operationId: 'health', tags: ['Health'], summary: 'Liveness', security: [], responses: { 200: { description: 'The process is up.', content: json(schema('Health'), { status: 'ok' }) } } },
  },
  '/health/live': {
    get: { operationId: 'healthLive', tags: ['Health'], summary: 'Liveness', security: [], responses: { 200: { description: 'The process is up.', content: json(schema('Health'), { status: 'ok' }) } } },
  },
  '/health/ready': {
    get: {
      operationId: 'healthReady',
      tags: ['Health'],
      summary: 'Readiness',
      description: 'Ready means events are accepted: that needs the log, not Postgres (an outage only grows `backlog`).',
      security: [],
      responses: {
        200: { description: 'Accepting events.', content: json(schema('Ready'), { status: 'ready', database: 'connected', backlog: 0 }) },
        503: {
          description: 'Not accepting events (starting or shutting down).',
          content: json(schema('NotReady'), { status: 'not_ready', code: 'not_ready', error: 'The server cannot accept events right now.', database: 'connected', backlog: 0 }),
        },
      },
    },
  },
  '/metrics': {
    get: {
      operationId: 'metrics',
      tags: ['Health'],
      summary: 'Prometheus metrics',
      description: 'Events accepted and rejected by code, ingest latency, log backlog, drain lag, deliveries by outcome, worker pool use.',
      security: [],
      responses: {
        200: {
          description: 'Prometheus text exposition format.',
          content: { 'text/plain': { schema: { type: 'string' }, example: 'triggers_events_accepted_total 42\n' } },
        },
      },
    },
  },
  '/openapi.json': {
    get: {
      operationId: 'openapi',
      tags: ['Documentation'],
      summary: 'This OpenAPI 3.1 document',
      security: [],
      responses: { 200: { description: 'The document.', content: { 'application/json': { schema: { type: 'object', required: ['openapi', 'paths'] } } } } },
    },
  },
  '/docs': {
    get: {
      operationId: 'docs',
      tags: ['Documentation'],
      summary: 'The API reference (this page)',
      security: [],
      responses: { 200: { description: 'An HTML page rendering `/openapi.json` with Swagger UI.', content: { 'text/html': { schema: { type: 'string' } } } } },
    },
  },
  '/docs/{asset}': {
    get: {
      operationId: 'docsAsset',
      tags: ['Documentation'],
      summary: 'Static files of the API reference',
      security: [],
      parameters: [{ name: 'asset', in: 'path', required: true, description: 'File name.', schema: { type: 'string', examples: ['swagger-ui.css'] } }],
      responses: {
        200: {
          description: 'The file.',
          content: {
            'text/css': { schema: { type: 'string' } },
            'text/javascript': { schema: { type: 'string' } },
            'image/png': { schema: { type: 'string', contentMediaType: 'image/png' } },
          },
        },
        ...errorResponses(['not_found']),
      },
    },
  },
};

const description = `**Errors.** Every error is JSON \`{"error": "<one sentence>", "code": "<snake_case>", "field"?: "<name>"}\`; \`code\` is stable
(see the \`Error\` schema for all codes). An unknown route answers 404 \`not_found\`, a wrong method 405 \`method_not_allowed\`
(with \`Allow\`). \`HEAD\` is answered on every \`GET\` route.

**Auth.** Send the key as \`X-API-Key: <key>\` (or \`Authorization: Bearer <key>\`; \`X-API-Key\` wins when both are sent).
Missing → 401 \`missing_api_key\`, unknown or rotated away → 401 \`invalid_api_key\`, both with \`WWW-Authenticate: ApiKey\`.
An organization never learns anything about another's events (404, not 403).

**Rate limits.** Per organization and minute: ${TIERS.map((tier) => `${tier} ${PER_MINUTE[tier].toLocaleString('en')}`).join(', ')} events,
refilled smoothly (burst = one minute's quota). Every answer of \`POST /api/events\` and \`POST /api/events/batch\` after the key is
known carries \`RateLimit-Limit\`, \`RateLimit-Remaining\`, \`RateLimit-Reset\` (seconds until the bucket is full), \`X-RateLimit-Limit\`
and \`X-RateLimit-Remaining\`; a 429 adds \`Retry-After\` and body fields \`limit\`, \`retry_after\`.

**Durability.** A 202 means the event is committed to the server's LMDB log (by default also flushed to disk) and survives a crash;
it drains to Postgres in the background, and a Postgres outage does not stop ingestion.

**Webhooks.** Each accepted event of an organization with an endpoint is POSTed to it at least once (see *Webhooks* below),
signed per Standard Webhooks. 2xx = delivered; anything else or a timeout is retried on a schedule (default 5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 10 h, ±20 % jitter); 410 disables the endpoint.`;

export const openapi: OpenApiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'Triggers API',
    version: '1.0.0',
    summary: 'Durable event ingestion, inbox with ack, signed webhooks.',
    description,
  },
  tags: [
    { name: 'Events', description: 'Send events and read them back.' },
    { name: 'Inbox', description: 'Pull events and acknowledge them.' },
    { name: 'Webhooks', description: 'The endpoint events are pushed to.' },
    { name: 'Keys', description: 'Organizations and their API keys.' },
    { name: 'Health', description: 'Liveness, readiness and metrics.' },
    { name: 'Documentation', description: 'This reference.' },
  ],
  security: [{ apiKey: [] }, { bearerApiKey: [] }],
  paths,
  webhooks: {
    event: {
      post: {
        operationId: 'deliverEvent',
        tags: ['Webhooks'],
        summary: 'An event, POSTed to the organization\'s endpoint',
        description: 'Verify with any Standard Webhooks library (e.g. the `standardwebhooks` npm package) and the endpoint\'s secret. ' +
          'The same `webhook-id` is sent on every retry: use it to drop duplicates.',
        security: [],
        parameters: [
          { name: 'webhook-id', in: 'header', required: true, description: 'The event id.', schema: schema('EventId') },
          { name: 'webhook-timestamp', in: 'header', required: true, description: 'Unix seconds of this attempt.', schema: { type: 'string', pattern: '^\\d+$' } },
          {
            name: 'webhook-signature',
            in: 'header',
            required: true,
            description: '`v1,<base64 HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")>`; space-separated signatures by both secrets for 24 h after a rotation.',
            schema: { type: 'string' },
          },
        ],
        requestBody: { required: true, content: json(schema('WebhookDelivery'), { id: EXAMPLE_ID, type: 'order.created', timestamp: EXAMPLE_TIME, data: EXAMPLE_PAYLOAD }) },
        responses: {
          '2XX': { description: 'Delivered.' },
          410: { description: 'Gone: the endpoint is disabled; nothing more is sent until it is configured again.' },
          default: { description: 'Anything else (or no answer within `WEBHOOK_TIMEOUT`) is retried; 429 and 503 `Retry-After` are honoured within the schedule.' },
        },
      },
    },
  },
  components: {
    securitySchemes: {
      apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'The organization\'s API key.' },
      bearerApiKey: { type: 'http', scheme: 'bearer', description: 'The API key as `Authorization: Bearer <key>` (`X-API-Key` wins when both are sent).' },
      adminToken: { type: 'http', scheme: 'bearer', description: 'The server\'s `ADMIN_TOKEN`, for `POST /api/keys/generate` when it is set.' },
    },
    schemas,
    headers,
  },
};
