// Per-org rate limits as GCRA over shared memory: every acceptor thread updates the same
// theoretical arrival time (TAT) with compareExchange, so N threads never admit more than the quota.
import type { SharedBuffers } from './protocol.ts';

export type Tier = 'free' | 'pro' | 'business' | 'enterprise';
export const TIERS: readonly Tier[] = ['free', 'pro', 'business', 'enterprise'];
export const PER_MINUTE: Record<Tier, number> = { free: 100, pro: 1_000, business: 10_000, enterprise: 100_000 };

const MINUTE_NS = 60_000_000_000n;
const SECOND_NS = 1_000_000_000n;

export interface RateDecision {
  /** How many of the requested tokens were granted (0..cost). */
  granted: number;
  limit: number;
  remaining: number;
  /** Seconds until the bucket is full again. */
  resetSeconds: number;
  /** Seconds until one more token is available (meaningful when granted < cost). */
  retryAfterSeconds: number;
}

export class SlotTableFullError extends Error {
  constructor() {
    super('rate-limit table is full (raise RATE_LIMIT_SLOTS)');
  }
}

function ceilSeconds(ns: bigint): number {
  return ns <= 0n ? 0 : Number((ns + SECOND_NS - 1n) / SECOND_NS);
}

export class RateLimiter {
  private readonly orgs: Int32Array;
  private readonly tat: BigInt64Array;

  constructor(shared: SharedBuffers) {
    this.orgs = new Int32Array(shared.rateOrgs);
    this.tat = new BigInt64Array(shared.rateTat);
  }

  /** The org's slot, claimed on first use. Slots are stable for the life of the process. */
  slotFor(orgNum: number): number {
    const size = this.orgs.length;
    let index = Math.imul(orgNum, 0x9e3779b1) >>> 0;
    for (let probe = 0; probe < size; probe++, index++) {
      const slot = index % size;
      const owner = Atomics.load(this.orgs, slot);
      if (owner === orgNum) return slot;
      if (owner === 0) {
        const previous = Atomics.compareExchange(this.orgs, slot, 0, orgNum);
        if (previous === 0 || previous === orgNum) return slot;
      }
    }
    throw new SlotTableFullError();
  }

  /**
   * Takes up to `cost` tokens (a batch takes what is left; a single event takes 1 or nothing).
   * Burst is one minute's quota; tokens refill smoothly at limit/minute.
   */
  take(slot: number, limit: number, cost: number): RateDecision {
    const interval = MINUTE_NS / BigInt(limit);
    for (;;) {
      const now = process.hrtime.bigint();
      const tat = Atomics.load(this.tat, slot);
      const base = tat > now ? tat : now;
      // Tokens available now: the room left under one minute of burst, in intervals.
      const available = Number((MINUTE_NS - (base - now)) / interval);
      const granted = Math.max(0, Math.min(cost, available));
      const newTat = base + BigInt(granted) * interval;
      if (granted > 0 && Atomics.compareExchange(this.tat, slot, tat, newTat) !== tat) continue;
      const used = granted > 0 ? newTat : base;
      return {
        granted,
        limit,
        remaining: Math.max(0, Number((MINUTE_NS - (used - now)) / interval)),
        resetSeconds: ceilSeconds(used - now),
        retryAfterSeconds: Math.max(1, ceilSeconds(used + interval - now - MINUTE_NS)),
      };
    }
  }
}
