// One chaos run, from a fresh database to the report: the real server (2 acceptor threads,
// DURABILITY=fsync) behind a Postgres proxy, one webhook receiver per org, the load and the
// faults for `durationMs`, then settle and reconcile. Used by scripts/chaos.ts and test/chaos.test.ts.
import { setTimeout as sleep } from 'node:timers/promises';
import { freeLocalPort } from '../../src/db/embedded.ts';
import { PgProxy } from '../../test/helpers/pg-proxy.ts';
import { configureEndpoint } from '../../test/helpers/receiver.ts';
import { createTestDatabase, TestServer } from '../../test/helpers/server.ts';
import { Driver, type Org } from './driver.ts';
import { Faults, type FaultOptions } from './faults.ts';
import { seededRandom } from './random.ts';
import { OrgReceiver } from './receivers.ts';
import { reconcile, settle, Violations, type Reconciled } from './reconcile.ts';
import { ChaosTarget } from './target.ts';

export interface ChaosOptions extends FaultOptions {
  orgs: number;
  /** Requests per second. */
  rate: number;
  concurrency: number;
  seed: number;
  expediteLeases: boolean;
  settleTimeoutMs: number;
}

/**
 * Short webhook timeout and retry schedule, so that retries run their course within the run; two
 * acceptor threads, so that dedup and rate limits are shared across threads.
 */
export const SERVER_ENV = {
  ACCEPTOR_THREADS: '2',
  WEBHOOK_ALLOW_PRIVATE: 'true',
  WEBHOOK_TIMEOUT: '1s',
  WEBHOOK_RETRY_SCHEDULE: '200ms,500ms,1s,2s,4s',
};

export interface ChaosReport extends Reconciled {
  seed: number;
  loadSeconds: number;
  settleSeconds: number;
  requests: number;
  /** The longest a request waited for its answer, ms. */
  slowestMs: number;
  /** Requests by answer: HTTP status, `refused`, `lost` or `stalled`. */
  answers: Record<string, number>;
  /**
   * Answers (per event) other than success, 409 and the rejections faults explain (429, 503): not an
   * invariant of the run, but worth a look (e.g. a 500 where the contract has a 503).
   */
  oddAnswers: Record<string, number>;
  events: number;
  kills: number;
  restarts: number;
  pgCuts: number;
  receiverFaults: number;
  rotations: number;
  expedited: number;
  violations: string[];
  /** What happened when, one line each. */
  timeline: string[];
}

export interface ChaosHooks {
  /** Each timeline line as it happens. */
  log?: (line: string) => void;
  /** Receives the teardown (server, receivers, proxy, database), e.g. to run it on Ctrl-C. */
  onCleanup?: (teardown: () => Promise<void>) => void;
}

export async function runChaos(options: ChaosOptions, hooks: ChaosHooks = {}): Promise<ChaosReport> {
  const started = Date.now();
  const timeline: string[] = [];
  const note = (message: string) => {
    const line = `${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s  ${message}`;
    timeline.push(line);
    hooks.log?.(line);
  };
  // Undone newest first, once, whether the run ends or is interrupted.
  const resources: Array<() => Promise<unknown>> = [];
  let tornDown: Promise<void> | null = null;
  const teardown = () =>
    (tornDown ??= (async () => {
      for (let undo = resources.pop(); undo; undo = resources.pop()) await undo().catch((error) => note(`teardown: ${String(error)}`));
    })());
  hooks.onCleanup?.(teardown);

  try {
    const db = await createTestDatabase();
    resources.push(() => db.drop());
    const proxy = await PgProxy.forDatabase(db.url);
    resources.push(() => proxy.close());
    const receivers = await Promise.all(Array.from({ length: options.orgs }, (_, index) => OrgReceiver.start(index)));
    resources.push(() => Promise.all(receivers.map((receiver) => receiver.close())));
    // A fixed port: clients keep their address across restarts, as real ones would.
    const server = await TestServer.start(proxy.urlFor(db.url), { ...SERVER_ENV, PORT: String(await freeLocalPort()) });
    resources.push(async () => {
      await proxy.reopen(); // a SIGTERM drains the log into Postgres first
      await server.close();
    });

    const orgs: Org[] = [];
    for (const receiver of receivers) {
      // Tiers whose limits the load rarely reaches (a 429 is counted, not a failure).
      const tier = receiver.org % 2 === 0 ? 'enterprise' : 'business';
      const { key, organizationId } = await server.createKey(tier, `chaos org ${receiver.org}`);
      receiver.addSecret((await configureEndpoint(server, key, receiver.url)).secret);
      orgs.push({ index: receiver.org, id: organizationId, key });
    }
    note(`server on ${server.url}, ${orgs.length} orgs, seed ${options.seed}`);

    const target = new ChaosTarget(server);
    const driver = new Driver(target, orgs, seededRandom(options.seed), { rate: options.rate, concurrency: options.concurrency }, note);
    const faults = new Faults(target, proxy, driver, orgs, receivers, seededRandom(options.seed ^ 0x9e3779b9), options, note);
    const loadStarted = Date.now();
    driver.start();
    faults.start();
    await sleep(options.durationMs); // the length of the run, not a wait for anything
    note('stopping the faults');
    await faults.stop();
    await driver.stop();
    const loadSeconds = (Date.now() - loadStarted) / 1000;
    note(`load stopped after ${driver.requests} requests; settling`);

    const violations = new Violations();
    for (const failure of faults.failures) violations.add('fault loop failed', failure);
    // The contract's answers under faults are 2xx, 409, 429 and 503: anything else (a 500) is a bug.
    for (const [answer, count] of driver.oddAnswers) violations.add('answer outside the contract', `${count} × ${answer}`);
    const settleStarted = Date.now();
    const expedited = faults.failures.length > 0 ? 0 : await settle(target, db.sql, orgs, { timeoutMs: options.settleTimeoutMs, expediteLeases: options.expediteLeases }, violations, note);
    const settleSeconds = (Date.now() - settleStarted) / 1000;
    note(`settled in ${settleSeconds.toFixed(1)} s${expedited > 0 ? ` (${expedited} lost delivery claims redelivered)` : ''}; reconciling`);
    const reconciled = await reconcile(db.sql, driver, orgs, receivers, violations);
    // What the server said about it: its errors and fatal lines (and any output that is not JSON, e.g. a crash).
    if (violations.size > 0) {
      for (const line of server.logs.filter((entry) => /"level":(50|60)/.test(entry) || !entry.startsWith('{')).slice(-10)) note(`server: ${line.slice(0, 600)}`);
    }
    return {
      ...reconciled,
      seed: options.seed,
      loadSeconds,
      settleSeconds,
      requests: driver.requests,
      slowestMs: driver.slowestMs,
      answers: Object.fromEntries([...driver.answers].sort(([a], [b]) => a.localeCompare(b))),
      oddAnswers: Object.fromEntries(driver.oddAnswers),
      events: driver.events.length,
      kills: target.kills,
      restarts: target.restarts,
      pgCuts: faults.pgCuts,
      receiverFaults: faults.receiverFaults,
      rotations: faults.rotations,
      expedited,
      violations: violations.lines(),
      timeline,
    };
  } finally {
    await teardown();
  }
}
