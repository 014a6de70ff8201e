// The OpenAPI document as a test oracle: every answer the suite receives through the shared HTTP
// helpers (TestServer.request, rawRequest/freshRequest/post, streamPartial) is matched to its
// operation and status, its required headers and media type are checked, and a JSON body is
// validated against the documented schema. A mismatch fails the calling test.
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import formats from 'ajv-formats';
import { openapi, ROUTER_ERROR_CODES, type Header, type Method, type Operation, type Response, type Schema } from '../../src/openapi/document.ts';

/** A JSON Schema 2020-12 validator with the formats the document uses (uuid, date-time, uri). */
export function createAjv(options: { strict?: boolean } = {}): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, strict: options.strict ?? true, strictTypes: false, strictRequired: false });
  formats.default(ajv);
  return ajv;
}

/** Component schemas under one id, so each response schema compiles on its own with refs into it. */
const COMPONENTS_ID = 'https://triggers.test/openapi/components.json';

function retarget<T>(value: T): T {
  return JSON.parse(JSON.stringify(value).replaceAll('"#/components/schemas/', `"${COMPONENTS_ID}#/$defs/`)) as T;
}

const ajv = createAjv();
ajv.addSchema({ $id: COMPONENTS_ID, $defs: retarget(openapi.components.schemas) });

/** Compiled once per document location (lazily: a run compiles only what it meets). */
const compiled = new Map<string, ValidateFunction>();

/** The validator of the Schema Object at `pointer` (strict: an unknown keyword or a bad $ref throws). */
export function validator(pointer: string, schema: Schema): ValidateFunction {
  let validate = compiled.get(pointer);
  if (validate === undefined) {
    validate = ajv.compile(retarget(schema));
    compiled.set(pointer, validate);
  }
  return validate;
}

function resolve<T>(value: T | { $ref: string }): T {
  if (typeof value !== 'object' || value === null || !('$ref' in value)) return value as T;
  const parts = value.$ref.replace(/^#\//, '').split('/').map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'));
  return parts.reduce<any>((node, part) => node?.[part], openapi) as T;
}

const escape = (part: string) => part.replaceAll('~', '~0').replaceAll('/', '~1');

/** Path templates with a regex each; literal segments first, as uWS prefers them over parameters. */
const TEMPLATES = Object.keys(openapi.paths)
  .map((template) => ({
    template,
    params: (template.match(/\{/g) ?? []).length,
    regex: new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
  }))
  .sort((a, b) => a.params - b.params);

/** The documented path template a request path (without its query) lands on, as uWS routes it, if any. */
export function documentedTemplate(pathname: string): string | undefined {
  return TEMPLATES.find((candidate) => candidate.regex.test(pathname))?.template;
}

/** The documented answer of the router's fallbacks (unknown route 404, wrong method 405). */
function fallback(code: 'not_found' | 'method_not_allowed'): Response {
  return {
    description: `router fallback ${code}`,
    content: {
      'application/json': {
        schema: { allOf: [{ $ref: '#/components/schemas/Error' }, { type: 'object', properties: { code: { const: code } } }] },
      },
    },
  };
}

export interface ObservedReply {
  method: string;
  /** Path with optional query, as requested. */
  url: string;
  status: number;
  /** A response header by (lower-case) name, or null. */
  header(name: string): string | null;
  text: string;
}

function ajvErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((error) => `${error.instancePath || '(body)'} ${error.message}${error.params ? ` ${JSON.stringify(error.params)}` : ''}`).join('; ');
}

/** What is wrong with the reply against the document, or null when it matches. */
export function contractViolation(reply: ObservedReply): string | null {
  const pathname = reply.url.split('?', 1)[0]!;
  const method = (reply.method.toUpperCase() === 'HEAD' ? 'get' : reply.method.toLowerCase()) as Method;
  const template = documentedTemplate(pathname);
  const operation: Operation | undefined = template ? openapi.paths[template]![method] : undefined;

  let response: Response | undefined;
  let pointer: string;
  if (operation === undefined) {
    // Not an operation: only the router's fallbacks may answer (ROUTER_ERROR_CODES).
    const code = template ? 'method_not_allowed' : 'not_found';
    if (!ROUTER_ERROR_CODES.includes(code)) return `${code} is not a router fallback code`;
    const expected = template ? 405 : 404;
    if (reply.status !== expected) {
      return template
        ? `${reply.method} is not documented on ${template}, yet the server answered ${reply.status} (expected 405 method_not_allowed)`
        : `the path is not in the document, yet the server answered ${reply.status} (expected 404 not_found)`;
    }
    response = fallback(code);
    pointer = `fallback:${code}`;
  } else {
    const responses = operation.responses;
    const key = [String(reply.status), `${String(reply.status)[0]}XX`, 'default'].find((candidate) => candidate in responses);
    if (key === undefined) return `status ${reply.status} is not documented for ${method.toUpperCase()} ${template!} (documented: ${Object.keys(responses).join(', ')})`;
    response = resolve(responses[key]!);
    pointer = `#/paths/${escape(template!)}/${method}/responses/${key}`;
  }

  for (const [name, declared] of Object.entries(response.headers ?? {})) {
    const header = resolve<Header>(declared);
    const value = reply.header(name.toLowerCase());
    if (value === null) {
      if (header.required) return `required header ${name} is missing (${pointer})`;
      continue;
    }
    const validate = validator(`${pointer}/headers/${name}`, header.schema);
    const typed = header.schema.type === 'integer' && /^-?\d+$/.test(value) ? Number(value) : value;
    if (!validate(typed)) return `header ${name}: ${JSON.stringify(value)} ${ajvErrors(validate.errors)} (${pointer})`;
  }

  // HEAD and 204 carry no body; a documented body must come with a documented media type.
  if (reply.method.toUpperCase() === 'HEAD') return null;
  const content = response.content;
  if (content === undefined) return reply.text === '' ? null : `a body was sent where none is documented (${pointer}): ${reply.text.slice(0, 200)}`;
  const media = (reply.header('content-type') ?? '').split(';', 1)[0]!.trim().toLowerCase();
  const documented = content[media];
  if (documented === undefined) return `content-type ${JSON.stringify(media)} is not documented (${pointer}: ${Object.keys(content).join(', ')})`;
  if (media !== 'application/json') return null;
  let body: unknown;
  try {
    body = JSON.parse(reply.text);
  } catch {
    return `the body is not JSON (${pointer}): ${reply.text.slice(0, 200)}`;
  }
  const validate = validator(`${pointer}/content/application~1json/schema`, documented.schema);
  if (validate(body)) return null;
  return `the body does not match ${pointer}/content/application~1json/schema: ${ajvErrors(validate.errors)}; body: ${reply.text.slice(0, 500)}`;
}

/** Throws (failing the calling test) when the reply does not match the document. */
export function assertMatchesContract(reply: ObservedReply): void {
  const violation = contractViolation(reply);
  if (violation !== null) throw new Error(`OpenAPI contract: ${reply.method.toUpperCase()} ${reply.url} → ${reply.status}: ${violation}`);
}
