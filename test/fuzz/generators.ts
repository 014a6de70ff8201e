// fast-check generators shared by the fuzz tests (test/fuzz.test.ts, test/fuzz-raw.test.ts) and
// `npm run fuzz`. The first half builds JSON values and event bodies, valid and not; the second
// half builds inputs that must always be refused (broken JSON, invalid UTF-8, nesting past the
// limit, overflowing numbers, required fields only behind __proto__) and injection-shaped strings.
import fc from 'fast-check';
import { MAX_PAYLOAD_BYTES } from '../helpers/ingest.ts';

// ---- JSON values and event bodies -------------------------------------------------------------------

/** Strings built from UTF-16 units, lone surrogates and U+0000 included, with the awkward ones favoured. */
const nastyUnit = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)) },
  { weight: 2, arbitrary: fc.constantFrom('\u0000', '\ud800', '\udbff', '\udc00', '\udfff', '😀', 'é', '€', '"', '\\', '\u2028', '\ufeff', '\u0001') },
);
const nastyString = fc.string({ unit: nastyUnit, maxLength: 12 });
const cleanString = fc.string({ unit: 'grapheme', maxLength: 12 });
/** Object keys; at most 12 characters, so never a real field name such as organization_name or webhook_url. */
const key = fc.oneof(
  { weight: 4, arbitrary: cleanString },
  { weight: 2, arbitrary: fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '', 'payload', 'type', '0', '10') },
  { weight: 1, arbitrary: nastyString },
);
const number = fc.oneof(
  { weight: 5, arbitrary: fc.integer() },
  { weight: 3, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.constantFrom(Infinity, -Infinity, NaN, -0, Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53 + 1) },
);
const scalar = fc.oneof(fc.constant(null), fc.boolean(), number, cleanString, nastyString);

/** Objects built with Object.fromEntries, so __proto__ becomes an own key exactly as JSON.parse makes it. */
export const { value: jsonish } = fc.letrec<{ value: unknown; object: Record<string, unknown>; array: unknown[] }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, tie('object'), tie('array')),
  object: fc.array(fc.tuple(key, tie('value')), { maxLength: 5 }).map((entries) => Object.fromEntries(entries)),
  array: fc.array(tie('value'), { maxLength: 5 }),
}));
const plainObject = fc.array(fc.tuple(key, jsonish), { maxLength: 6 }).map((entries) => Object.fromEntries(entries) as Record<string, unknown>);

/** A chain of `levels` objects and arrays (kinds[i] true = array) around `leaf`, inside `{d: ...}`. */
function nest(levels: number, kinds: readonly boolean[], leaf: unknown): Record<string, unknown> {
  let value: unknown = leaf;
  for (let i = levels - 1; i >= 1; i--) value = kinds[i % kinds.length] ? [value] : { k: value };
  return { d: value };
}

/** Chains of objects and arrays around the depth limit (62..67 levels). */
export const deep = fc
  .tuple(fc.integer({ min: 62, max: 67 }), fc.array(fc.boolean(), { minLength: 70, maxLength: 70 }), scalar)
  .map(([levels, kinds, leaf]) => nest(levels, kinds, leaf));

/** A payload `{s}` of compact JSON size at, just under or just over the byte limit, in 1- to 6-byte units. */
const bigPayload = fc
  .tuple(
    fc.constantFrom('x', 'é', '€', '😀', '\u0001', '"'),
    fc.oneof(fc.constantFrom(MAX_PAYLOAD_BYTES - 1, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES + 1), fc.integer({ min: MAX_PAYLOAD_BYTES - 40, max: MAX_PAYLOAD_BYTES + 40 })),
  )
  .map(([unit, bytes]) => {
    // Bytes of one unit in compact JSON: '"' is written \" and U+0001 is written \u0001.
    const unitBytes = Buffer.byteLength(JSON.stringify(unit)) - 2;
    const room = bytes - Buffer.byteLength('{"s":""}');
    const units = Math.floor(room / unitBytes);
    return { s: unit.repeat(units) + 'x'.repeat(room - units * unitBytes) };
  });

const typeArb = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }) },
  { weight: 1, arbitrary: fc.integer({ min: 250, max: 260 }).chain((n) => fc.constantFrom('a'.repeat(n), '😀'.repeat(n))) },
  { weight: 1, arbitrary: nastyString },
  { weight: 1, arbitrary: scalar },
);
const dedupArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }) },
  { weight: 1, arbitrary: fc.integer({ min: 250, max: 260 }).map((n) => 'd'.repeat(n)) },
  { weight: 1, arbitrary: nastyString },
  { weight: 1, arbitrary: scalar },
);
const payloadArb = fc.oneof(
  { weight: 6, arbitrary: plainObject },
  { weight: 2, arbitrary: deep },
  { weight: 1, arbitrary: bigPayload },
  { weight: 1, arbitrary: jsonish },
);

/** Mostly event-shaped bodies, with `data` instead of `payload`, missing or extra fields (valid or not). */
export const eventBody = fc
  .record(
    { type: typeArb, payload: payloadArb, data: payloadArb, dedup_id: dedupArb, extra: jsonish },
    { requiredKeys: [] },
  )
  .chain((body) =>
    fc.constantFrom<Record<string, unknown>>(
      { type: body.type, payload: body.payload, ...(body.dedup_id === undefined ? {} : { dedup_id: body.dedup_id }) },
      { type: body.type, data: body.data },
      body,
    ),
  );

/** Printable ASCII: what any HTTP client lets into a header value. */
export const headerSafe = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((code) => String.fromCharCode(code)), maxLength: 30 });

/** Valid event text with random byte edits (may still be valid). */
export const mutatedEvent = fc
  .tuple(
    fc.record({ type: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 10 }), payload: plainObject }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'insert', 'dup')), { minLength: 1, maxLength: 4 }),
  )
  .map(([event, edits]) => {
    let buffer = Buffer.from(JSON.stringify(event));
    for (const [at, byte, op] of edits) {
      const i = at % Math.max(1, buffer.length);
      if (op === 'set' && buffer.length > 0) buffer[i] = byte;
      else if (op === 'cut') buffer = Buffer.concat([buffer.subarray(0, i), buffer.subarray(i + 1 + (byte % 8))]);
      else if (op === 'dup') buffer = Buffer.concat([buffer.subarray(0, i), buffer.subarray(i, i + 1 + (byte % 16)), buffer.subarray(i)]);
      else buffer = Buffer.concat([buffer.subarray(0, i), Buffer.from([byte]), buffer.subarray(i)]);
    }
    return buffer;
  });

// ---- bodies every JSON route must refuse ----------------------------------------------------------------

/**
 * No JSON text ends with one of these (a value ends in } ] " a digit, e or l), so any text with such
 * a tail is invalid JSON, whatever came before it, also when the prefix left a string open (then the
 * tail either leaves it unterminated or closes it and is garbage after it: hence `{"a`, not `{"`).
 */
const BREAKING_TAILS = [',', '{"a', '[', ':', '\\', '"\\u12', 'tru', 'nul', '1e', '-', '{"a":'];

/** A prefix of `text` (any bytes) followed by a tail that makes it invalid JSON for certain. */
export function brokenJson(text: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.tuple(text, fc.nat(), fc.constantFrom(...BREAKING_TAILS)).map(([bytes, cut, tail]) =>
    Buffer.concat([bytes.subarray(0, bytes.length === 0 ? 0 : cut % (bytes.length + 1)), Buffer.from(tail)]),
  );
}

/** Byte sequences a strict UTF-8 decoder refuses: stray continuation, overlong, surrogate, > U+10FFFF, cut short. */
const INVALID_UTF8 = [[0xff], [0xfe], [0x80], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82], [0xc3]];

/** `text` with an invalid UTF-8 sequence spliced in somewhere: refused as invalid_json before any parsing. */
export function invalidUtf8(text: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc.tuple(text, fc.nat(), fc.constantFrom(...INVALID_UTF8)).map(([bytes, at, bad]) => {
    const i = at % (bytes.length + 1);
    return Buffer.concat([bytes.subarray(0, i), Buffer.from(bad), bytes.subarray(i)]);
  });
}

/** Number literals JSON.parse turns into ±Infinity, which nothing may accept. */
const overflowingNumber = fc.constantFrom('1e400', '-1e400', '1E+999', '-9e99999', '1' + '0'.repeat(400));

/** JSON text of a value no field of any route accepts: nesting past 64, ±Infinity, text with U+0000 or a lone surrogate. */
export const invalidValue = fc.oneof(
  fc.tuple(fc.integer({ min: 66, max: 3000 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 6 })).map(([levels, kinds]) => {
    let open = '';
    let close = '';
    for (let i = 0; i < levels; i++) {
      const array = kinds[i % kinds.length]!;
      open += array ? '[' : '{"k":';
      close = (array ? ']' : '}') + close;
    }
    return `${open}1${close}`;
  }),
  overflowingNumber,
  fc.tuple(nastyString, fc.constantFrom('\\u0000', '\\ud800', '\\udfff', '\\udbff\\u0041')).map(([text, bad]) => `"${JSON.stringify(text).slice(1, -1)}${bad}"`),
);

/**
 * An object whose required fields exist only behind __proto__, constructor.prototype or a nested
 * __proto__: JSON.parse makes those own keys named "__proto__", so a server that read through the
 * prototype would find the fields; one that reads own fields must answer validation_error.
 */
export function protoShaped(fields: Record<string, unknown>): fc.Arbitrary<Buffer> {
  const inner = JSON.stringify(fields);
  return fc.constantFrom(
    `{"__proto__":${inner}}`,
    `{"constructor":{"prototype":${inner}}}`,
    `{"__proto__":{"__proto__":${inner}}}`,
    `{"prototype":${inner},"__proto__":null}`,
    `[${inner}]`,
    `{"__proto__":${inner},"constructor":{"prototype":${inner}}}`,
  ).map((text) => Buffer.from(text));
}

/** A flat JSON object whose size is `bytes` (the body-size limit tests). */
export function flatBody(bytes: number): Buffer {
  const frame = Buffer.byteLength('{"x":""}');
  return Buffer.from(`{"x":"${'a'.repeat(Math.max(0, bytes - frame))}"}`);
}

// ---- injection-shaped strings ----------------------------------------------------------------------------

/** SQL, path traversal, CRLF, NUL, template and prototype shapes, as they would appear decoded. */
const INJECTIONS = [
  "' OR '1'='1",
  "1' OR 1=1--",
  "'; DROP TABLE events;--",
  '" UNION SELECT api_key_digest FROM organizations--',
  '1; select pg_sleep(5)',
  "$$; select 1; $$",
  '../../../../etc/passwd',
  '..\\..\\windows\\win.ini',
  '....//....//etc/passwd',
  '/%2e%2e/%2e%2e/etc/passwd',
  '\r\nSet-Cookie: injected=1',
  '\r\n\r\nHTTP/1.1 200 OK\r\n',
  '\u0000',
  'a\u0000b',
  '${7*7}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '__proto__',
  'constructor',
  '%00',
  '%',
  '%zz',
  '%c0%ae%c0%ae/',
  '\ud800',
  '😀'.repeat(300),
  'x'.repeat(4096),
];

export const injection = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...INJECTIONS) }, { weight: 1, arbitrary: nastyString });

/**
 * How an injection string reaches the URL: percent-encoded (the server decodes it) or as is where
 * an HTTP client can send it (printable ASCII only; other bytes encoded).
 */
export function inUrl(text: string, raw: boolean): string {
  if (!raw) return encodeURIComponent(text.toWellFormed());
  return [...Buffer.from(text.toWellFormed())]
    .map((byte) => (byte > 0x20 && byte < 0x7f && byte !== 0x23 && byte !== 0x3f ? String.fromCharCode(byte) : `%${byte.toString(16).padStart(2, '0')}`))
    .join('');
}
