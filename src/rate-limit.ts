// Per-org rate limits as GCRA over shared memory: every acceptor thread updates the same
// theoretical arrival time (TAT) with compareExchange, so N threads never admit more than the quota.
import { ApiError } from './errors.ts';
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


function ceilSeconds(ns: bigint): number {
  return ns <= 0n ? 0 : Number((ns + SECOND_NS - 1n) / SECOND_NS);
}

/** What the limiter needs of an authenticated org; `slot` is refreshed if the slot was reused. */
export interface RateSubject {
  org: { num: number };
  slot: number;
  limitPerMinute: number;
}

export class RateLimiter {
  private readonly orgs: Int32Array;
  private readonly tat: BigInt64Array;
  private readonly generations: Int32Array;

  constructor(shared: SharedBuffers) {
    this.orgs = new Int32Array(shared.rateOrgs);
    this.tat = new BigInt64Array(shared.rateTat);
    this.generations = new Int32Array(shared.keyGenerations);
  }

  /**
   * The org's slot, claimed on first use. When the table is full, an idle slot (its bucket
   * full again, so it holds no state worth keeping) is taken over; its generation is bumped,
   * which voids the previous owner's cached keys on every thread, so they re-resolve. Only a
   * table full of orgs active within the last minute answers 503 (RATE_LIMIT_SLOTS sizes it).
   */
  slotFor(orgNum: number): number {
    const slot = this.probe(orgNum, true) ?? this.reuseIdle(orgNum);
    if (slot === null) throw new ApiError('overloaded', 'This instance is rate-limiting as many organizations as it can (RATE_LIMIT_SLOTS).');
    return slot;
  }

  /** The org's slot if it has one here, without claiming one. */
  existingSlot(orgNum: number): number | null {
    return this.probe(orgNum, false);
  }

  private start(orgNum: number): number {
    return Math.imul(orgNum, 0x9e3779b1) >>> 0;
  }

  private probe(orgNum: number, claim: boolean): number | null {
    const size = this.orgs.length;
    for (let probe = 0, index = this.start(orgNum); probe < size; probe++, index++) {
      const slot = index % size;
      const owner = Atomics.load(this.orgs, slot);
      if (owner === orgNum) return slot;
      if (owner !== 0) continue;
      if (!claim) return null;
      const previous = Atomics.compareExchange(this.orgs, slot, 0, orgNum);
      if (previous === 0 || previous === orgNum) return slot;
    }
    return null;
  }

  private reuseIdle(orgNum: number): number | null {
    const size = this.orgs.length;
    const now = process.hrtime.bigint();
    for (let probe = 0, index = this.start(orgNum); probe < size; probe++, index++) {
      const slot = index % size;
      const owner = Atomics.load(this.orgs, slot);
      if (owner === orgNum) return slot;
      if (Atomics.load(this.tat, slot) > now) continue;
      if (Atomics.compareExchange(this.orgs, slot, owner, orgNum) !== owner) continue;
      Atomics.add(this.generations, slot, 1);
      return slot;
    }
    return null;
  }

  /**
   * Takes up to `cost` tokens (a batch takes what is left; a single event takes 1 or nothing).
   * Burst is one minute's quota; tokens refill smoothly at limit/minute.
   */
  take(subject: RateSubject, cost: number): RateDecision {
    if (Atomics.load(this.orgs, subject.slot) !== subject.org.num) subject.slot = this.slotFor(subject.org.num);
    const { slot, limitPerMinute: limit } = subject;
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
