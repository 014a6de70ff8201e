// What the CLI prints and how it exits: exit codes, the one-line error format, tables.
import Table from 'cli-table3';
import { InvalidArgumentError } from 'commander';
import { TriggersError } from '../errors.ts';
import type { InboxEvent } from '../types.ts';

export const EXIT = { ok: 0, api: 1, usage: 2, network: 3 } as const;

export const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  the API refused the request (its error code is printed), or some events/ids were rejected
  2  usage error: bad arguments or options, no API key
  3  network error: the server could not be reached or did not answer in time`;

/** A mistake in how the CLI was called; exits 2. */
export class UsageError extends Error {}

/** Prints the error as one line on stderr and returns the exit code it maps to. */
export function report(error: unknown): number {
  if (error instanceof UsageError) {
    process.stderr.write(`triggers: ${error.message}\n`);
    return EXIT.usage;
  }
  if (error instanceof TriggersError) {
    if (error.isNetworkError) {
      process.stderr.write(`triggers: ${error.code}: ${error.message}\n`);
      return EXIT.network;
    }
    const details = [
      `HTTP ${error.status}`,
      error.field && `field ${error.field}`,
      error.retryAfter !== undefined && `retry after ${error.retryAfter}s`,
      typeof error.body.id === 'string' && `original event ${error.body.id}`,
    ].filter(Boolean);
    process.stderr.write(`triggers: ${error.code}: ${error.message} (${details.join(', ')})\n`);
    return EXIT.api;
  }
  process.stderr.write(`triggers: ${(error as Error)?.message ?? String(error)}\n`);
  return EXIT.api;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Payloads in a table or a line are cut to this many characters. */
const PAYLOAD_PREVIEW = 60;

function preview(payload: unknown): string {
  const text = JSON.stringify(payload);
  return text.length > PAYLOAD_PREVIEW ? `${text.slice(0, PAYLOAD_PREVIEW - 1)}…` : text;
}

export function inboxTable(events: readonly InboxEvent[]): string {
  // No colours: the table is read in terminals and logs alike.
  const table = new Table({ head: ['id', 'type', 'status', 'attempts', 'created_at', 'payload'], style: { head: [], border: [] } });
  for (const event of events) table.push([event.id, event.type, event.status, event.attempts, event.created_at, preview(event.payload)]);
  return table.toString();
}

/** One event as a line: for tail and listen without --json. */
export function eventLine(at: string, id: string, type: string, payload: unknown): string {
  return `${at}  ${id}  ${type}  ${preview(payload)}`;
}

/** Parses a whole-number option; commander reports the error with the option's name (exit 2). */
export function integer(min: number, max: number) {
  return (text: string): number => {
    if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new InvalidArgumentError(`Expected a whole number from ${min} to ${max}.`);
    return Number(text);
  };
}
