// The API's request and response shapes (see shared/API.md), as the client sends and returns them.

export type Tier = 'free' | 'pro' | 'business' | 'enterprise';
export type EventStatus = 'pending' | 'delivered' | 'failed' | 'acknowledged';
export type JsonObject = Record<string, unknown>;

export interface EventInput {
  type: string;
  payload: JsonObject;
  dedup_id?: string;
}

export interface KeyCreated {
  organization_id: string;
  organization_name: string;
  api_key: string;
  tier: Tier;
  rate_limit_per_minute: number;
  created_at: string;
}

export interface KeyInfo {
  organization_id: string;
  organization_name: string;
  tier: Tier;
  rate_limit_per_minute: number;
  webhook_url: string | null;
  created_at: string;
}

export interface KeyRotated {
  api_key: string;
  rotated_at: string;
}

export interface SendResult {
  id: string;
  status: 'accepted';
  /** Null when the answer was a 409 recovered as this call's own earlier attempt (see `duplicate`). */
  received_at: string | null;
  /** The dedup_id the event was sent with: the caller's, or one the client generated. */
  dedup_id: string;
  /**
   * True when the server answered 409 `duplicate_event` to a retry and the client recognised it
   * as the echo of its own earlier attempt, which landed although its answer was lost.
   */
  duplicate: boolean;
}

export type BatchItemResult =
  | { index: number; id: string; status: 'accepted'; dedup_id: string; duplicate: boolean }
  | { index: number; code: string; error: string; id?: string; field?: string; retry_after?: number };

export interface BatchResult {
  accepted: number;
  rejected: number;
  /** One per event sent, in the order given (`index` counts across chunks). */
  results: BatchItemResult[];
}

export interface DeliveryAttempt {
  attempted_at: string;
  status_code?: number;
  duration_ms: number;
  error?: string;
}

export interface StoredEvent {
  id: string;
  type: string;
  payload: JsonObject;
  dedup_id: string | null;
  status: EventStatus;
  created_at: string;
  delivered_at?: string;
  acknowledged_at?: string;
  attempts: DeliveryAttempt[];
}

export interface InboxEvent {
  id: string;
  type: string;
  payload: JsonObject;
  dedup_id: string | null;
  status: EventStatus;
  /** The number of delivery attempts so far. */
  attempts: number;
  created_at: string;
}

export interface InboxQuery {
  /** Default: pending + failed (not yet delivered nor acknowledged). */
  status?: EventStatus | 'all';
  type?: string;
  /** Page size, 1..1000 (default 100). */
  limit?: number;
  order?: 'asc' | 'desc';
  /** Continue a listing from a page's `next_cursor`. */
  cursor?: string;
}

export interface InboxPage {
  events: InboxEvent[];
  next_cursor: string | null;
}

export interface Acked {
  id: string;
  status: 'acknowledged';
  acknowledged_at: string;
}

export interface AckManyResult {
  acknowledged: string[];
  not_found: string[];
}

export interface WebhookConfig {
  webhook_url: string;
  /** Null when the server can no longer decrypt the stored secret (configure the endpoint again). */
  secret: string | null;
  updated_at: string;
  /** True after the endpoint answered 410 Gone (GET only). */
  disabled?: boolean;
}

/** The body of a webhook delivery. */
export interface WebhookEvent {
  id: string;
  type: string;
  /** ISO 8601. */
  timestamp: string;
  data: JsonObject;
}
