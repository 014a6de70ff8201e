// The bench's handle on the webhook receiver (native-bench/delivery-receiver.ts), which runs in a
// worker thread: start it (one port per org), read its shared counters, collect what it received,
// and point each org's webhook endpoint at its port. Used by bench:delivery, bench:sweep and the soak.
import type { EventLoopUtilization } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { COUNT_SLOTS, COUNTS, type Collected, type ReceiverCommand, type ReceiverInit, type ReceiverMessage } from './delivery-receiver.ts';
import { sleep } from './lib.ts';

export class ReceiverThread {
  private readonly counts: Int32Array;
  private constructor(
    readonly worker: Worker,
    readonly ports: number[],
    counts: SharedArrayBuffer,
    private readonly failed: Promise<never>,
  ) {
    this.counts = new Int32Array(counts);
  }

  static async start(orgs: number): Promise<ReceiverThread> {
    const counts = new SharedArrayBuffer(COUNT_SLOTS * 4);
    const worker = new Worker(new URL('../src/thread-bootstrap.mjs', import.meta.url), {
      argv: [new URL('./delivery-receiver.ts', import.meta.url).href],
      workerData: { orgs, counts } satisfies ReceiverInit,
    });
    const failed = new Promise<never>((_, reject) => {
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the receiver thread exited (${code})`)));
    });
    failed.catch(() => {});
    const ready = await Promise.race([failed, ReceiverThread.next(worker, 'ready')]);
    return new ReceiverThread(worker, (ready as Extract<ReceiverMessage, { kind: 'ready' }>).ports, counts, failed);
  }

  private static next(worker: Worker, kind: ReceiverMessage['kind']): Promise<ReceiverMessage> {
    return new Promise((resolve) => {
      const listen = (message: ReceiverMessage) => {
        if (message.kind !== kind) return;
        worker.off('message', listen);
        resolve(message);
      };
      worker.on('message', listen);
    });
  }

  private ask(command: ReceiverCommand, answer: ReceiverMessage['kind']): Promise<ReceiverMessage> {
    const reply = ReceiverThread.next(this.worker, answer);
    this.worker.postMessage(command);
    return Promise.race([this.failed, reply]);
  }

  url(org: number): string {
    return `http://127.0.0.1:${this.ports[org]}/hook`;
  }

  /** Distinct webhook-ids received since the last reset. */
  get unique(): number {
    return Atomics.load(this.counts, COUNTS.UNIQUE);
  }

  get requests(): number {
    return Atomics.load(this.counts, COUNTS.REQUESTS);
  }

  /** Requests whose signature did not verify with their org's secret. */
  get badSignatures(): number {
    return Atomics.load(this.counts, COUNTS.BAD_SIGNATURES);
  }

  secrets(secrets: string[]): void {
    this.worker.postMessage({ kind: 'secrets', secrets } satisfies ReceiverCommand);
  }

  async reset(): Promise<void> {
    await this.ask({ kind: 'reset' }, 'reset');
  }

  async collect(): Promise<Collected> {
    return (await this.ask({ kind: 'collect' }, 'collected')) as Collected;
  }

  /** The receiver loop's busy share (0..1) since `since`. */
  utilization(since?: EventLoopUtilization): EventLoopUtilization {
    return this.worker.performance.eventLoopUtilization(since);
  }

  async stop(): Promise<void> {
    try {
      await Promise.race([this.ask({ kind: 'close' }, 'closed'), sleep(5_000)]);
    } catch {}
    await this.worker.terminate();
  }
}

/** POST /api/webhook/config for each key, org i → receiver port i; returns the secrets. */
export async function configureEndpoints(port: number, keys: string[], receiver: ReceiverThread): Promise<string[]> {
  const secrets: string[] = [];
  for (const [i, key] of keys.entries()) {
    const response = await fetch(`http://127.0.0.1:${port}/api/webhook/config`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key },
      body: JSON.stringify({ webhook_url: receiver.url(i) }),
    });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`POST /api/webhook/config: ${response.status} ${text}`);
    secrets.push((JSON.parse(text) as { secret: string }).secret);
  }
  receiver.secrets(secrets);
  return secrets;
}
