// GET /openapi.json and the API reference at GET /docs: Swagger UI from swagger-ui-dist, served
// from node_modules (no CDN), every file read once when the routes are registered.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { ApiError } from '../errors.ts';
import type { Headers } from '../http/exchange.ts';
import type { Router } from '../http/router.ts';
import { openapi } from '../openapi/document.ts';

const SWAGGER_DIR = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

/** Swagger UI's files are unversioned in their URLs: cached for a day, then revalidated. */
const ASSET_CACHE = 'public, max-age=86400';

// No inline script or remote origin: the page runs only its own files. Swagger UI sets inline
// styles and uses data: images, and fetches /openapi.json (and "Try it out" requests) from here.
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${openapi.info.title} — API reference</title>
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;

// validatorUrl null: otherwise Swagger UI sends the document to validator.swagger.io.
const INIT = `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
`;

interface Asset {
  body: Buffer;
  contentType: string;
}

function loadAssets(): Map<string, Asset> {
  const file = (name: string, contentType: string): [string, Asset] => [name, { body: readFileSync(path.join(SWAGGER_DIR, name)), contentType }];
  return new Map([
    file('swagger-ui.css', 'text/css; charset=utf-8'),
    file('swagger-ui-bundle.js', 'text/javascript; charset=utf-8'),
    file('favicon-32x32.png', 'image/png'),
    ['init.js', { body: Buffer.from(INIT), contentType: 'text/javascript; charset=utf-8' }],
  ]);
}

export function docsRoutes(router: Router): void {
  const document = Buffer.from(JSON.stringify(openapi));
  const page = Buffer.from(PAGE);
  const assets = loadAssets();

  router.on('get', '/openapi.json', (exchange) => exchange.send(200, document, [['cache-control', 'no-cache']]));

  router.on('get', '/docs', (exchange) =>
    exchange.send(200, page, [['cache-control', 'no-cache'], ['content-security-policy', CSP]], 'text/html; charset=utf-8'),
  );

  router.on('get', '/docs/:asset', (exchange, head) => {
    const asset = assets.get(head.params[0]!);
    if (asset === undefined) throw new ApiError('not_found', 'No such file.');
    const headers: Headers = [['cache-control', ASSET_CACHE]];
    exchange.send(200, asset.body, headers, asset.contentType);
  });
}
