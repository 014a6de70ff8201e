// Where the log stands, per partition, in shared memory: sequence numbers issued, resolved
// (committed or abandoned) and drained to Postgres. Acceptors move the first two for their own
// partition; the drain moves the third. Read-your-writes waits compare them.
import { CONTROL, MAX_PARTITIONS, type SharedBuffers } from '../protocol.ts';

export class LogProgress {
  private readonly issued: BigInt64Array;
  private readonly resolved: BigInt64Array;
  private readonly drained: BigInt64Array;
  readonly control: Int32Array;
  /** This thread's appends not yet resolved (a thread writes only its own partition). */
  private readonly inFlight = new Set<number>();

  constructor(shared: SharedBuffers) {
    this.issued = new BigInt64Array(shared.issued);
    this.resolved = new BigInt64Array(shared.resolved);
    this.drained = new BigInt64Array(shared.drained);
    this.control = new Int32Array(shared.control);
  }

  /** Start state of a partition, set by the main thread before any acceptor runs. */
  init(partition: number, lastSeq: number, drainedSeq: number): void {
    const start = BigInt(Math.max(lastSeq, drainedSeq));
    Atomics.store(this.issued, partition, start);
    Atomics.store(this.resolved, partition, start);
    Atomics.store(this.drained, partition, BigInt(drainedSeq));
  }

  issue(partition: number): number {
    const seq = Number(Atomics.add(this.issued, partition, 1n)) + 1;
    this.inFlight.add(seq);
    return seq;
  }

  /** Marks `seq` resolved; `resolved` advances over every seq below the oldest still in flight. */
  resolve(partition: number, seq: number, committed: boolean): void {
    this.inFlight.delete(seq);
    let low = Number(Atomics.load(this.resolved, partition)) + 1;
    const issued = Number(Atomics.load(this.issued, partition));
    while (low <= issued && !this.inFlight.has(low)) low++;
    Atomics.store(this.resolved, partition, BigInt(low - 1));
    if (committed) {
      Atomics.add(this.control, CONTROL.BACKLOG, 1);
      Atomics.add(this.control, CONTROL.APPENDED, 1);
      Atomics.notify(this.control, CONTROL.APPENDED);
    }
  }

  issuedUpTo(partition: number): number {
    return Number(Atomics.load(this.issued, partition));
  }

  resolvedUpTo(partition: number): number {
    return Number(Atomics.load(this.resolved, partition));
  }

  drainedUpTo(partition: number): number {
    return Number(Atomics.load(this.drained, partition));
  }

  markDrained(partition: number, seq: number, count: number): void {
    Atomics.store(this.drained, partition, BigInt(seq));
    Atomics.sub(this.control, CONTROL.BACKLOG, count);
    Atomics.add(this.control, CONTROL.DRAINED, 1);
    Atomics.notify(this.control, CONTROL.DRAINED);
  }

  setBacklog(count: number): void {
    Atomics.store(this.control, CONTROL.BACKLOG, count);
  }

  backlog(): number {
    return Atomics.load(this.control, CONTROL.BACKLOG);
  }

  /** Sequence numbers issued so far, per partition: what a read-your-writes wait must see drained. */
  snapshotIssued(): number[] {
    const targets: number[] = [];
    for (let p = 0; p < MAX_PARTITIONS; p++) targets.push(Number(Atomics.load(this.issued, p)));
    return targets;
  }

  /** True once every partition has drained up to `targets`. */
  drainedPast(targets: readonly number[]): boolean {
    return targets.every((target, p) => target <= Number(Atomics.load(this.drained, p)));
  }

  /** Waits (without blocking the thread) for the next watermark advance, or `timeoutMs`. */
  nextDrain(timeoutMs: number): Promise<void> {
    return this.nextChange(CONTROL.DRAINED, Atomics.load(this.control, CONTROL.DRAINED), timeoutMs);
  }

  /** Waits for the next append commit (any thread), or `timeoutMs`. */
  nextAppend(timeoutMs: number): Promise<void> {
    return this.nextChange(CONTROL.APPENDED, Atomics.load(this.control, CONTROL.APPENDED), timeoutMs);
  }

  /**
   * Registers a read-your-writes wait (any thread) until the returned release is called: the
   * drain ships what is in the log at once instead of lingering for a bigger batch.
   */
  waitForDrain(): () => void {
    Atomics.add(this.control, CONTROL.DRAIN_WAITERS, 1);
    Atomics.notify(this.control, CONTROL.DRAIN_WAITERS);
    return () => void Atomics.sub(this.control, CONTROL.DRAIN_WAITERS, 1);
  }

  /** Waits up to `timeoutMs`, cut short as soon as a read-your-writes wait is (or gets) registered. */
  linger(timeoutMs: number): Promise<void> {
    return this.nextChange(CONTROL.DRAIN_WAITERS, 0, timeoutMs);
  }

  /** Resolves when the slot no longer holds `seen` (at once if it already does not), or after `timeoutMs`. */
  private async nextChange(slot: number, seen: number, timeoutMs: number): Promise<void> {
    const { async, value } = Atomics.waitAsync(this.control, slot, seen, timeoutMs);
    if (async) await value;
  }
}
