// `npm run chaos`: sustained load on the real server while it is kill -9'd and restarted, cut off
// from Postgres and its webhook receivers fail or hang; then everything settles and every
// acknowledged event is reconciled against Postgres and the receivers. Prints a summary table and
// exits 1 if an invariant broke. Uses DATABASE_URL, or starts an embedded Postgres for the run.
import { Command, InvalidArgumentError, Option } from 'commander';
import ms from 'ms';
import { onCleanup, postgresBaseUrl, runBench, runCleanups } from '../native-bench/lib.ts';
import { runChaos, SERVER_ENV, type ChaosOptions } from './chaos/run.ts';
import { summaryTable } from './chaos/summary.ts';

/** A plain number is seconds; otherwise an `ms` duration (500ms, 90s, 2m). */
function duration(value: string): number {
  const parsed = /^\d+(\.\d+)?$/.test(value) ? Number(value) * 1000 : ms(value as ms.StringValue);
  if (typeof parsed !== 'number' || !Number.isFinite(parsed) || parsed < 0) throw new InvalidArgumentError('expected a duration: 60, 60s, 500ms, 2m');
  return parsed;
}

function whole(value: string, min = 1): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min) throw new InvalidArgumentError(`expected a whole number ≥ ${min}`);
  return parsed;
}

/** An option taking a duration; its default shown as written. */
const timeOption = (flags: string, description: string, fallback: string) =>
  new Option(flags, description).argParser(duration).default(duration(fallback), fallback);

const program = new Command('chaos')
  .description(
    'Load the server while it is killed (kill -9), cut off from Postgres and its webhook receivers fail; ' +
      'then check that no acknowledged event was lost or stored twice, that every re-sent dedup_id got 409 ' +
      'with the original id, and that every delivery reached its own org, validly signed. ' +
      `Server: ${Object.entries(SERVER_ENV).map(([name, value]) => `${name}=${value}`).join(' ')}.`,
  )
  .addOption(timeOption('--duration <time>', 'how long load and faults run', '120s'))
  .addOption(timeOption('--kill-every <time>', 'kill -9 and restart the server about this often (0: never)', '20s'))
  .addOption(timeOption('--pg-cut-every <time>', 'cut the server off from Postgres about this often (0: never)', '30s'))
  .addOption(timeOption('--pg-cut-for <time>', 'how long a Postgres outage lasts', '5s'))
  .addOption(timeOption('--receiver-fault-every <time>', 'make a webhook receiver fail (500) or hang about this often (0: never)', '8s'))
  .addOption(timeOption('--receiver-fault-for <time>', 'how long a receiver fault lasts', '3s'))
  .option('--orgs <n>', 'organizations (enterprise and business tiers, alternating), one receiver each', (value) => whole(value), 4)
  .option('--rate <n>', 'requests per second (single events, batches of 2-20, re-sent dedup_ids)', (value) => whole(value), 100)
  .option('--concurrency <n>', 'requests in flight at most', (value) => whole(value), 16)
  .option('--seed <n>', 'seed of the request mix and the fault schedule (default: random)', (value) => whole(value, 0))
  .addOption(timeOption('--settle-timeout <time>', 'how long the server may take to drain and deliver after the faults stop', '150s'))
  .option('--expedite-leases', 'redeliver events whose delivery outcome was lost to a fault instead of waiting ~60 s for the claim to expire', false)
  .showHelpAfterError();

interface CliArgs {
  duration: number;
  killEvery: number;
  pgCutEvery: number;
  pgCutFor: number;
  receiverFaultEvery: number;
  receiverFaultFor: number;
  orgs: number;
  rate: number;
  concurrency: number;
  seed?: number;
  settleTimeout: number;
  expediteLeases: boolean;
}

runBench(async () => {
  const args = program.parse().opts<CliArgs>();
  const options: ChaosOptions = {
    durationMs: args.duration,
    killEveryMs: args.killEvery,
    pgCutEveryMs: args.pgCutEvery,
    pgCutForMs: args.pgCutFor,
    receiverFaultEveryMs: args.receiverFaultEvery,
    receiverFaultForMs: args.receiverFaultFor,
    orgs: args.orgs,
    rate: args.rate,
    concurrency: args.concurrency,
    seed: args.seed ?? Math.floor(Math.random() * 2 ** 31),
    expediteLeases: args.expediteLeases,
    settleTimeoutMs: args.settleTimeout,
  };
  process.env.DATABASE_URL = (await postgresBaseUrl()).url;
  const report = await runChaos(options, { log: (line) => console.error(`[chaos] ${line}`), onCleanup });
  await runCleanups();
  console.log(summaryTable(report));
  for (const [answer, count] of Object.entries(report.oddAnswers)) console.log(`NOTE ${count} × ${answer}`);
  for (const violation of report.violations) console.log(`VIOLATION ${violation}`);
  console.log(report.violations.length === 0 ? 'chaos: all invariants held' : `chaos: ${report.violations.length} invariant(s) broken (seed ${report.seed})`);
  process.exit(report.violations.length === 0 ? 0 : 1);
});
