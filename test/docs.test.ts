// GET /openapi.json and the API reference at GET /docs: the files it needs, served locally with
// the right types and caching, and the page itself rendered by headless Chromium with no console
// error, no failed request and nothing fetched from elsewhere. The screenshot goes to
// docs/api-reference.png with UPDATE_SCREENSHOTS=1, else to a temp dir (the tree stays clean).
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openapi } from '../src/openapi/document.ts';
import { expectError, TestServer, useTestDatabase, type TestDatabase } from './helpers/server.ts';

interface Context {
  db: TestDatabase;
  server: TestServer;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SWAGGER_DIR = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const docs = suite<Context>('docs');

useTestDatabase(docs, async (ctx) => {
  ctx.server = await TestServer.start(ctx.db.url);
});

docs('GET /openapi.json serves the document', async ({ server }) => {
  const reply = await server.request('GET', '/openapi.json');
  assert.is(reply.status, 200, reply.text.slice(0, 200));
  assert.is(reply.headers.get('content-type'), 'application/json');
  assert.equal(reply.body, JSON.parse(JSON.stringify(openapi)));
});

docs('GET /docs: a page that loads only its own files, under a CSP without inline scripts', async ({ server }) => {
  const reply = await server.request('GET', '/docs');
  assert.is(reply.status, 200);
  assert.is(reply.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.is(reply.headers.get('cache-control'), 'no-cache');
  const csp = reply.headers.get('content-security-policy') ?? '';
  assert.match(csp, "script-src 'self'");
  assert.not.match(csp, /script-src[^;]*unsafe-inline/);
  const sources = [...reply.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1]!);
  assert.ok(sources.includes('/docs/swagger-ui-bundle.js') && sources.includes('/docs/init.js'), sources.join(', '));
  for (const source of sources) assert.ok(source.startsWith('/docs/'), `${source} is not served here`);
  assert.not.match(reply.text, /<script>/, 'inline script');
});

docs('GET /docs/<file>: the files from swagger-ui-dist and the init script, typed and cacheable', async ({ server }) => {
  const files: Array<[string, string, string | null]> = [
    ['swagger-ui.css', 'text/css; charset=utf-8', 'swagger-ui.css'],
    ['swagger-ui-bundle.js', 'text/javascript; charset=utf-8', 'swagger-ui-bundle.js'],
    ['favicon-32x32.png', 'image/png', 'favicon-32x32.png'],
    ['init.js', 'text/javascript; charset=utf-8', null],
  ];
  for (const [name, contentType, source] of files) {
    const response = await fetch(`${server.url}/docs/${name}`);
    const body = Buffer.from(await response.arrayBuffer());
    assert.is(response.status, 200, name);
    assert.is(response.headers.get('content-type'), contentType, name);
    assert.is(response.headers.get('cache-control'), 'public, max-age=86400', name);
    assert.is(response.headers.get('x-content-type-options'), 'nosniff', name);
    if (source) assert.ok(body.equals(readFileSync(path.join(SWAGGER_DIR, source))), `${name} differs from swagger-ui-dist's`);
    else assert.match(body.toString(), /validatorUrl: null/);
  }
  // Through the contract-checking helper too (documented status and media type).
  const css = await server.request('GET', '/docs/swagger-ui.css');
  assert.is(css.status, 200);
  const head = await server.request('HEAD', '/docs/swagger-ui-bundle.js');
  assert.is(head.status, 200);
  assert.is(head.text, '');
  assert.is(Number(head.headers.get('content-length')), readFileSync(path.join(SWAGGER_DIR, 'swagger-ui-bundle.js')).length);
  expectError(await server.request('GET', '/docs/index.html'), 404, 'not_found');
  expectError(await server.request('GET', '/docs/..%2Fpackage.json'), 404, 'not_found');
});

docs('the reference renders in Chromium with no console error, no failed request, nothing fetched from elsewhere', async ({ server }) => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const problems: string[] = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1800 } });
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));
    page.on('request', (request) => {
      if (!request.url().startsWith(`${server.url}/`) && !request.url().startsWith('data:')) problems.push(`request to another origin: ${request.url()}`);
    });
    page.on('response', (response) => {
      if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`);
    });

    await page.goto(`${server.url}/docs`);
    const operation = page.locator('#operations-Events-sendEvent');
    await operation.waitFor({ timeout: 20_000 });
    assert.match(await operation.locator('.opblock-summary-method').innerText(), 'POST');
    assert.match(await operation.locator('.opblock-summary-path').innerText(), '/api/events');
    assert.match(await page.locator('.info .title').innerText(), openapi.info.title);
    await page.waitForLoadState('networkidle');

    const update = process.env.UPDATE_SCREENSHOTS === '1';
    const dir = update ? path.join(ROOT, 'docs') : mkdtempSync(path.join(tmpdir(), 'triggers-docs-'));
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'api-reference.png');
    try {
      await page.screenshot({ path: file });
      const png = readFileSync(file);
      assert.ok(png.subarray(1, 4).toString() === 'PNG' && png.length > 20_000, `screenshot ${file} looks empty (${png.length} bytes)`);
    } finally {
      if (!update) rmSync(dir, { recursive: true, force: true });
    }

    // Open the operation: its request body, examples and responses render too.
    await operation.locator('.opblock-summary-control').click();
    await operation.locator('.responses-wrapper').waitFor({ timeout: 10_000 });
    assert.match(await operation.innerText(), 'duplicate_event');
    await page.waitForLoadState('networkidle');
  } finally {
    await browser.close();
  }
  assert.equal(problems, [], problems.join('\n'));
});

docs.run();
