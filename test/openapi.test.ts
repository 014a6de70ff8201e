// The OpenAPI document (src/openapi/document.ts): valid OpenAPI 3.1, every $ref resolves, exactly
// the routes the server registers, every error code documented, and the response oracle of
// test/helpers/openapi.ts catches what it should. No server: the route list comes from the route
// modules registered on a recording stand-in for the uWS app.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ROUTE_MODULES } from '../src/acceptor.ts';
import type { AcceptorContext } from '../src/context.ts';
import { ERROR_CODES } from '../src/errors.ts';
import { Router } from '../src/http/router.ts';
import type { TemplatedApp } from '../src/http/uws.ts';
import { openapi, ROUTER_ERROR_CODES, type Schema } from '../src/openapi/document.ts';
import { contractViolation, createAjv, validator, type ObservedReply } from './helpers/openapi.ts';

const FIXTURES = new URL('./fixtures/oas-3.1/', import.meta.url);
const fixture = (name: string) => JSON.parse(readFileSync(new URL(name, FIXTURES), 'utf8')) as Schema & { $id: string };
const METHODS = ['get', 'post', 'delete'] as const;

/** Every node of the document with its JSON pointer. */
function* walk(node: unknown, pointer = '#'): Generator<[string, unknown]> {
  yield [pointer, node];
  if (typeof node !== 'object' || node === null) return;
  for (const [key, value] of Object.entries(node)) yield* walk(value, `${pointer}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`);
}

/** The Schema Objects of the document: component schemas and every `schema` of a parameter, header or media type. */
function schemaObjects(): Array<[string, Schema]> {
  const found: Array<[string, Schema]> = Object.entries(openapi.components.schemas).map(([name, schema]) => [`#/components/schemas/${name}`, schema]);
  for (const [pointer, node] of walk({ paths: openapi.paths, webhooks: openapi.webhooks, components: { headers: openapi.components.headers } })) {
    if (pointer.endsWith('/schema') && !pointer.includes('/schema/')) found.push([pointer.replace(/^#/, '#'), node as Schema]);
  }
  return found;
}

function resolvePointer(pointer: string): unknown {
  return pointer.replace(/^#\/?/, '').split('/').filter(Boolean)
    .map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'))
    .reduce<any>((node, part) => (node === undefined ? undefined : node[part]), openapi);
}

/** `METHOD /pattern` of every route the server registers (HEAD comes with every GET, so it is left out). */
function registeredRoutes(): string[] {
  const routes: string[] = [];
  const dataDir = mkdtempSync(path.join(tmpdir(), 'triggers-openapi-'));
  try {
    const record = (method: string) => (pattern: string) => {
      routes.push(`${method} ${pattern}`);
      return app;
    };
    const app = { get: record('GET'), post: record('POST'), del: record('DELETE'), head: () => app, any: () => app } as unknown as TemplatedApp;
    const ctx = { config: { webhookSecretKey: randomBytes(32).toString('base64'), dataDir } } as unknown as AcceptorContext;
    const router = new Router(app, () => {});
    for (const register of ROUTE_MODULES) register(router, ctx);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
  return routes.sort();
}

const documentSuite = suite('openapi document');

documentSuite('is a valid OpenAPI 3.1 document (official schema)', () => {
  const ajv = createAjv({ strict: false });
  ajv.addFormat('media-range', true);
  // See fixtures/oas-3.1/README.md: Ajv needs the one dynamic anchor as a plain $ref.
  const schema = JSON.parse(JSON.stringify(fixture('schema.json')).replaceAll('"$dynamicRef":"#meta"', '"$ref":"#/$defs/schema"'));
  const validate = ajv.compile(schema);
  assert.ok(validate(openapi), `not valid OpenAPI 3.1: ${ajv.errorsText(validate.errors, { separator: '\n' })}`);
  assert.match(openapi.openapi, /^3\.1\.\d+$/);
});

documentSuite('every Schema Object is valid in the OAS 3.1 dialect and compiles under strict JSON Schema 2020-12', () => {
  const ajv = createAjv({ strict: false });
  ajv.addSchema(fixture('meta-base.schema.json'));
  const dialect = fixture('dialect-base.schema.json');
  ajv.addSchema(dialect);
  const validate = ajv.getSchema(dialect.$id)!;
  const schemas = schemaObjects();
  assert.ok(schemas.length > 50, `only ${schemas.length} Schema Objects found: the walk is broken`);
  for (const [pointer, schema] of schemas) {
    assert.ok(validate(schema), `${pointer}: ${ajv.errorsText(validate.errors)}`);
    try {
      validator(pointer, schema);
    } catch (error) {
      assert.unreachable(`${pointer} does not compile: ${(error as Error).message}`);
    }
  }
});

documentSuite('every $ref resolves', () => {
  let refs = 0;
  for (const [pointer, node] of walk(openapi)) {
    if (!pointer.endsWith('/$ref') || typeof node !== 'string') continue;
    refs++;
    assert.ok(node.startsWith('#/'), `${pointer}: only local refs are used, got ${node}`);
    assert.ok(resolvePointer(node) !== undefined, `${pointer}: ${node} does not resolve`);
  }
  assert.ok(refs > 50, `only ${refs} refs found: the walk is broken`);
});

documentSuite('documents exactly the routes the server registers', () => {
  const registered = registeredRoutes();
  const documented = Object.entries(openapi.paths)
    .flatMap(([template, item]) => METHODS.filter((method) => item[method]).map((method) => `${method.toUpperCase()} ${template.replace(/\{(\w+)\}/g, ':$1')}`))
    .sort();
  assert.ok(registered.includes('POST /api/events'), `the route list is broken: ${registered.join(', ')}`);
  const undocumented = registered.filter((route) => !documented.includes(route));
  const phantom = documented.filter((route) => !registered.includes(route));
  assert.equal(undocumented, [], `registered but not documented: ${undocumented.join(', ')}`);
  assert.equal(phantom, [], `documented but not registered: ${phantom.join(', ')}`);
});

documentSuite('every operation has a unique operationId, a tag and path parameters for its template', () => {
  const ids = new Set<string>();
  for (const [template, item] of Object.entries(openapi.paths)) {
    const names = [...template.matchAll(/\{(\w+)\}/g)].map((match) => match[1]);
    for (const method of METHODS) {
      const operation = item[method];
      if (!operation) continue;
      assert.not.ok(ids.has(operation.operationId), `duplicate operationId ${operation.operationId}`);
      ids.add(operation.operationId);
      assert.ok(operation.tags.length > 0, `${method} ${template} has no tag`);
      const declared = [...(item.parameters ?? []), ...(operation.parameters ?? [])]
        .filter((parameter) => 'in' in parameter && parameter.in === 'path')
        .map((parameter) => ('name' in parameter ? parameter.name : ''));
      assert.equal(declared.sort(), names.sort(), `${method} ${template}: path parameters`);
    }
  }
});

documentSuite('every error code of src/errors.ts is documented on some answer', () => {
  const documented = new Set<string>(ROUTER_ERROR_CODES);
  for (const [pointer, node] of walk(openapi.paths)) {
    if (/\/responses\/[45]\d\d\/content\/application~1json\/examples\/[^/]+\/value\/code$/.test(pointer)) documented.add(node as string);
  }
  const missing = ERROR_CODES.filter((code) => !documented.has(code));
  assert.equal(missing, [], `codes no answer documents: ${missing.join(', ')}`);
  const enumerated = (openapi.components.schemas.Error as { properties: { code: { enum: string[] } } }).properties.code.enum;
  assert.equal(enumerated, ERROR_CODES);
});

documentSuite.run();

const oracle = suite('openapi response oracle');

const accepted = (overrides: Partial<ObservedReply> = {}): ObservedReply => {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'ratelimit-limit': '100', 'ratelimit-remaining': '99', 'ratelimit-reset': '1', 'x-ratelimit-limit': '100', 'x-ratelimit-remaining': '99',
  };
  return {
    method: 'POST',
    url: '/api/events',
    status: 202,
    header: (name) => headers[name] ?? null,
    text: JSON.stringify({ id: '01966b2e-5b7c-7f3a-9c1d-2e4f6a8b0c1d', status: 'accepted', received_at: '2025-04-16T09:30:12.345Z' }),
    ...overrides,
  };
};

oracle('accepts a reply that matches the document', () => {
  assert.is(contractViolation(accepted()), null);
  assert.is(contractViolation(accepted({ url: '/api/events?x=1' })), null);
});

oracle('catches a body that does not match the schema', () => {
  const violation = contractViolation(accepted({ text: JSON.stringify({ status: 'accepted', received_at: 'yesterday' }) }));
  assert.ok(violation?.includes('the body does not match'), String(violation));
  assert.ok(violation?.includes('id'), String(violation));
});

oracle('catches an undocumented status, a missing required header and an undocumented media type', () => {
  assert.ok(contractViolation(accepted({ status: 201 }))?.includes('status 201 is not documented'));
  assert.ok(contractViolation(accepted({ header: (name) => (name === 'content-type' ? 'application/json' : null) }))?.includes('required header RateLimit-Limit'));
  assert.ok(contractViolation(accepted({ header: (name) => (name === 'content-type' ? 'text/plain' : '1') }))?.includes('content-type "text/plain"'));
});

oracle('catches an error code the status does not document there', () => {
  const reply = accepted({ status: 404, text: JSON.stringify({ error: 'Not found.', code: 'not_found' }) });
  assert.ok(contractViolation(reply)?.includes('status 404 is not documented'));
  const wrongCode = accepted({ url: '/api/keys', method: 'GET', status: 401, header: (name) => ({ 'content-type': 'application/json', 'www-authenticate': 'ApiKey' })[name] ?? null, text: JSON.stringify({ error: 'x', code: 'rate_limited' }) });
  assert.ok(contractViolation(wrongCode)?.includes('/code must be equal to one of the allowed values'), String(contractViolation(wrongCode)));
});

oracle('an unknown path may only be the router\'s 404, a wrong method only its 405', () => {
  const fallback = (method: string, url: string, status: number, code: string) =>
    contractViolation({ method, url, status, header: () => 'application/json', text: JSON.stringify({ error: 'x', code }) });
  assert.is(fallback('GET', '/nope', 404, 'not_found'), null);
  assert.is(fallback('PUT', '/api/events', 405, 'method_not_allowed'), null);
  assert.ok(fallback('GET', '/api/undocumented', 200, 'not_found')?.includes('not in the document'));
  assert.ok(fallback('PUT', '/api/events', 200, 'x')?.includes('not documented on /api/events'));
});

oracle.run();
