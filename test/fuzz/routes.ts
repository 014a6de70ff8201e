// Every route the server has, for the fuzzers: taken from the OpenAPI document (test/openapi.test.ts
// proves it lists exactly the routes the server registers), with what a fuzzer needs on top: each
// JSON route's body limit and the fields that would make its body valid.
import { openapi, type Method, type Operation } from '../../src/openapi/document.ts';
import { MAX_BATCH_BODY, MAX_EVENT_BODY } from '../../src/routes/events.ts';
import { MAX_ACK_BODY } from '../../src/routes/inbox.ts';
import { MAX_KEYS_BODY } from '../../src/routes/keys.ts';
import { MAX_CONFIG_BODY } from '../../src/routes/webhooks.ts';

export type Auth = 'none' | 'apiKey' | 'adminToken';

export interface RouteSpec {
  method: 'GET' | 'POST' | 'DELETE';
  /** The document's template, e.g. /api/events/{id}. */
  template: string;
  auth: Auth;
  /** JSON body routes only. */
  body?: BodySpec;
}

export interface BodySpec {
  /** Bytes the route reads before it answers 413. */
  limit: number;
  /**
   * Fields that make a valid body, used only hidden behind __proto__ (the server must not see them).
   * The webhook URL is a loopback one: even a server that did read it must not call out.
   */
  fields: Record<string, unknown>;
}

const BODIES: Record<string, BodySpec> = {
  'POST /api/keys/generate': { limit: MAX_KEYS_BODY, fields: { organization_name: 'prototype org' } },
  'POST /api/webhook/config': { limit: MAX_CONFIG_BODY, fields: { webhook_url: 'http://[::1]/hook' } },
  'POST /api/events': { limit: MAX_EVENT_BODY, fields: { type: 'prototype.event', payload: {} } },
  'POST /api/events/batch': { limit: MAX_BATCH_BODY, fields: { events: [{ type: 'prototype.event', payload: {} }] } },
  'POST /api/ack': { limit: MAX_ACK_BODY, fields: { ids: [] } },
};

function authOf(operation: Operation): Auth {
  const security = operation.security ?? openapi.security;
  if (security.length === 0 || security.every((requirement) => Object.keys(requirement).length === 0)) return 'none';
  if (security.some((requirement) => 'adminToken' in requirement)) return 'adminToken';
  return 'apiKey';
}

function collectRoutes(): RouteSpec[] {
  const routes: RouteSpec[] = [];
  for (const [template, item] of Object.entries(openapi.paths)) {
    for (const method of ['get', 'post', 'delete'] as const satisfies readonly Method[]) {
      const operation = item[method];
      if (!operation) continue;
      const name = `${method.toUpperCase()} ${template}`;
      const body = BODIES[name];
      // A new JSON route needs its limit and fields here, or it would be fuzzed without bodies.
      if (operation.requestBody && !body) throw new Error(`test/fuzz/routes.ts: no body spec for ${name}`);
      routes.push({ method: method.toUpperCase() as RouteSpec['method'], template, auth: authOf(operation), ...(body ? { body } : {}) });
    }
  }
  return routes;
}

export const ROUTES: readonly RouteSpec[] = collectRoutes();
export const BODY_ROUTES = ROUTES.filter((route): route is RouteSpec & { body: BodySpec } => route.body !== undefined);

/** The template with its parameters replaced by `value` (already URL-safe). */
export function fillTemplate(template: string, value: string): string {
  return template.replace(/\{[^}]+\}/g, value);
}

/**
 * What a request with garbage may change when it succeeds. Everything else that answers 2xx to a
 * POST or DELETE of the fuzzer changed state it must not have changed.
 */
export const HARMLESS_SUCCESS = new Set(['POST /api/events/batch', 'POST /api/ack', 'POST /api/keys/rotate']);
