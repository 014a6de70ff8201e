// Organizations and their API keys in Postgres. Keys are stored only as digests.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Sql } from '../db/postgres.ts';
import type { Tier } from '../rate-limit.ts';

export interface Organization {
  id: string;
  num: number;
  name: string;
  tier: Tier;
}

export interface OrganizationInfo extends Organization {
  webhookUrl: string | null;
  createdAt: Date;
}

/** Channel other instances LISTEN on; the payload is the org's number. */
export const KEY_ROTATED_CHANNEL = 'triggers_api_key_rotated';

export function newApiKey(): string {
  return `zap_live_${randomBytes(32).toString('base64url')}`;
}

export async function createOrganization(sql: Sql, name: string, tier: Tier, keyDigest: string): Promise<OrganizationInfo> {
  const id = randomUUID();
  const [row] = await sql<{ num: number; created_at: Date }[]>`
    insert into organizations (id, name, tier, api_key_digest)
    values (${id}, ${name}, ${tier}, ${keyDigest})
    returning num, created_at`;
  return { id, num: row!.num, name, tier, webhookUrl: null, createdAt: row!.created_at };
}

export async function findOrganizationByKey(sql: Sql, keyDigest: string): Promise<Organization | null> {
  const [row] = await sql<Organization[]>`
    select id, num, name, tier from organizations where api_key_digest = ${keyDigest}`;
  return row ?? null;
}

export async function organizationInfo(sql: Sql, id: string): Promise<OrganizationInfo | null> {
  const [row] = await sql<{ id: string; num: number; name: string; tier: Tier; webhook_url: string | null; created_at: Date }[]>`
    select o.id, o.num, o.name, o.tier, w.url as webhook_url, o.created_at
    from organizations o left join webhook_endpoints w on w.organization_id = o.id
    where o.id = ${id}`;
  if (!row) return null;
  return { id: row.id, num: row.num, name: row.name, tier: row.tier, webhookUrl: row.webhook_url, createdAt: row.created_at };
}

/**
 * Replaces the key only if `oldDigest` is still current (two racing rotations: one wins),
 * and tells other instances in the same transaction. Returns the rotation time, or null if lost.
 */
export async function rotateKey(sql: Sql, org: Organization, oldDigest: string, newDigest: string): Promise<Date | null> {
  return sql.begin(async (tx) => {
    const [row] = await tx<{ key_rotated_at: Date }[]>`
      update organizations set api_key_digest = ${newDigest}, key_rotated_at = now()
      where id = ${org.id} and api_key_digest = ${oldDigest}
      returning key_rotated_at`;
    if (!row) return null;
    await tx`select pg_notify(${KEY_ROTATED_CHANNEL}, ${String(org.num)})`;
    return row.key_rotated_at;
  });
}
