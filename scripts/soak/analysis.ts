// The soak's verdict, kept pure so a unit test can feed it synthetic series: a least-squares
// slope per minute over the second half of the run (the first half is warm-up: JIT, caches, the
// LMDB map and V8's heap finding their size) for each quantity that must not grow without bound,
// the share of unexpected answers, and whether the load was really offered.
import type { Sample } from './sampler.ts';

export interface Limits {
  /** Server RSS (VmRSS), MB per minute. */
  rssMbPerMin: number;
  /** V8 heap used by the server's main thread, MB per minute. */
  heapMbPerMin: number;
  /** The main thread's mean event-loop delay (per second), ms per minute. */
  loopMsPerMin: number;
  /** Drain lag, and the webhook and inbox backlogs expressed as lag, ms per minute. */
  lagMsPerMin: number;
  /** Allocated size of the LMDB log on disk, MB per minute. */
  logMbPerMin: number;
  /** Unexpected answers (non-2xx other than the designed 429s) and socket errors, as a share of requests. */
  errorRate: number;
  /** The events accepted per second over the second half, as a share of the target rate. */
  minRateShare: number;
  /** Seconds the log drain and the webhook deliveries may take to catch up once the load stops. */
  catchUpS: number;
}

/**
 * Why these defaults (per minute, fitted over the second half of a run of several minutes):
 * - RSS/heap 4 MB/min: a leak of 10 bytes per event at 10,000 events/s is 6 MB/min. At 2,500/s on
 *   the 2-core dev machine RSS rose for ~2.5 min (to ~290 MB) and then fitted 0.9 MB/min over
 *   minutes 2.5–5; the main thread's heap used saws between 20 and 32 MB and fitted 0.3 MB/min.
 * - loop delay 20 ms/min: the mean delay per second was 0–5 ms there and fitted 0.0 ms/min; a loop
 *   slowing by 20 ms per second each minute is a server heading for timeouts.
 * - lag 300 ms/min: a drain 0.5 % short of the arrival rate makes the oldest undrained event age
 *   by 0.005 s each second, i.e. 300 ms/min; a keeping-up drain's lag jitters between 0 and ~100 ms.
 * - log 2 MB/min: LMDB reuses freed pages, so once the drain keeps up the file stops growing
 *   (it stayed at 0.6 MB).
 * - errors 0.1 %: "a small fraction"; the 60 s test asks for none.
 * - rate 95 %: below that the run did not offer the load it claims (client or server saturated).
 * - catch-up 30 s: with a bounded backlog the drain and the deliveries finish within a second.
 */
export const DEFAULT_LIMITS: Limits = {
  rssMbPerMin: 4,
  heapMbPerMin: 4,
  loopMsPerMin: 20,
  lagMsPerMin: 300,
  logMbPerMin: 2,
  errorRate: 0.001,
  minRateShare: 0.95,
  catchUpS: 30,
};

/** Least-squares slope of y over t (seconds), per minute; null with fewer than 3 usable points. */
export function slopePerMinute(t: readonly number[], y: readonly number[]): number | null {
  const points = t.map((x, i) => [x, y[i]!] as const).filter(([x, v]) => Number.isFinite(x) && Number.isFinite(v));
  if (points.length < 3) return null;
  const meanT = points.reduce((sum, [x]) => sum + x, 0) / points.length;
  const meanY = points.reduce((sum, [, v]) => sum + v, 0) / points.length;
  let covariance = 0;
  let variance = 0;
  for (const [x, v] of points) {
    covariance += (x - meanT) * (v - meanY);
    variance += (x - meanT) ** 2;
  }
  return variance === 0 ? null : (covariance / variance) * 60;
}

export interface Totals {
  /** Requests sent (each batch counts once per event in it). */
  requests: number;
  /** Socket errors, timeouts and answers neither 2xx nor a designed 429. */
  errors: number;
  designed429: number;
}

export interface Rates {
  /** Events per second the run aimed at (all streams). */
  target: number;
  /** Events per second to the orgs with a webhook endpoint and to the inbox orgs. */
  webhook: number;
  inbox: number;
}

export interface Check {
  name: string;
  value: number | null;
  limit: number;
  unit: string;
  /** `max`: the value may not exceed the limit; `min`: it may not fall below it. */
  bound: 'max' | 'min';
  ok: boolean;
}

/** The samples from the middle of the run on. */
export function secondHalf(samples: readonly Sample[]): Sample[] {
  if (samples.length === 0) return [];
  const middle = samples[samples.length - 1]!.t / 2;
  return samples.filter((sample) => sample.t >= middle);
}

/**
 * Every check of the run; it passed when all are ok. A slope that cannot be fitted fails.
 * `caughtUpS`: how long the drain and deliveries took to finish after the load (null: not in time).
 */
export function judge(samples: readonly Sample[], totals: Totals, rates: Rates, caughtUpS: number | null, limits: Limits): Check[] {
  const half = secondHalf(samples);
  const t = half.map((sample) => sample.t);
  const slope = (name: string, pick: (sample: Sample) => number, limit: number, unit: string): Check => {
    const value = slopePerMinute(t, half.map(pick));
    return { name, value, limit, unit, bound: 'max', ok: value !== null && value <= limit };
  };
  // A backlog of B events at a steady rate r is B/r seconds of work behind.
  const asLagMs = (backlog: number, rate: number) => (rate > 0 ? (backlog / rate) * 1000 : 0);
  const errorRate = totals.requests === 0 ? 1 : totals.errors / totals.requests;
  const accepted = half.reduce((sum, sample) => sum + sample.acceptedPerS, 0) / Math.max(1, half.length);
  return [
    slope('server RSS slope', (s) => s.rssMb, limits.rssMbPerMin, 'MB/min'),
    slope('heap used slope (main thread)', (s) => s.heapUsedMb, limits.heapMbPerMin, 'MB/min'),
    slope('event-loop delay slope (main thread, mean per second)', (s) => s.loopMeanMs, limits.loopMsPerMin, 'ms/min'),
    slope('drain lag slope', (s) => s.drainLagMs, limits.lagMsPerMin, 'ms/min'),
    slope('webhook lag slope (undelivered ÷ webhook rate)', (s) => asLagMs(s.webhookBacklog, rates.webhook), limits.lagMsPerMin, 'ms/min'),
    slope('inbox lag slope (unacked ÷ inbox rate)', (s) => asLagMs(s.inboxPending, rates.inbox), limits.lagMsPerMin, 'ms/min'),
    slope('LMDB log on disk slope', (s) => s.logDiskMb, limits.logMbPerMin, 'MB/min'),
    { name: 'unexpected answers and socket errors', value: errorRate, limit: limits.errorRate, unit: 'share of requests', bound: 'max', ok: errorRate <= limits.errorRate },
    { name: 'catch-up after the load (log drained, webhooks delivered)', value: caughtUpS, limit: limits.catchUpS, unit: 's', bound: 'max', ok: caughtUpS !== null && caughtUpS <= limits.catchUpS },
    { name: 'accepted rate, second half ÷ target', value: accepted / rates.target, limit: limits.minRateShare, unit: 'share', bound: 'min', ok: accepted / rates.target >= limits.minRateShare },
  ];
}
