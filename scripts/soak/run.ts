// One soak run, the same for `npm run soak` and test/soak.test.ts: a fresh DATA_DIR and the real
// server (DURABILITY and the rest at their defaults, WEBHOOK_ALLOW_PRIVATE=true for the local
// endpoints), optionally a probe of its maximum, the mixed load of load.ts for the duration
// with a sample every second, a catch-up wait, SIGTERM, and the verdict of analysis.ts.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import {
  backlogOf, benchClock, cleanupMark, cpuSeconds, createKeys, log as benchLog, machineBusyCores, machineCpu, onCleanup, PacedClient,
  readMetrics, runCleanups, sleep, startServer, stopServer, waitForBacklog, warmKeys, type RunningServer,
} from '../../native-bench/lib.ts';
import { judge, type Check, type Limits, type Rates } from './analysis.ts';
import { api, SoakLoad, type LoadPlan, type LoadTotals } from './load.ts';
import { Sampler, type Sample } from './sampler.ts';

/**
 * The probe: as fast as `connections` sockets go for this long, after a warm-up as long again (a
 * server just started is still compiling and filling its caches); the soak then runs at PROBE_SHARE of it.
 */
const PROBE_SECONDS = 5;
const PROBE_WARMUP_SECONDS = 5;
const PROBE_SHARE = 0.7;
/**
 * Events per second one enterprise org may be sent: 84 % of its 100,000/min refill, so no org
 * answers 429 however long the run (its one-minute burst is never needed).
 */
const ORG_RATE = 1400;
/** The free-tier org gets this many events per second; its limit is 100/min (≈1.7/s). */
const LIMITED_RATE = 5;
const CATCH_UP_POLL_MS = 100;

/** The load's shape unless told otherwise (the CLI's flags default to these; the test uses them as they are). */
export const LOAD_DEFAULTS = { connections: 64, webhookShare: 0.03, batchShare: 0.05, batchSize: 100 } as const;

export interface SoakOptions {
  databaseUrl: string;
  /** Where the temporary DATA_DIR is made. */
  dataDirBase: string;
  durationS: number;
  /** Events per second over all streams, or 'probe' (PROBE_SHARE of a PROBE_SECONDS maximum). */
  rate: number | 'probe';
  /** Keep-alive connections of the ingest stream (and of the probe). */
  connections: number;
  /** Shares of the rate sent to the webhook orgs and, in batches, to the inbox orgs. */
  webhookShare: number;
  batchShare: number;
  batchSize: number;
  limits: Limits;
  onSample?: (sample: Sample) => void;
  log?: (message: string) => void;
}

export interface SoakResult {
  startedAt: Date;
  /** Events per second aimed at, and the probe's maximum when there was one. */
  rates: Rates;
  probedMax: number | null;
  plan: Omit<LoadPlan, 'keys'> & { orgs: { ingest: number; webhook: number; inbox: number; limited: number } };
  samples: Sample[];
  totals: LoadTotals;
  caughtUpS: number | null;
  /** triggers_webhook_deliveries_total by outcome at the end. */
  deliveryOutcomes: Record<string, number>;
  /** Cores used on average while the load ran: the server, this process (clients, receivers, sampler), the whole machine. */
  cpu: { server: number | null; loadGenerator: number; machine: number | null };
  checks: Check[];
  passed: boolean;
  notes: string[];
}

/** `connections` sockets as fast as they go for PROBE_SECONDS, after a warm-up: the accepted events per second. */
async function probeMaximum(server: RunningServer, connections: number): Promise<number> {
  const ceiling = 100_000; // a schedule no server here keeps up with: the client runs closed-loop
  const keys = await createKeys(server, 'soak probe', 4); // 4 × 100,000 burst: no 429
  await warmKeys(server, keys);
  let perSecond = 0;
  for (const seconds of [PROBE_WARMUP_SECONDS, PROBE_SECONDS]) {
    const client = new PacedClient(server.port, keys, 'soak.probe', ceiling, ceiling * seconds, connections);
    await client.run(seconds * 1000);
    perSecond = (client.statuses.counts.get(202) ?? 0) / ((client.finished - client.started) / 1000);
  }
  await waitForBacklog(server.port, 120_000);
  return perSecond;
}

async function createFreeKey(server: RunningServer, name: string): Promise<string> {
  const reply = await api(server.port, 'POST', '/api/keys/generate', {
    body: { organization_name: name, tier: 'free' },
    headers: { authorization: `Bearer ${server.adminToken}` },
  });
  if (reply.status !== 201) throw new Error(`key generation failed: ${reply.status} ${JSON.stringify(reply.body)}`);
  return reply.body.api_key;
}

/** Splits `rate` over the streams and makes enough orgs for each. */
async function planLoad(server: RunningServer, rate: number, options: SoakOptions): Promise<LoadPlan> {
  const webhookRate = rate * options.webhookShare;
  const batchRate = rate * options.batchShare;
  const ingestRate = rate - webhookRate - batchRate;
  const orgsFor = (streamRate: number) => Math.max(1, Math.ceil(streamRate / ORG_RATE));
  const [ingest, webhook, inbox] = await Promise.all([
    createKeys(server, 'soak ingest', orgsFor(ingestRate)),
    createKeys(server, 'soak webhook', orgsFor(webhookRate)),
    createKeys(server, 'soak inbox', orgsFor(batchRate)),
  ]);
  const limited = await createFreeKey(server, 'soak limited');
  await warmKeys(server, [...ingest, ...webhook, ...inbox, limited]);
  return {
    ingestRate, webhookRate, batchRate, limitedRate: LIMITED_RATE, batchSize: options.batchSize, connections: options.connections,
    keys: { ingest, webhook, inbox, limited },
  };
}

/** Waits until the log is drained and every accepted webhook event was delivered; the seconds it took, or null. */
async function catchUp(server: RunningServer, load: SoakLoad, timeoutS: number): Promise<number | null> {
  const started = benchClock();
  for (;;) {
    const counters = load.counters();
    if ((await backlogOf(server.port)) === 0 && counters.delivered >= counters.webhookAccepted) return (benchClock() - started) / 1000;
    if (benchClock() - started > timeoutS * 1000) return null;
    await sleep(CATCH_UP_POLL_MS);
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const log = options.log ?? benchLog;
  const mark = cleanupMark();
  const notes: string[] = [];
  try {
    const dataDir = mkdtempSync(path.join(options.dataDirBase, 'triggers-soak-'));
    chmodSync(dataDir, 0o755);
    onCleanup(async () => rmSync(dataDir, { recursive: true, force: true }));
    const server = await startServer(options.databaseUrl, dataDir, { WEBHOOK_ALLOW_PRIVATE: 'true' });
    onCleanup(async () => void (await server.stop()));
    log(`server pid ${server.child.pid} on port ${server.port}, DATA_DIR ${dataDir}`);

    let probedMax: number | null = null;
    let rate: number;
    if (options.rate === 'probe') {
      probedMax = await probeMaximum(server, options.connections);
      rate = Math.round(probedMax * PROBE_SHARE);
      log(`probe: ${Math.round(probedMax)} events/s in ${PROBE_SECONDS} s with ${options.connections} connections; soaking at ${rate}/s`);
    } else {
      rate = options.rate;
    }
    const plan = await planLoad(server, rate, options);
    const load = await SoakLoad.prepare(server.port, plan);
    onCleanup(() => load.close());
    const sampler = new Sampler(server.child.pid!, server.port, path.join(dataDir, 'log'), () => load.counters());
    log(`load: ${Math.round(plan.ingestRate)}/s single events, ${Math.round(plan.webhookRate)}/s to webhook orgs, ${Math.round(plan.batchRate)}/s in batches of ${plan.batchSize} (read and acked from the inbox), ${plan.limitedRate}/s over a free-tier limit; ${options.durationS} s`);

    const serverStat = `/proc/${server.child.pid}/stat`;
    const cpuBefore = { server: cpuSeconds(serverStat), self: process.cpuUsage(), machine: machineCpu() };
    const startedAt = new Date();
    const started = benchClock();
    const running = load.run(options.durationS, started);
    const samples: Sample[] = [];
    try {
      for (let second = 1; second <= options.durationS; second++) {
        await sleep(started + second * 1000 - benchClock());
        const sample = await sampler.take((benchClock() - started) / 1000);
        samples.push(sample);
        options.onSample?.(sample);
      }
    } finally {
      load.stop();
      await running;
    }
    const seconds = (benchClock() - started) / 1000;
    const serverCpu = cpuSeconds(serverStat);
    const self = process.cpuUsage(cpuBefore.self);
    const cpu = {
      server: serverCpu === null || cpuBefore.server === null ? null : (serverCpu - cpuBefore.server) / seconds,
      loadGenerator: (self.user + self.system) / 1e6 / seconds,
      machine: machineBusyCores(cpuBefore.machine, machineCpu()),
    };

    const caughtUpS = await catchUp(server, load, options.limits.catchUpS);
    const metrics = await readMetrics(server.port);
    const deliveryOutcomes = Object.fromEntries(
      ['delivered', 'retry', 'failed', 'deferred'].map((outcome) => [outcome, metrics.get(`triggers_webhook_deliveries_total{outcome="${outcome}"}`) ?? Number.NaN]),
    );
    await stopServer(server, notes);
    const totals = load.totals();
    const rates: Rates = { target: plan.ingestRate + plan.webhookRate + plan.batchRate, webhook: plan.webhookRate, inbox: plan.batchRate };
    const checks = judge(samples, totals, rates, caughtUpS, options.limits);
    const { keys, ...shape } = plan;
    return {
      startedAt, rates, probedMax,
      plan: { ...shape, orgs: { ingest: keys.ingest.length, webhook: keys.webhook.length, inbox: keys.inbox.length, limited: 1 } },
      samples, totals, caughtUpS, deliveryOutcomes, cpu, checks,
      passed: checks.every((check) => check.ok) && notes.length === 0,
      notes,
    };
  } finally {
    await runCleanups(mark);
  }
}
