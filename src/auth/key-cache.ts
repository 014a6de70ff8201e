// Per-thread API key lookup. A known key is a Map hit plus one Atomics.load; Postgres is asked
// only on a miss. Rotation bumps the org's generation in shared memory, which voids every
// thread's cached entry at once.
import { apiKeyDigest } from '../digest.ts';
import type { Sql } from '../db/postgres.ts';
import { ApiError } from '../errors.ts';
import type { RequestHead } from '../http/exchange.ts';
import { CONTROL, type SharedBuffers } from '../protocol.ts';
import { PER_MINUTE, type RateLimiter } from '../rate-limit.ts';
import { findOrganizationByKey, type Organization } from './organizations.ts';

export interface Principal {
  org: Organization;
  /** The org's slot in the shared rate-limit and key-generation tables. */
  slot: number;
  limitPerMinute: number;
  keyDigest: string;
}

interface CachedKey {
  principal: Principal;
  generation: number;
  epoch: number;
}

/** Unknown digests remembered to spare Postgres repeated misses; random keys never become valid later. */
const UNKNOWN_CACHE_MAX = 10_000;

/** The key from `X-API-Key`, else from `Authorization: Bearer`; X-API-Key wins when both are sent. */
export function presentedKey(head: RequestHead): string | null {
  if (head.apiKeyHeader !== '') return head.apiKeyHeader;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(head.authorization);
  return match ? match[1]! : null;
}

export class KeyCache {
  private readonly known = new Map<string, CachedKey>();
  private readonly unknown = new Set<string>();
  private readonly generations: Int32Array;
  private readonly control: Int32Array;

  constructor(
    private readonly sql: Sql,
    private readonly limiter: RateLimiter,
    shared: SharedBuffers,
  ) {
    this.generations = new Int32Array(shared.keyGenerations);
    this.control = new Int32Array(shared.control);
  }

  private current(slot: number): { generation: number; epoch: number } {
    return { generation: Atomics.load(this.generations, slot), epoch: Atomics.load(this.control, CONTROL.KEY_EPOCH) };
  }

  /** Resolves the request's key, or throws the contract's 401. */
  async authenticate(head: RequestHead): Promise<Principal> {
    const key = presentedKey(head);
    if (key === null) throw new ApiError('missing_api_key');
    const digest = apiKeyDigest(key);
    const principal = this.cached(digest) ?? (await this.load(digest));
    if (principal === null) throw new ApiError('invalid_api_key');
    return principal;
  }

  private cached(digest: string): Principal | undefined {
    const entry = this.known.get(digest);
    if (entry === undefined) return undefined;
    const now = this.current(entry.principal.slot);
    if (entry.generation === now.generation && entry.epoch === now.epoch) return entry.principal;
    this.known.delete(digest);
    return undefined;
  }

  private async load(digest: string): Promise<Principal | null> {
    if (this.unknown.has(digest)) return null;
    const org = await findOrganizationByKey(this.sql, digest);
    if (org === null) {
      if (this.unknown.size >= UNKNOWN_CACHE_MAX) this.unknown.clear();
      this.unknown.add(digest);
      return null;
    }
    const principal = this.principalFor(org, digest);
    const stamp = this.current(principal.slot);
    // A rotation may have committed between the lookup and reading the generation: confirm the
    // key is still current *after* reading it, so a later rotation is sure to void this entry.
    if ((await findOrganizationByKey(this.sql, digest)) === null) return null;
    this.known.set(digest, { principal, ...stamp });
    return principal;
  }

  principalFor(org: Organization, keyDigest: string): Principal {
    return { org, slot: this.limiter.slotFor(org.num), limitPerMinute: PER_MINUTE[org.tier], keyDigest };
  }

  /** Caches a key this thread just issued (generate or rotate), current as of now. */
  remember(principal: Principal): void {
    this.known.set(principal.keyDigest, { principal, ...this.current(principal.slot) });
  }

  /** Voids every thread's cached keys of the org in this slot. */
  revoke(slot: number): void {
    Atomics.add(this.generations, slot, 1);
  }

  /** Another instance rotated a key: void it here if this instance has the org at all. */
  revokeOrg(orgNum: number): void {
    const slot = this.limiter.existingSlot(orgNum);
    if (slot !== null) this.revoke(slot);
  }

  /** Voids every cached key on every thread (they are re-checked against Postgres on next use). */
  revokeAll(): void {
    Atomics.add(this.control, CONTROL.KEY_EPOCH, 1);
  }
}
