// `npm run bench:sequential`: the reference's method (one connection, one request at a time) on
// this server under several configurations, to tune settings that trade ingest latency against
// something else (PERSIST_LINGER: drain lag). Every configuration × durability mode runs as its
// own server, side by side; the rounds are interleaved so machine noise hits all alike.
// Writes native-bench/results/<date>-sequential.md and points results/LATEST.md at it.
// Usage: npm run bench:sequential -- --config PERSIST_LINGER=5ms --config PERSIST_LINGER=100ms
//        npm run bench:sequential -- --help
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  commandLine, createDatabase, createKeys, datedResultFile, fmt, int, log, machineFacts, onCleanup, parseBenchArgs, runSequential,
  positive, postgresBaseUrl, postgresVersion, ROOT, runCleanups, spread, spreadCell, startServer, stats, tempDataDir, updateLatest,
  type RunningServer, type Stats,
} from './lib.ts';

const USAGE = `npm run bench:sequential -- [options]
  --config <NAME=VALUE[,NAME=VALUE]>   one server configuration (repeat the flag for more; default: the defaults alone)
  --durability <list>                  fsync,commit (default both)
  --rounds <n>                         interleaved rounds (default 3)
  --amount <n>                         requests per run (default 4000)
  --warmup <n>                         requests per server before the first round (default 500)`;

const { args, common } = parseBenchArgs({
  config: { type: 'string', multiple: true },
  durability: { type: 'string', default: 'fsync,commit' },
  rounds: { type: 'string', default: '3' },
  amount: { type: 'string', default: '4000' },
  warmup: { type: 'string', default: '500' },
}, USAGE);

function parseConfig(raw: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of raw.split(',').filter(Boolean)) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair.trim());
    if (!match) {
      console.error(`--config: expected NAME=VALUE, got "${pair}"`);
      process.exit(2);
    }
    env[match[1]!] = match[2]!;
  }
  return env;
}

const opts = {
  configs: (args.config ?? ['']).map(parseConfig),
  durabilities: args.durability.split(',').map((d) => d.trim()),
  rounds: positive('--rounds', args.rounds),
  amount: positive('--amount', args.amount),
  warmup: positive('--warmup', args.warmup, true),
};
for (const durability of opts.durabilities) {
  if (durability !== 'fsync' && durability !== 'commit') {
    console.error(`--durability: unknown mode "${durability}" (expected fsync, commit)`);
    process.exit(2);
  }
}

interface Subject {
  label: string;
  server: RunningServer;
  keys: string[];
  runs: Stats[];
  errors: number;
}

const describe = (env: Record<string, string>) => Object.entries(env).map(([name, value]) => `${name}=${value}`).join(' ') || 'defaults';

/** One request at a time over one keep-alive connection; latency of each 202 in ms. */
async function measure(subject: Subject, amount: number): Promise<Stats> {
  const client = await runSequential(subject.server.port, subject.keys, 'bench.sequential', amount);
  const samples: number[] = [];
  for (let i = 0; i < amount; i++) {
    if (client.status[i] === 202) samples.push(client.ackAt[i]! - client.sentAt[i]!);
  }
  subject.errors += amount - samples.length;
  return stats(samples);
}

async function main(): Promise<void> {
  const { url: baseUrl, description: postgres } = await postgresBaseUrl();
  const subjects: Subject[] = [];
  for (const durability of opts.durabilities) {
    for (const config of opts.configs) {
      const database = await createDatabase(baseUrl);
      onCleanup(database.drop);
      const env = { ...config, DURABILITY: durability };
      const server = await startServer(database.url, tempDataDir(common.dataDirBase, 'sequential'), env);
      onCleanup(async () => void (await server.stop()));
      // Enterprise orgs allow 100,000 events a minute each.
      const keys = await createKeys(server, 'sequential', Math.ceil((opts.amount * opts.rounds + opts.warmup) / 90_000));
      subjects.push({ label: describe(env), server, keys, runs: [], errors: 0 });
      log(`${describe(env)}: listening on :${server.port}`);
    }
  }
  for (const subject of subjects) if (opts.warmup > 0) await measure(subject, opts.warmup);
  for (let round = 1; round <= opts.rounds; round++) {
    // Rotate the order each round: no subject always runs first (right after another's drain).
    for (let i = 0; i < subjects.length; i++) {
      const subject = subjects[(i + round - 1) % subjects.length]!;
      const result = await measure(subject, opts.amount);
      subject.runs.push(result);
      log(`round ${round}/${opts.rounds} ${subject.label}: P50 ${fmt(result.p50, 3)} P95 ${fmt(result.p95, 3)} P99 ${fmt(result.p99, 3)} ms`);
    }
  }

  const figure = (subject: Subject, key: keyof Stats) => spreadCell(spread(subject.runs.map((run) => run[key]).filter((v): v is number => v !== null)), (v) => fmt(v, 3));
  const table = [
    '| server | P50 ms | P95 ms | P99 ms | max ms | non-202 |',
    '|---|---:|---:|---:|---:|---:|',
    ...subjects.map((s) => `| ${s.label} | ${figure(s, 'p50')} | ${figure(s, 'p95')} | ${figure(s, 'p99')} | ${figure(s, 'max')} | ${int(s.errors)} |`),
  ];
  console.log(table.join('\n'));
  if (!common.writeResults) return;
  const file = datedResultFile('sequential', 'md');
  writeFileSync(file, [
    `# Sequential latency by configuration (${new Date().toISOString().slice(0, 10)})`,
    '',
    ...(common.note ? [`**${common.note}**`, ''] : []),
    ...machineFacts({ command: commandLine('bench:sequential'), tools: '', postgres, pgVersion: await postgresVersion(baseUrl) }),
    '',
    `Each row is its own server (\`node --import tsx src/main.ts\`, fresh database and DATA_DIR) with the settings shown; all ran side by side.`,
    `After ${int(opts.warmup)} warm-up requests each, ${opts.rounds} interleaved rounds of ${int(opts.amount)} \`POST /api/events\`, one at a time on one`,
    'keep-alive connection (raw HTTP/1.1 socket), enterprise orgs. Cells: median of the rounds (min–max).',
    '',
    ...table,
    '',
  ].join('\n'));
  updateLatest('sequential', [file], subjects.map((s) => `${s.label}: P95 ${figure(s, 'p95')} ms`).join('; '));
  log(`wrote ${path.relative(ROOT, file)}`);
}

try {
  await main();
} finally {
  await runCleanups();
}
