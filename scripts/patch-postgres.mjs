// Runs after `npm ci` / `npm install` (package.json "postinstall"). postgres 3.4.9 (porsager) writes
// small messages from a setImmediate; when the connection closed in between, `socket` is null and
// the TypeError escapes every try/catch and ends the thread (upstream issues #1066, #1154, #1208;
// fix proposed in PRs #1168, #1176, #1209, not released). In an acceptor thread that takes the whole
// process down (a uWS loop still holding sockets aborts on thread exit). The guard below is the
// upstream one: by then closed() has already rejected the query with CONNECTION_CLOSED, so the
// buffered bytes are dropped and the write state is reset. Idempotent; fails loudly if the source
// changed (a new postgres version: check whether it still needs this).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const UNGUARDED = '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)';
const GUARDED = '  function nextWrite(fn) {\n    if (socket === null) { chunk = nextWriteTimer = null; return false } // patched: scripts/patch-postgres.mjs\n    const x = socket.write(chunk, fn)';

const root = fileURLToPath(new URL('../node_modules/postgres/', import.meta.url));
for (const file of ['src/connection.js', 'cjs/src/connection.js']) {
  const target = path.join(root, file);
  const source = readFileSync(target, 'utf8');
  if (source.includes(GUARDED)) continue;
  if (!source.includes(UNGUARDED)) throw new Error(`scripts/patch-postgres.mjs: ${target} has changed; check whether postgres still needs the nextWrite guard`);
  writeFileSync(target, source.replace(UNGUARDED, GUARDED));
  console.log(`patched ${path.relative(process.cwd(), target)}: nextWrite guards a closed socket`);
}
