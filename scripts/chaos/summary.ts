// The chaos report as a table: what happened, what was counted, and the invariants (must be 0).
import Table from 'cli-table3';
import type { ChaosReport } from './run.ts';

export function summaryTable(report: ChaosReport): string {
  const table = new Table({ head: ['', 'count', 'invariant'], colAligns: ['left', 'right', 'left'], style: { head: [], border: [] } });
  const answers = Object.entries(report.answers).map(([answer, count]) => `${answer}: ${count}`).join(', ');
  const odd = Object.values(report.oddAnswers).reduce((sum, count) => sum + count, 0);
  const mustBeZero = (count: number) => (count === 0 ? 'ok (must be 0)' : 'FAILED (must be 0)');
  table.push(
    ['requests', report.requests, answers],
    ['slowest answer (ms)', report.slowestMs, ''],
    ['events sent', report.events, ''],
    ['kills (kill -9)', report.kills, ''],
    ['restarts', report.restarts, report.restarts === report.kills ? '' : 'FAILED (one per kill)'],
    ['postgres cuts', report.pgCuts, ''],
    ['receiver faults (500 / hang)', report.receiverFaults, ''],
    ['webhook secret rotations', report.rotations, ''],
    ['acked (202)', report.acked, ''],
    ['rejected (429, 503, refused)', report.rejected, ''],
    ['other answers (e.g. 500)', odd, mustBeZero(odd)],
    ['unknown (answer lost to a kill)', report.unknown, `${report.unknownStored} stored, at most once`],
    ['lost', report.lost, mustBeZero(report.lost)],
    ['duplicated', report.duplicated, mustBeZero(report.duplicated)],
    ['duplicates answered 409', report.duplicatesAnswered, 'with the original id'],
    ['deliveries (webhook requests)', report.deliveries, ''],
    ['events delivered / failed', `${report.delivered} / ${report.failed}`, 'none left pending'],
    ['lost delivery claims redelivered', report.expedited, ''],
    ['invalid signatures', report.invalidSignatures, mustBeZero(report.invalidSignatures)],
    ['cross-org deliveries', report.crossOrg, mustBeZero(report.crossOrg)],
    ['violations', report.violations.length, mustBeZero(report.violations.length)],
    ['load / settle (s)', `${report.loadSeconds.toFixed(1)} / ${report.settleSeconds.toFixed(1)}`, `seed ${report.seed}`],
  );
  return table.toString();
}
