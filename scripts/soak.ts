// `npm run soak`: the real server under a steady mixed load for a long while (default 10 min),
// sampled every second; fails (exit 1) when memory, event-loop delay, lag or the log grow without
// bound, or when requests fail. The run itself is scripts/soak/run.ts (test/soak.test.ts runs the
// same for 60 s); this file parses flags, provides Postgres and writes
// native-bench/results/<date>-soak.{csv,svg,md}.
// Usage: npm run soak [-- --duration 600 --rate 10000 ...]   npm run soak -- --help
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  commandLine, createDatabase, fmt, log, machineFacts, onCleanup, parseBenchArgs, positive, postgresBaseUrl, postgresVersion,
  ROOT, runBench, runCleanups,
} from '../native-bench/lib.ts';
import { DEFAULT_LIMITS, type Limits } from './soak/analysis.ts';
import { chartSvg, checksTable, samplesCsv, summaryMarkdown } from './soak/report.ts';
import { LOAD_DEFAULTS, runSoak } from './soak/run.ts';

/** ≈ 70 % of the 14,000–18,000 durable events/s that 64 connections reach on the 2-core dev machine (native-bench/RESULTS.md). */
const RESULTS_DIR = path.join(ROOT, 'native-bench', 'results');
const PROGRESS_EVERY_S = 10;

const USAGE = `npm run soak -- [options]
  --duration <s>          seconds of load (default 600)
  --rate <n>              events per second over all streams (default: first measure the maximum, --connections as
                          fast as they go for 5 s after a 5 s warm-up, and soak at 70 % of it)
  --connections <n>       keep-alive connections of the single-event stream and the probe (default ${LOAD_DEFAULTS.connections})
  --webhook-share <f>     share of the rate sent to orgs with a local webhook endpoint (default ${LOAD_DEFAULTS.webhookShare})
  --batch-share <f>       share of the rate sent in batches to orgs whose inbox is read and acked (default ${LOAD_DEFAULTS.batchShare})
  --batch-size <n>        events per batch request, 1..1000 (default ${LOAD_DEFAULTS.batchSize})
 verdict (slopes: least-squares over the second half of the samples):
  --max-rss-slope <MB/min>    server RSS (default ${DEFAULT_LIMITS.rssMbPerMin})
  --max-heap-slope <MB/min>   heap used by the server's main thread (default ${DEFAULT_LIMITS.heapMbPerMin})
  --max-loop-slope <ms/min>   mean event-loop delay of the main thread (default ${DEFAULT_LIMITS.loopMsPerMin})
  --max-lag-slope <ms/min>    drain lag, webhook and inbox lag (default ${DEFAULT_LIMITS.lagMsPerMin})
  --max-log-slope <MB/min>    LMDB log allocated on disk (default ${DEFAULT_LIMITS.logMbPerMin})
  --max-error-rate <f>        unexpected answers + socket errors per request (default ${DEFAULT_LIMITS.errorRate})
  --min-rate-share <f>        accepted events/s over the second half ÷ the rate (default ${DEFAULT_LIMITS.minRateShare})
  --max-catch-up <s>          time for the drain and the deliveries to finish after the load (default ${DEFAULT_LIMITS.catchUpS})
Writes native-bench/results/<date>-soak.csv, .svg and .md (not RESULTS.md: --note goes into the .md,
--no-results writes none of them and only prints the summary).`;

const { args, common } = parseBenchArgs({
  duration: { type: 'string', default: '600' },
  rate: { type: 'string' },
  connections: { type: 'string', default: String(LOAD_DEFAULTS.connections) },
  'webhook-share': { type: 'string', default: String(LOAD_DEFAULTS.webhookShare) },
  'batch-share': { type: 'string', default: String(LOAD_DEFAULTS.batchShare) },
  'batch-size': { type: 'string', default: String(LOAD_DEFAULTS.batchSize) },
  'max-rss-slope': { type: 'string', default: String(DEFAULT_LIMITS.rssMbPerMin) },
  'max-heap-slope': { type: 'string', default: String(DEFAULT_LIMITS.heapMbPerMin) },
  'max-loop-slope': { type: 'string', default: String(DEFAULT_LIMITS.loopMsPerMin) },
  'max-lag-slope': { type: 'string', default: String(DEFAULT_LIMITS.lagMsPerMin) },
  'max-log-slope': { type: 'string', default: String(DEFAULT_LIMITS.logMbPerMin) },
  'max-error-rate': { type: 'string', default: String(DEFAULT_LIMITS.errorRate) },
  'min-rate-share': { type: 'string', default: String(DEFAULT_LIMITS.minRateShare) },
  'max-catch-up': { type: 'string', default: String(DEFAULT_LIMITS.catchUpS) },
}, USAGE);

/** A non-negative number, at most `max`. */
function number(name: string, raw: string, max = Number.POSITIVE_INFINITY): number {
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < 0 || value > max) {
    console.error(`--${name}: expected a number from 0 to ${max}, got "${raw}"`);
    process.exit(2);
  }
  return value;
}

const limits: Limits = {
  rssMbPerMin: number('max-rss-slope', args['max-rss-slope']),
  heapMbPerMin: number('max-heap-slope', args['max-heap-slope']),
  loopMsPerMin: number('max-loop-slope', args['max-loop-slope']),
  lagMsPerMin: number('max-lag-slope', args['max-lag-slope']),
  logMbPerMin: number('max-log-slope', args['max-log-slope']),
  errorRate: number('max-error-rate', args['max-error-rate'], 1),
  minRateShare: number('min-rate-share', args['min-rate-share'], 1),
  catchUpS: number('max-catch-up', args['max-catch-up']),
};
const webhookShare = number('webhook-share', args['webhook-share'], 0.5);
const batchShare = number('batch-share', args['batch-share'], 0.5);
const batchSize = positive('batch-size', args['batch-size']);
if (batchSize > 1000) {
  console.error('--batch-size: at most 1000 (the API\'s limit per batch)');
  process.exit(2);
}
const durationS = positive('duration', args.duration);
if (durationS < 20) {
  console.error('--duration: at least 20 s (the verdict fits the second half of the samples)');
  process.exit(2);
}

async function main(): Promise<void> {
  const base = await postgresBaseUrl();
  const database = await createDatabase(base.url);
  onCleanup(database.drop);
  const pgVersion = await postgresVersion(base.url);
  const result = await runSoak({
    databaseUrl: database.url,
    dataDirBase: common.dataDirBase,
    durationS,
    rate: args.rate === undefined ? 'probe' : positive('rate', args.rate),
    connections: positive('connections', args.connections),
    webhookShare,
    batchShare,
    batchSize,
    limits,
    onSample: (sample) => {
      if (Math.round(sample.t) % PROGRESS_EVERY_S !== 0) return;
      log(`t ${fmt(sample.t, 0)} s: RSS ${fmt(sample.rssMb)} MB, heap ${fmt(sample.heapUsedMb)} MB, loop delay ${fmt(sample.loopMeanMs)} ms mean / ${fmt(sample.loopP99Ms)} p99, ` +
        `drain lag ${fmt(sample.drainLagMs)} ms, backlog ${sample.backlog}, log ${fmt(sample.logDiskMb)} MB, ` +
        `accepted ${fmt(sample.acceptedPerS, 0)}/s, webhook backlog ${sample.webhookBacklog}, errors ${sample.errors}`);
    },
  });

  const stamp = result.startedAt.toISOString().slice(0, 16).replace(/:/g, '');
  const prefix = path.join(RESULTS_DIR, `${stamp}-soak`);
  const files = common.writeResults ? ['csv', 'svg', 'md'].map((ext) => path.relative(ROOT, `${prefix}.${ext}`)) : [];
  const title = `Soak: ${fmt(durationS / 60, 1)} min at ${Math.round(result.rates.target)} events/s`;
  const summary = summaryMarkdown(result, {
    title,
    note: common.note,
    facts: machineFacts({ command: commandLine('soak'), tools: '', postgres: base.description, pgVersion }),
    files,
  });
  if (common.writeResults) {
    mkdirSync(RESULTS_DIR, { recursive: true });
    writeFileSync(`${prefix}.csv`, samplesCsv(result.samples));
    writeFileSync(`${prefix}.svg`, await chartSvg(result, title));
    writeFileSync(`${prefix}.md`, summary);
    log(`wrote ${files.join(', ')}`);
  }
  console.log(summary);
  if (!result.passed) {
    console.error(`soak FAILED:\n${checksTable(result.checks.filter((check) => !check.ok))}${result.notes.map((note) => `\n${note}`).join('')}`);
    process.exitCode = 1;
  }
  await runCleanups();
}

runBench(main);
