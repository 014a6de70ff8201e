// POST /api/keys/generate, GET /api/keys, POST /api/keys/rotate.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createOrganization, newApiKey, organizationInfo, rotateKey } from '../auth/organizations.ts';
import type { AcceptorContext } from '../context.ts';
import { apiKeyDigest } from '../digest.ts';
import { ApiError, validationError } from '../errors.ts';
import { isPlainObject, textField } from '../events/validate.ts';
import type { RequestHead } from '../http/exchange.ts';
import type { Router } from '../http/router.ts';
import { PER_MINUTE, TIERS, type Tier } from '../rate-limit.ts';
import { readJson } from './json-body.ts';

export const MAX_KEYS_BODY = 64 * 1024;

/** Compares SHA-256 digests in constant time: neither the token's bytes nor its length leak through timing. */
function sameSecret(presented: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(presented), digest(expected));
}

export function keyRoutes(router: Router, ctx: AcceptorContext): void {
  const { config, sql, keys } = ctx;

  function requireAdmin(head: RequestHead): void {
    if (config.adminToken === null) return;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(head.authorization);
    if (!match || !sameSecret(match[1]!, config.adminToken)) throw new ApiError('admin_token_required');
  }

  router.on('post', '/api/keys/generate', async (exchange, head) => {
    const body = readJson(exchange, head, MAX_KEYS_BODY);
    requireAdmin(head);
    const parsed = await body;
    if (!isPlainObject(parsed)) throw validationError('body', 'The body must be a JSON object.');
    const name = textField(parsed, 'organization_name', true)!;
    const tier = parsed.tier ?? 'free';
    if (typeof tier !== 'string' || !TIERS.includes(tier as Tier)) {
      throw validationError('tier', `tier must be one of ${TIERS.join(', ')}.`);
    }
    const apiKey = newApiKey();
    const digest = apiKeyDigest(apiKey);
    const org = await createOrganization(sql, name, tier as Tier, digest);
    // Caching the new key only spares a lookup: it must not fail the request once the org is
    // committed (an error here would leave an organization whose key nobody ever saw).
    try {
      keys.remember(keys.principalFor(org, digest));
    } catch (error) {
      ctx.logger.warn({ err: error }, 'new API key not cached');
    }
    exchange.send(201, JSON.stringify({
      organization_id: org.id,
      organization_name: org.name,
      api_key: apiKey,
      tier: org.tier,
      rate_limit_per_minute: PER_MINUTE[org.tier],
      created_at: org.createdAt.toISOString(),
    }));
  });

  router.on('get', '/api/keys', async (exchange, head) => {
    const principal = await keys.authenticate(head);
    const info = await organizationInfo(sql, principal.org.id);
    if (info === null) throw new ApiError('invalid_api_key');
    exchange.send(200, JSON.stringify({
      organization_id: info.id,
      organization_name: info.name,
      tier: info.tier,
      rate_limit_per_minute: PER_MINUTE[info.tier],
      webhook_url: info.webhookUrl,
      created_at: info.createdAt.toISOString(),
    }));
  });

  router.on('post', '/api/keys/rotate', async (exchange, head) => {
    const principal = await keys.authenticate(head);
    const apiKey = newApiKey();
    const digest = apiKeyDigest(apiKey);
    const rotatedAt = await rotateKey(sql, principal.org, principal.keyDigest, digest);
    if (rotatedAt === null) throw new ApiError('invalid_api_key');
    // Void the old key on every thread before answering; then cache the new one here.
    keys.revokeOrg(principal.org.num);
    keys.remember({ ...principal, keyDigest: digest });
    exchange.send(200, JSON.stringify({ api_key: apiKey, rotated_at: rotatedAt.toISOString() }));
  });
}
