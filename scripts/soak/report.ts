// What a soak run leaves behind: the samples as CSV, a chart of them over time (with the
// second-half fit the verdict judged drawn dashed), and a markdown summary.
import os from 'node:os';
import { renderChart, type ChartSpec } from '../../native-bench/chart.ts';
import { fmt, int } from '../../native-bench/lib.ts';
import type { Check } from './analysis.ts';
import type { SoakResult } from './run.ts';
import type { Sample } from './sampler.ts';

const COLUMNS: Array<[header: string, pick: (sample: Sample) => number, digits: number]> = [
  ['t_s', (s) => s.t, 3],
  ['rss_mb', (s) => s.rssMb, 1],
  ['rss_anon_mb', (s) => s.rssAnonMb, 1],
  ['rss_file_mb', (s) => s.rssFileMb, 1],
  ['heap_used_mb', (s) => s.heapUsedMb, 1],
  ['heap_total_mb', (s) => s.heapTotalMb, 1],
  ['external_mb', (s) => s.externalMb, 1],
  ['loop_mean_ms', (s) => s.loopMeanMs, 2],
  ['loop_p99_ms', (s) => s.loopP99Ms, 2],
  ['log_disk_mb', (s) => s.logDiskMb, 2],
  ['log_file_mb', (s) => s.logFileMb, 2],
  ['backlog', (s) => s.backlog, 0],
  ['drain_lag_ms', (s) => s.drainLagMs, 1],
  ['accepted_per_s', (s) => s.acceptedPerS, 0],
  ['delivered_per_s', (s) => s.deliveredPerS, 0],
  ['webhook_backlog', (s) => s.webhookBacklog, 0],
  ['inbox_pending', (s) => s.inboxPending, 0],
  ['inbox_cycle_max_ms', (s) => s.inboxMs, 1],
  ['metrics_scrape_ms', (s) => s.scrapeMs, 1],
  ['errors_total', (s) => s.errors, 0],
  ['designed_429_total', (s) => s.designed429, 0],
];

export function samplesCsv(samples: readonly Sample[]): string {
  const rows = samples.map((sample) => COLUMNS.map(([, pick, digits]) => {
    const value = pick(sample);
    return Number.isFinite(value) ? value.toFixed(digits) : '';
  }).join(','));
  return `${[COLUMNS.map(([header]) => header).join(','), ...rows].join('\n')}\n`;
}

/** The panels of the chart: each a title and its series. */
function panels(result: SoakResult): Array<{ title: string; series: Array<[name: string, pick: (sample: Sample) => number]> }> {
  const asLag = (backlog: number, rate: number) => (rate > 0 ? (backlog / rate) * 1000 : 0);
  return [
    { title: 'Server memory (MB)', series: [['RSS', (s) => s.rssMb], ['RSS anonymous', (s) => s.rssAnonMb], ['RSS file-backed (LMDB map, code)', (s) => s.rssFileMb], ['heap used (main thread)', (s) => s.heapUsedMb], ['heap committed (main thread)', (s) => s.heapTotalMb], ['external (main thread: Buffers)', (s) => s.externalMb]] },
    { title: 'Event-loop delay, main thread (ms, per second)', series: [['mean', (s) => s.loopMeanMs], ['p99', (s) => s.loopP99Ms]] },
    {
      title: 'Lag (ms)',
      series: [
        ['drain lag', (s) => s.drainLagMs],
        ['webhook lag (undelivered ÷ rate)', (s) => asLag(s.webhookBacklog, result.rates.webhook)],
        ['inbox lag (unacked ÷ rate)', (s) => asLag(s.inboxPending, result.rates.inbox)],
      ],
    },
    { title: 'LMDB log on disk (MB)', series: [['allocated', (s) => s.logDiskMb], ['apparent size', (s) => s.logFileMb]] },
    { title: 'Rate (events/s)', series: [['accepted', (s) => s.acceptedPerS], ['target', () => result.rates.target], ['webhooks delivered', (s) => s.deliveredPerS]] },
  ];
}

export function chartSpec(result: SoakResult, title: string): ChartSpec {
  const half = (result.samples[result.samples.length - 1]?.t ?? 0) / 2;
  const rows = panels(result).map(({ title: panel, series }) => {
    const values = result.samples.flatMap((sample) =>
      series.map(([name, pick]) => ({ t: sample.t, series: name, value: pick(sample) })).filter((row) => Number.isFinite(row.value)),
    );
    const order = series.map(([name]) => name);
    const color = { field: 'series', type: 'nominal', sort: order, title: null, scale: { scheme: 'tableau10' }, legend: { orient: 'right', labelLimit: 260 } } as const;
    return {
      title: panel,
      width: 720,
      height: 150,
      data: { values },
      encoding: {
        x: { field: 't', type: 'quantitative', title: 'seconds since the load started', scale: { nice: false } },
        y: { field: 'value', type: 'quantitative', title: null },
        color,
      },
      layer: [
        { mark: { type: 'line', strokeWidth: 1, clip: true } },
        {
          // The least-squares fit over the second half, as judged.
          transform: [{ filter: `datum.t >= ${half}` }, { regression: 'value', on: 't', groupby: ['series'] }],
          mark: { type: 'line', strokeDash: [6, 3], strokeWidth: 1.5, clip: true },
        },
      ],
    };
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle: `${result.passed ? 'PASSED' : 'FAILED'}; dashed: least-squares fit over the second half`, anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: null }, axis: { grid: true, gridOpacity: 0.4 } },
    background: 'white',
    padding: 12,
    vconcat: rows,
    // Each panel names its own series.
    resolve: { scale: { color: 'independent' }, legend: { color: 'independent' } },
  } as ChartSpec;
}

export function chartSvg(result: SoakResult, title: string): Promise<string> {
  return renderChart(chartSpec(result, title));
}

function checkValue(check: Check): string {
  if (check.value === null) return 'n/a';
  if (check.unit === 'share of requests' || check.unit === 'share') return `${(check.value * 100).toFixed(check.unit === 'share' ? 1 : 3)} %`;
  return `${fmt(check.value, 2)} ${check.unit}`;
}

function checkLimit(check: Check): string {
  const limit = check.unit === 'share of requests' || check.unit === 'share'
    ? `${(check.limit * 100).toFixed(check.unit === 'share' ? 0 : 3)} %`
    : `${fmt(check.limit, 2)} ${check.unit}`;
  return `${check.bound === 'max' ? '≤' : '≥'} ${limit}`;
}

export function checksTable(checks: readonly Check[]): string {
  return [
    '| check | measured | limit | |',
    '|---|---:|---:|---|',
    ...checks.map((check) => `| ${check.name} | ${checkValue(check)} | ${checkLimit(check)} | ${check.ok ? 'ok' : '**FAIL**'} |`),
  ].join('\n');
}

/** Median of a quantity over the first or last 10 s of samples. */
function edge(samples: readonly Sample[], pick: (sample: Sample) => number, which: 'first' | 'last'): number {
  const window = which === 'first' ? samples.slice(0, 10) : samples.slice(-10);
  const values = window.map(pick).filter(Number.isFinite).sort((a, b) => a - b);
  return values.length === 0 ? Number.NaN : values[Math.floor((values.length - 1) / 2)]!;
}

export function summaryMarkdown(result: SoakResult, options: { title: string; note: string | null; facts: readonly string[]; files: readonly string[] }): string {
  const { samples, plan } = result;
  const max = (pick: (sample: Sample) => number) => Math.max(...samples.map(pick).filter(Number.isFinite));
  const row = (name: string, pick: (sample: Sample) => number, digits: number) =>
    `| ${name} | ${fmt(edge(samples, pick, 'first'), digits)} | ${fmt(edge(samples, pick, 'last'), digits)} | ${fmt(max(pick), digits)} |`;
  const outcomes = Object.entries(result.deliveryOutcomes).map(([outcome, n]) => `${outcome} ${int(n)}`).join(', ');
  return [
    `# ${options.title}`,
    '',
    ...(options.note ? [`**${options.note}**`, ''] : []),
    `**${result.passed ? 'PASSED' : 'FAILED'}**`,
    '',
    ...options.facts,
    `- Server: defaults (DURABILITY fsync, ACCEPTOR_THREADS 1, PERSIST_WORKERS 1, DELIVERY_WORKERS 1) plus WEBHOOK_ALLOW_PRIVATE=true`,
    `- Rate: ${int(result.rates.target)} events/s${result.probedMax === null ? '' : ` (70 % of ${int(result.probedMax)}/s measured by a 5 s probe with ${plan.connections} connections after a 5 s warm-up)`}: ` +
      `${int(plan.ingestRate)}/s single events over ${plan.connections} keep-alive connections (${plan.orgs.ingest} orgs), ` +
      `${int(plan.webhookRate)}/s single events to ${plan.orgs.webhook} org(s) with a local webhook endpoint, ` +
      `${int(plan.batchRate)}/s in batches of ${plan.batchSize} to ${plan.orgs.inbox} org(s) whose inbox is read and acked back to back, ` +
      `plus ${plan.limitedRate}/s to a free-tier org (100/min), whose 429s are by design`,
    `- CPU while the load ran, in cores (of ${os.cpus().length}): server ${fmt(result.cpu.server, 2)}, load generator (clients, receivers, sampler: one process) ${fmt(result.cpu.loadGenerator, 2)}, ` +
      `whole machine ${fmt(result.cpu.machine, 2)} (Postgres and anything else running included)`,
    `- Samples: ${samples.length}, one per second; slopes are least-squares fits over the second half (t ≥ ${fmt((samples[samples.length - 1]?.t ?? 0) / 2, 0)} s)`,
    '',
    checksTable(result.checks),
    '',
    '| quantity | first 10 s (median) | last 10 s (median) | max |',
    '|---|---:|---:|---:|',
    row('server RSS (MB)', (s) => s.rssMb, 1),
    row('RSS anonymous (MB)', (s) => s.rssAnonMb, 1),
    row('heap used, main thread (MB)', (s) => s.heapUsedMb, 1),
    row('event-loop delay mean, main thread (ms)', (s) => s.loopMeanMs, 2),
    row('event-loop delay p99, main thread (ms)', (s) => s.loopP99Ms, 2),
    row('LMDB log allocated on disk (MB)', (s) => s.logDiskMb, 2),
    row('log backlog (events)', (s) => s.backlog, 0),
    row('drain lag (ms)', (s) => s.drainLagMs, 1),
    row('webhook backlog (events)', (s) => s.webhookBacklog, 0),
    row('inbox unacked (events, fewest in each second)', (s) => s.inboxPending, 0),
    row('inbox read + ack cycle (ms)', (s) => s.inboxMs, 1),
    row('accepted (events/s)', (s) => s.acceptedPerS, 0),
    '',
    'Traffic:',
    ...result.totals.lines.map((line) => `- ${line}`),
    `- webhook outcomes (server counters): ${outcomes}`,
    `- after the load: ${result.caughtUpS === null ? 'the log or the deliveries had not caught up in time' : `log drained and every webhook delivered in ${fmt(result.caughtUpS, 1)} s`}`,
    ...(result.totals.problems.length > 0 ? ['', 'Problems seen:', ...result.totals.problems.map((problem) => `- ${problem}`)] : []),
    ...(result.notes.length > 0 ? ['', 'Notes:', ...result.notes.map((note) => `- ${note}`)] : []),
    ...(options.files.length > 0 ? ['', `Files: ${options.files.map((file) => `\`${file}\``).join(', ')}`] : []),
    '',
  ].join('\n');
}
