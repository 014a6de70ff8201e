// `npm run fuzz`: the fuzzing batches of test/fuzz-raw.test.ts against the real server, one after
// another for as long as asked: garbage over HTTP on every route, raw-socket protocol attacks,
// slowloris connections, with the state checked unchanged and the server serving after each batch.
// Prints a summary per batch; stops at the first batch with a problem and exits 1 (its seed replays
// it). Uses DATABASE_URL, or starts an embedded Postgres for the run.
// Usage: npm run fuzz [-- --duration 60 --runs 300 --seed 42]   npm run fuzz -- --help
import { randomBytes } from 'node:crypto';
import { Command, InvalidArgumentError } from 'commander';
import { onCleanup, postgresBaseUrl, runBench, runCleanups } from '../native-bench/lib.ts';
import { fuzzBatch, prepareTarget, summarize, type BatchReport } from '../test/fuzz/campaign.ts';
import { createTestDatabase, TestServer } from '../test/helpers/server.ts';

function whole(value: string, min = 0): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min) throw new InvalidArgumentError(`expected a whole number ≥ ${min}`);
  return parsed;
}

const program = new Command('fuzz')
  .description('Fuzz the live server in batches; each batch must leave no 5xx, hang, crash, leak or state change behind.')
  .option('--runs <n>', 'HTTP requests with garbage per batch (plus a sweep of 3 per route, a sixth as many raw attacks, 9 slowloris connections)', (value) => whole(value, 1), 300)
  .option('--seed <n>', 'seed of the first batch; batch i uses seed + i (default: random)', (value) => whole(value))
  .option('--duration <s>', 'start batches until this many seconds have passed (default: one batch)', (value) => whole(value, 1))
  .showHelpAfterError();

interface CliArgs {
  runs: number;
  seed?: number;
  duration?: number;
}

function add(total: Map<string, number>, part: Map<string, number>): void {
  for (const [name, count] of part) total.set(name, (total.get(name) ?? 0) + count);
}

runBench(async () => {
  const args = program.parse().opts<CliArgs>();
  const firstSeed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
  process.env.DATABASE_URL = (await postgresBaseUrl()).url;
  const db = await createTestDatabase();
  onCleanup(() => db.drop());
  const adminToken = randomBytes(24).toString('base64url');
  const server = await TestServer.start(db.url, { ADMIN_TOKEN: adminToken });
  onCleanup(() => server.close());
  const target = await prepareTarget(server, db.sql, adminToken);

  const started = Date.now();
  const reports: BatchReport[] = [];
  for (let batch = 0; batch === 0 || (args.duration !== undefined && Date.now() - started < args.duration * 1000); batch++) {
    const report = await fuzzBatch(target, { requests: args.runs, attacks: Math.ceil(args.runs / 6), slowConnections: 9, seed: firstSeed + batch });
    reports.push(report);
    console.log(`batch ${batch + 1}: ${summarize(report)}`);
    if (report.problems.length > 0) break;
  }
  await runCleanups();

  const tried = new Map<string, number>();
  const outcomes = new Map<string, number>();
  for (const report of reports) {
    add(tried, report.tried);
    add(outcomes, report.outcomes);
  }
  const inputs = [...tried.values()].reduce((sum, count) => sum + count, 0);
  const failed = reports.find((report) => report.problems.length > 0);
  console.log(`\n${reports.length} batch(es), ${inputs} inputs in ${((Date.now() - started) / 1000).toFixed(0)} s, seeds ${firstSeed}..${firstSeed + reports.length - 1}`);
  for (const [name, count] of [...outcomes].sort((a, b) => b[1] - a[1])) console.log(`  ${name.padEnd(34)} ${count}`);
  console.log(failed ? `fuzz: problems in the batch with seed ${failed.seed}; replay: npm run fuzz -- --seed ${failed.seed} --runs ${args.runs}` : 'fuzz: no problems');
  process.exit(failed ? 1 : 0);
});
