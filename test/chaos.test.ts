// Chaos, the short version of `npm run chaos` (scripts/chaos/): 16 s of mixed load (single events,
// batches, re-sent dedup_ids, three orgs) on the real server while it is kill -9'd and restarted
// twice, cut off from Postgres once, and its webhook receivers answer 500 or hang. Then: every 202
// is in Postgres exactly once, nothing else is (an answer lost to a kill may go either way), every
// re-sent dedup_id got 409 with the original id, every delivered event reached its own org's
// receiver, validly signed, and nothing reached another org's.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runChaos } from '../scripts/chaos/run.ts';
import { summaryTable } from '../scripts/chaos/summary.ts';

const chaos = suite('chaos');

chaos('2 × kill -9, a Postgres outage and failing receivers under load: nothing lost or duplicated, dedup durable, deliveries signed and per org', async () => {
  const report = await runChaos({
    durationMs: 16_000,
    killEveryMs: 5_000,
    pgCutEveryMs: 8_000,
    pgCutForMs: 3_000,
    receiverFaultEveryMs: 4_000,
    receiverFaultForMs: 2_000,
    orgs: 3,
    rate: 80,
    concurrency: 16,
    seed: 8,
    // The claim of a delivery lost to a kill expires after ~60 s: longer than this test may take.
    expediteLeases: true,
    settleTimeoutMs: 30_000,
  });
  const summary = `\n${summaryTable(report)}\n${report.timeline.join('\n')}`;
  assert.equal(report.violations, [], summary);
  // The faults and the load really happened.
  assert.ok(report.kills >= 2 && report.restarts === report.kills, `kills ${report.kills}, restarts ${report.restarts}${summary}`);
  assert.ok(report.pgCuts >= 1, `no Postgres outage${summary}`);
  assert.ok(report.receiverFaults >= 1, `no receiver fault${summary}`);
  assert.ok(report.acked > 0 && report.duplicatesAnswered > 0, `acked ${report.acked}, duplicates answered ${report.duplicatesAnswered}${summary}`);
  assert.ok(report.delivered > 0, `nothing delivered${summary}`);
});

chaos.run();
