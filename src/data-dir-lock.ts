// One server per DATA_DIR: two processes appending to one LMDB log would number their
// partitions alike and overwrite each other's entries. A pid file, as Postgres does it: a
// stale one (its process is gone, or a zombie) is taken over.
import { closeSync, openSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';

function isRunning(pid: number): boolean {
  try {
    // Field 3 of /proc/<pid>/stat is the state; Z is a zombie waiting to be reaped.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    try {
      process.kill(pid, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
}

/** Claims `dataDir` for this process, or throws naming the process that holds it. Returns the release. */
export function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, 'server.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      // force: a DATA_DIR removed under the running server (a test's temp dir) must not fail the shutdown.
      return () => rmSync(file, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number.parseInt(readFileSync(file, 'utf8'), 10);
    if (Number.isInteger(holder) && holder !== process.pid && isRunning(holder)) {
      throw new Error(`DATA_DIR ${dataDir} is in use by process ${holder} (${file}); each server needs its own DATA_DIR`);
    }
    unlinkSync(file);
  }
  throw new Error(`cannot claim ${file}`);
}
