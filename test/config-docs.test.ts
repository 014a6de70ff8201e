// The configuration reference (docs/configuration.md) is generated from CONFIG_VARIABLES: the
// committed file must equal the rendering (so adding a variable without regenerating fails here),
// every documented default must be the default loadConfig really uses, and `--check` must tell a
// stale file from a fresh one by its exit code.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CONFIG_DOC_PATH, acceptedValues, renderConfigDoc } from '../scripts/config-docs.ts';
import { CONFIG_VARIABLES, loadConfig } from '../src/config.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const configDocs = suite('config docs');

function runScript(args: string[]): { status: number | null; stderr: string } {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/config-docs.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { status: run.status, stderr: run.stderr };
}

configDocs('docs/configuration.md is up to date (regenerate: npx tsx scripts/config-docs.ts)', () => {
  assert.fixture(readFileSync(CONFIG_DOC_PATH, 'utf8'), renderConfigDoc());
});

configDocs('the rendering has one row per variable, in CONFIG_VARIABLES order', () => {
  const names = [...renderConfigDoc().matchAll(/^\| `([A-Z_]+)` \|/gm)].map((match) => match[1]);
  assert.equal(names, CONFIG_VARIABLES.map(([name]) => name));
});

configDocs('every documented default is what loadConfig uses when the variable is unset', () => {
  const unset = loadConfig({});
  for (const [name, fallback] of CONFIG_VARIABLES) {
    // "(embedded)", "(unset)", "(generated)": no value stands for these.
    if (fallback.startsWith('(')) continue;
    assert.equal(loadConfig({ [name]: fallback }), unset, `${name}=${fallback} is not the default`);
  }
});

configDocs('the accepts column comes from the validator', () => {
  assert.is(acceptedValues('PORT'), 'whole number 0–65,535');
  assert.is(acceptedValues('ACCEPTOR_THREADS'), 'whole number 1–64');
  assert.is(acceptedValues('DURABILITY'), '`fsync` or `commit`');
  assert.is(acceptedValues('DEDUP_WINDOW'), 'duration');
  assert.is(acceptedValues('PERSIST_LINGER'), 'duration, or 0');
  assert.is(acceptedValues('WEBHOOK_RETRY_SCHEDULE'), 'comma-separated durations');
  assert.is(acceptedValues('HOST'), 'any text');
  assert.match(acceptedValues('WEBHOOK_SECRET_KEY'), /32 bytes/);
});

configDocs('--check exits 1 on a stale file and 0 once the script has rewritten it', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'triggers-config-docs-'));
  try {
    const file = path.join(dir, 'configuration.md');
    writeFileSync(file, renderConfigDoc().replace(/^\| `DEDUP_WINDOW`.*\n/m, ''));
    const stale = runScript(['--check', file]);
    assert.is(stale.status, 1, `stale file: exit ${stale.status}`);
    assert.match(stale.stderr, /stale/);
    assert.is(runScript([file]).status, 0, 'rewrite failed');
    assert.is(readFileSync(file, 'utf8'), renderConfigDoc());
    assert.is(runScript(['--check', file]).status, 0, 'fresh file refused');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

configDocs.run();
