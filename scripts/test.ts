// `npm test`: runs the uvu suites under tsx and ends with the plain line `N passed, N failed`.
// Tests use DATABASE_URL when given; otherwise this script starts an embedded Postgres for the
// run (each test file still creates and drops its own database in it).
// Usage: npm test [-- <file pattern>]   e.g. npm test -- rate-limit
import { spawn } from 'node:child_process';
import { startTemporaryPostgres } from '../src/db/embedded.ts';
import { createLogger } from '../src/logger.ts';

const filter = process.argv[2];
const pattern = filter ? `${filter}.*\\.test\\.ts$` : '\\.test\\.ts$';

let stopDatabase = async () => {};
let databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  const embedded = await startTemporaryPostgres('triggers-test-pg-', createLogger('warn'));
  databaseUrl = embedded.url;
  stopDatabase = () => embedded.stop();
}

const child = spawn(process.execPath, ['--import', 'tsx', 'node_modules/uvu/bin.js', 'test', pattern], {
  env: { ...process.env, DATABASE_URL: databaseUrl },
  stdio: ['ignore', 'pipe', 'inherit'],
});
let output = '';
child.stdout.on('data', (chunk: Buffer) => {
  process.stdout.write(chunk);
  output += chunk.toString();
});
const code: number = await new Promise((resolve) => child.on('close', (exitCode) => resolve(exitCode ?? 1)));
await stopDatabase();

// uvu prints "Total: N / Passed: N / Skipped: N"; a crash before its summary counts as one failure.
const plain = output.replace(/\u001b\[[0-9;]*m/g, '');
const count = (label: string) => Number(new RegExp(`${label}:\\s+(\\d+)`).exec(plain)?.[1] ?? NaN);
const total = count('Total');
const passed = count('Passed');
const skipped = count('Skipped');
const failed = Number.isNaN(total) ? 1 : total - passed - skipped;
console.log(`${Number.isNaN(passed) ? 0 : passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(code !== 0 || failed > 0 ? 1 : 0);
