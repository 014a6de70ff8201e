// The soak (scripts/soak/run.ts, as `npm run soak` runs it) for 60 s at 2,500 events/s: memory,
// event-loop delay, lag and the log must not grow, and no request may fail. Also the verdict on
// synthetic series, so a growing one is shown to fail.
import { tmpdir } from 'node:os';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_LIMITS, judge, slopePerMinute, type Limits } from '../scripts/soak/analysis.ts';
import { chartSvg, samplesCsv, summaryMarkdown } from '../scripts/soak/report.ts';
import { LOAD_DEFAULTS, runSoak } from '../scripts/soak/run.ts';
import type { Sample } from '../scripts/soak/sampler.ts';
import { useTestDatabase, type TestDatabase } from './helpers/server.ts';

const DURATION_S = 60;
/** Low enough for a CI machine that is shared; `npm run soak` defaults to 10,000/s. */
const RATE = 2_500;

/**
 * The 60 s run fits its slopes over 30 s, still inside the server's warm-up: at 2,500/s its RSS
 * rose by ~45 MB/min over seconds 30–60 in two runs (and levelled off at ~290 MB after 2.5 min in
 * a 5 min run), and the heap's 20–32 MB sawtooth weighs far more over 30 s than over 5 min. So
 * memory and loop-delay limits are wider here: they catch a gross leak (100 MB/min is ~670 bytes
 * kept per event at 2,500/s) or a runaway; the 10 min `npm run soak` the slow kinds.
 * The lag, log, catch-up and rate limits are the defaults, and no request may fail.
 */
const TEST_LIMITS: Limits = { ...DEFAULT_LIMITS, rssMbPerMin: 100, heapMbPerMin: 30, loopMsPerMin: 60, errorRate: 0 };

// ---------------------------------------------------------------- the verdict on synthetic series

const verdict = suite('soak verdict');

/** A flat, noisy run of `seconds` samples; `grow` adds to each quantity per second. */
function synthetic(seconds: number, grow: Partial<Record<keyof Sample, number>> = {}): Sample[] {
  return Array.from({ length: seconds }, (_, i) => {
    const t = i + 1;
    const noise = Math.sin(t * 1.7) * 3; // deterministic jitter, no trend
    const base: Sample = {
      t, rssMb: 250 + noise, rssAnonMb: 190 + noise, rssFileMb: 60, heapUsedMb: 25 + noise, heapTotalMb: 40, externalMb: 5, loopMeanMs: 1 + noise / 10, loopP99Ms: 5 + noise,
      logDiskMb: 0.5, logFileMb: 0.5, backlog: 100, drainLagMs: 20 + noise, acceptedPerS: 1000, deliveredPerS: 30,
      webhookBacklog: 5, inboxPending: 10, inboxMs: 50, scrapeMs: 2, errors: 0, designed429: 0,
    };
    const values = base as unknown as Record<string, number>;
    for (const [key, perSecond] of Object.entries(grow)) values[key] = values[key]! + perSecond! * t;
    return base;
  });
}

const RATES = { target: 1000, webhook: 30, inbox: 50 };
const CLEAN = { requests: 60_000, errors: 0, designed429: 10 };
const failed = (samples: Sample[], totals = CLEAN, caughtUpS: number | null = 1) =>
  judge(samples, totals, RATES, caughtUpS, DEFAULT_LIMITS).filter((check) => !check.ok).map((check) => check.name);

verdict('slopePerMinute: exact on a line, null without enough points', () => {
  assert.is(slopePerMinute([0, 60, 120], [10, 20, 30]), 10);
  assert.is(slopePerMinute([0, 1, 2, 3], [5, 5, 5, 5]), 0);
  assert.is(slopePerMinute([0, 1], [1, 2]), null);
  assert.is(slopePerMinute([1, 2, 3], [Number.NaN, 1, Number.NaN]), null);
});

verdict('a flat noisy run passes', () => {
  assert.equal(failed(synthetic(600)), []);
});

verdict('growing RSS, heap, loop delay, lag or log fails its check, and only that one', () => {
  const cases: Array<[Partial<Record<keyof Sample, number>>, string]> = [
    [{ rssMb: 0.1 }, 'server RSS slope'], // 6 MB/min
    [{ heapUsedMb: 0.1 }, 'heap used slope (main thread)'],
    [{ loopMeanMs: 0.5 }, 'event-loop delay slope (main thread, mean per second)'],
    [{ drainLagMs: 10 }, 'drain lag slope'],
    [{ webhookBacklog: 1 }, 'webhook lag slope (undelivered ÷ webhook rate)'], // 1 event/s at 30/s: 2 s/min
    [{ inboxPending: 1 }, 'inbox lag slope (unacked ÷ inbox rate)'],
    [{ logDiskMb: 0.05 }, 'LMDB log on disk slope'],
  ];
  for (const [grow, name] of cases) assert.equal(failed(synthetic(600, grow)), [name], JSON.stringify(grow));
});

verdict('growth only in the first half (warm-up) passes', () => {
  const samples = synthetic(600).map((sample) => ({ ...sample, rssMb: sample.rssMb + Math.min(sample.t, 200) * 0.5 }));
  assert.equal(failed(samples), []);
});

verdict('errors, a short rate, no catch-up, or a missing series fail', () => {
  assert.equal(failed(synthetic(600), { ...CLEAN, errors: 61 }), ['unexpected answers and socket errors']);
  assert.equal(failed(synthetic(600).map((sample) => ({ ...sample, acceptedPerS: 900 }))), ['accepted rate, second half ÷ target']);
  assert.equal(failed(synthetic(600), CLEAN, null), ['catch-up after the load (log drained, webhooks delivered)']);
  assert.equal(failed(synthetic(600).map((sample) => ({ ...sample, heapUsedMb: Number.NaN }))), ['heap used slope (main thread)']);
});

verdict.run();

// ---------------------------------------------------------------- 60 s against the real server

interface Context {
  db: TestDatabase;
}

const soak = suite<Context>('soak');
useTestDatabase(soak);

soak(`${DURATION_S} s at ${RATE} events/s: nothing grows, nothing fails`, async ({ db }) => {
  const result = await runSoak({
    databaseUrl: db.url,
    dataDirBase: tmpdir(),
    durationS: DURATION_S,
    rate: RATE,
    ...LOAD_DEFAULTS,
    limits: TEST_LIMITS,
    log: () => {},
  });
  const summary = summaryMarkdown(result, { title: 'soak test', note: null, facts: [], files: [] });
  assert.ok(result.passed, `the soak failed:\n${summary}`);
  assert.is(result.totals.errors, 0, summary);
  assert.ok(result.samples.length >= DURATION_S - 1, `${result.samples.length} samples`);
  // Every stream really ran: webhooks arrived and verified, the inbox was acked, the free org hit its limit.
  const last = result.samples[result.samples.length - 1]!;
  assert.ok(result.deliveryOutcomes.delivered! > 0 && last.webhookBacklog < RATE, summary);
  assert.ok(result.totals.lines.some((line) => /inbox: .* [1-9]\d* events acknowledged/.test(line)), summary);
  assert.ok(result.totals.designed429 > 0, 'the free-tier org never got its 429');
  for (const sample of result.samples) {
    for (const [name, value] of Object.entries(sample)) assert.ok(Number.isFinite(value), `t ${sample.t}: ${name} is ${value}`);
  }
  // The files `npm run soak` writes render from the same result.
  assert.is(samplesCsv(result.samples).trimEnd().split('\n').length, result.samples.length + 1);
  assert.match(await chartSvg(result, 'soak test'), /^<svg[\s\S]*<\/svg>$/);
});

soak.run();
