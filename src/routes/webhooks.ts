// POST/GET/DELETE /api/webhook/config, POST /api/webhook/rotate-secret.
import type { AcceptorContext } from '../context.ts';
import { checkWebhookUrl } from '../delivery/ssrf.ts';
import { decryptSecret, encryptSecret, loadSecretKey, newWebhookSecret } from '../delivery/secrets.ts';
import { deleteEndpoint, findEndpoint, rotateEndpointSecret, saveEndpoint } from '../delivery/store.ts';
import { ApiError, validationError } from '../errors.ts';
import { isPlainObject } from '../events/validate.ts';
import type { Router } from '../http/router.ts';
import { readJson } from './json-body.ts';

export const MAX_CONFIG_BODY = 16 * 1024;
/** After a rotation the old secret keeps signing beside the new one this long. */
export const SECRET_OVERLAP_MS = 24 * 60 * 60 * 1000;

export function webhookRoutes(router: Router, ctx: AcceptorContext): void {
  const { sql, keys, config } = ctx;
  const secretKey = loadSecretKey(config.webhookSecretKey, config.dataDir);
  const noEndpoint = () => new ApiError('not_found', 'No webhook endpoint is configured.');
  const readable = (sealed: string): string | null => {
    try {
      return decryptSecret(secretKey, sealed);
    } catch {
      return null;
    }
  };

  router.on('post', '/api/webhook/config', async (exchange, head) => {
    const body = readJson(exchange, head, MAX_CONFIG_BODY);
    const principal = await keys.authenticate(head);
    const parsed = await body;
    if (!isPlainObject(parsed)) throw validationError('body', 'The body must be {"webhook_url": "..."}.');
    const url = await checkWebhookUrl(parsed.webhook_url, config.webhookAllowPrivate);
    // A secret sealed under another WEBHOOK_SECRET_KEY is useless: configuring again replaces it.
    const existing = await findEndpoint(sql, principal.org.id);
    const unreadable = existing !== null && readable(existing.secret_enc) === null;
    const endpoint = await saveEndpoint(sql, principal.org.id, url.href, encryptSecret(secretKey, newWebhookSecret()), unreadable);
    exchange.send(200, JSON.stringify({
      webhook_url: endpoint.url,
      secret: decryptSecret(secretKey, endpoint.secret_enc),
      updated_at: endpoint.updated_at.toISOString(),
    }));
  });

  router.on('get', '/api/webhook/config', async (exchange, head) => {
    const principal = await keys.authenticate(head);
    const endpoint = await findEndpoint(sql, principal.org.id);
    if (endpoint === null) throw noEndpoint();
    exchange.send(200, JSON.stringify({
      webhook_url: endpoint.url,
      secret: readable(endpoint.secret_enc),
      updated_at: endpoint.updated_at.toISOString(),
      disabled: endpoint.disabled_at !== null,
    }));
  });

  router.on('del', '/api/webhook/config', async (exchange, head) => {
    const principal = await keys.authenticate(head);
    if (!(await deleteEndpoint(sql, principal.org.id))) throw noEndpoint();
    exchange.sendEmpty(204);
  });

  router.on('post', '/api/webhook/rotate-secret', async (exchange, head) => {
    const principal = await keys.authenticate(head);
    const secret = newWebhookSecret();
    if (!(await rotateEndpointSecret(sql, principal.org.id, encryptSecret(secretKey, secret), SECRET_OVERLAP_MS))) throw noEndpoint();
    exchange.send(200, JSON.stringify({ secret }));
  });
}
