// The server under chaos: the real server (TestServer) on one port and one DATA_DIR, which the
// faults kill -9 and restart. The load waits at `whenUp()` while it is down; every kill starts a
// new generation, so a request that failed can tell whether a kill happened while it was in flight.
import type { TestServer } from '../../test/helpers/server.ts';

export class ChaosTarget {
  /** Bumped at each kill, before the signal is sent. */
  generation = 0;
  kills = 0;
  restarts = 0;
  /** Date.now() when the running process said it was listening. */
  bootedAt = Date.now();
  private downGate: Promise<void> | null = null;
  private bootGate: Promise<void> | null = null;
  private reopen: () => void = () => {};

  constructor(readonly server: TestServer) {}

  get url(): string {
    return this.server.url;
  }

  get down(): boolean {
    return this.downGate !== null;
  }

  /** Resolves once the server is listening (at once when it is). */
  async whenUp(): Promise<void> {
    while (this.downGate) await this.downGate;
  }

  /** Resolves once no restart is in progress (a Postgres cut must not start during one: the start runs migrations). */
  async whenNotBooting(): Promise<void> {
    while (this.bootGate) await this.bootGate;
  }

  async kill(): Promise<void> {
    this.downGate ??= new Promise((resolve) => (this.reopen = resolve));
    this.generation++;
    this.kills++;
    await this.server.crash();
  }

  /** Starts the process again on the same DATA_DIR, database and port. */
  async restart(): Promise<void> {
    let booted = () => {};
    this.bootGate = new Promise((resolve) => (booted = resolve));
    try {
      await this.server.boot();
    } finally {
      this.bootGate = null;
      booted();
    }
    this.restarts++;
    this.bootedAt = Date.now();
    this.downGate = null;
    this.reopen();
  }
}
