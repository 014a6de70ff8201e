// The faults of a chaos run, each on its own seeded schedule (about every `…EveryMs`, ±25 %):
// kill -9 of the server (a few ms after a request went out, so that it hits requests in flight)
// and a restart on the same DATA_DIR and port; a Postgres outage (the TCP
// proxy between server and database closes, cutting every connection, then reopens); a webhook
// receiver that answers 500 or hangs for a while; and, half way through, a rotation of every
// org's webhook secret. Two orderings are kept: a restart waits for Postgres (the server runs its
// migrations at start), and an outage does not begin during a restart. A kill may hit during an
// outage: the log then holds a backlog the next start must drain.
import { setTimeout as sleep } from 'node:timers/promises';
import type { PgProxy } from '../../test/helpers/pg-proxy.ts';
import { waitFor } from '../../test/helpers/server.ts';
import type { Org } from './driver.ts';
import { pick, randomInt, seededRandom, type Random } from './random.ts';
import type { OrgReceiver, ReceiverMode } from './receivers.ts';
import type { ChaosTarget } from './target.ts';

export interface FaultOptions {
  /** Faults are planned within this time from start(). */
  durationMs: number;
  /** Each of the three: 0 for never. */
  killEveryMs: number;
  pgCutEveryMs: number;
  pgCutForMs: number;
  receiverFaultEveryMs: number;
  receiverFaultForMs: number;
}

const RECEIVER_FAULTS: readonly ReceiverMode[] = ['fail', 'hang'];
/** A kill waits at least this long after the previous restart, so that each run of the server takes load. */
const MIN_UPTIME_MS = 2_000;
/** A kill comes this long (ms) after a request was sent, so that it finds requests in flight even at a low rate. */
const KILL_AFTER_SEND_MS = [1, 4] as const;
/** …or after this long if no request is sent. */
const KILL_SEND_WAIT_MS = 1_000;
const JITTER = 0.25;

export class Faults {
  pgCuts = 0;
  receiverFaults = 0;
  rotations = 0;
  /** Errors that ended a fault loop early (a restart that failed, a secret that could not be read). */
  readonly failures: string[] = [];
  private startedAt = 0;
  private pgGate: Promise<void> | null = null;
  private stoppedAt = Infinity;
  private stopSignal: () => void = () => {};
  private readonly stopped = new Promise<void>((resolve) => (this.stopSignal = resolve));
  private loops: Array<Promise<void>> = [];

  constructor(
    private readonly target: ChaosTarget,
    private readonly proxy: PgProxy,
    private readonly load: { nextSend(): Promise<void>; readonly inFlight: number },
    private readonly orgs: readonly Org[],
    private readonly receivers: readonly OrgReceiver[],
    private readonly random: Random,
    private readonly options: FaultOptions,
    private readonly note: (message: string) => void,
  ) {}

  start(): void {
    this.startedAt = Date.now();
    const loops: Array<[string, (random: Random) => Promise<void>]> = [
      ['kill', (random) => this.kills(random)],
      ['postgres', (random) => this.postgresCuts(random)],
      ['receiver', (random) => this.receiverFaultLoop(random)],
      ['rotation', () => this.rotateSecrets()],
    ];
    // A generator per loop: each schedule depends on the seed alone, not on how the loops interleave.
    this.loops = loops.map(([name, loop]) =>
      loop(seededRandom(Math.floor(this.random() * 2 ** 32))).catch((error: Error) => {
        this.failures.push(`${name} fault loop: ${error.message}`);
        this.note(`${name} fault loop failed: ${error.message}`);
      }),
    );
  }

  /**
   * Starts no more faults planned for later; resolves once the ones due by now have run their
   * course (a kill that was due but waited for the previous restart still happens: a slow start
   * delays the schedule, never cancels from it) and everything is back: Postgres reachable, server
   * up, receivers answering.
   */
  async stop(): Promise<void> {
    this.stoppedAt = Date.now();
    this.stopSignal();
    await Promise.all(this.loops);
    for (const receiver of this.receivers) receiver.mode = 'ok';
  }

  /** Start offsets (ms) of a fault repeating about every `everyMs` within the duration; none for 0. */
  private plan(random: Random, everyMs: number): number[] {
    const times: number[] = [];
    for (let k = 1; everyMs > 0 && k * everyMs < this.options.durationMs; k++) {
      times.push(k * everyMs + (random() * 2 - 1) * JITTER * everyMs);
    }
    return times;
  }

  /** Waits until `offsetMs` after start; false when the run stopped before that time. */
  private async until(offsetMs: number): Promise<boolean> {
    const due = this.startedAt + offsetMs;
    if (due > Date.now()) await Promise.race([sleep(due - Date.now()), this.stopped]);
    return due <= this.stoppedAt;
  }

  /** How long a fault lasts. */
  private async hold(random: Random, ms: number): Promise<void> {
    await sleep(ms * (1 - JITTER + random() * 2 * JITTER));
  }

  private async whenPostgresUp(): Promise<void> {
    while (this.pgGate) await this.pgGate;
  }

  private async kills(random: Random): Promise<void> {
    let upSince = 0;
    for (const at of this.plan(random, this.options.killEveryMs)) {
      if (!(await this.until(at))) return;
      const uptimeLeft = upSince + MIN_UPTIME_MS - (Date.now() - this.startedAt);
      if (uptimeLeft > 0) await sleep(uptimeLeft);
      await Promise.race([this.load.nextSend(), sleep(KILL_SEND_WAIT_MS)]);
      await sleep(randomInt(random, ...KILL_AFTER_SEND_MS));
      this.note(`kill -9 #${this.target.kills + 1} (in flight: ${this.load.inFlight})`);
      const downAt = Date.now();
      await this.target.kill();
      await this.whenPostgresUp();
      await this.target.restart();
      upSince = Date.now() - this.startedAt;
      this.note(`restarted (down ${((Date.now() - downAt) / 1000).toFixed(1)} s)`);
    }
  }

  private async postgresCuts(random: Random): Promise<void> {
    for (const at of this.plan(random, this.options.pgCutEveryMs)) {
      if (!(await this.until(at))) return;
      await this.target.whenNotBooting();
      let reopened = () => {};
      this.pgGate = new Promise((resolve) => (reopened = resolve));
      this.pgCuts++;
      this.note(`postgres cut #${this.pgCuts}`);
      try {
        await this.proxy.close();
        await this.hold(random, this.options.pgCutForMs);
        await this.proxy.reopen();
      } finally {
        this.pgGate = null;
        reopened();
      }
      this.note('postgres back');
    }
  }

  private async receiverFaultLoop(random: Random): Promise<void> {
    for (const at of this.plan(random, this.options.receiverFaultEveryMs)) {
      if (!(await this.until(at))) return;
      const receiver = pick(random, this.receivers);
      receiver.mode = pick(random, RECEIVER_FAULTS);
      this.receiverFaults++;
      this.note(`receiver of org ${receiver.org}: ${receiver.mode}`);
      await this.hold(random, this.options.receiverFaultForMs);
      receiver.mode = 'ok';
      this.note(`receiver of org ${receiver.org}: ok`);
    }
  }

  private async rotateSecrets(): Promise<void> {
    if (!(await this.until(this.options.durationMs / 2))) return;
    for (const org of this.orgs) await this.rotateSecret(org, this.receivers[org.index]!);
    this.note(`rotated ${this.rotations} of ${this.orgs.length} webhook secrets`);
  }

  private async rotateSecret(org: Org, receiver: OrgReceiver): Promise<void> {
    const { server } = this.target;
    await this.target.whenUp();
    await this.whenPostgresUp();
    try {
      const reply = await server.request('POST', '/api/webhook/rotate-secret', { key: org.key });
      if (reply.status === 200) {
        receiver.addSecret(reply.body.secret);
        this.rotations++;
        return;
      }
    } catch {
      // The answer was lost to a kill: whether the rotation happened shows in the config.
    }
    const config = await waitFor(`org ${org.index}'s webhook config after a failed rotation`, async () => {
      await this.target.whenUp();
      const reply = await server.request('GET', '/api/webhook/config', { key: org.key });
      return reply.status === 200 ? (reply.body as { secret: string }) : null;
    }, 60_000, 200);
    receiver.addSecret(config.secret);
  }
}
