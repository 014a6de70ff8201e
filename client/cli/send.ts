// `triggers send`: one event from the arguments, or NDJSON on stdin sent in batches.
import { createInterface } from 'node:readline';
import cliProgress from 'cli-progress';
import { MAX_BATCH, type BatchItemResult, type EventInput, type TriggersClient } from '../index.ts';
import { EXIT, printJson, UsageError } from './output.ts';

export interface SendOptions {
  dedupId?: string;
  json?: boolean;
}

function parsePayload(text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  let payload: unknown;
  try {
    payload = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`payload is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new UsageError('payload must be a JSON object');
  return payload as Record<string, unknown>;
}

export async function sendOne(client: TriggersClient, type: string, payloadJson: string | undefined, options: SendOptions): Promise<void> {
  const result = await client.send({ type, payload: parsePayload(payloadJson) }, options.dedupId === undefined ? {} : { dedupId: options.dedupId });
  if (options.json) printJson(result);
  else process.stdout.write(`${result.id}\n`);
}

/** Rejections are printed one per line up to this many; the summary counts them all. */
const SHOWN_REJECTIONS = 20;

class Summary {
  accepted = 0;
  duplicates = 0;
  readonly rejectedByCode: Record<string, number> = {};
  private shown = 0;

  get rejected(): number {
    return Object.values(this.rejectedByCode).reduce((sum, n) => sum + n, 0);
  }

  get processed(): number {
    return this.accepted + this.duplicates + this.rejected;
  }

  add(line: number, result: { code: string; error: string } | { status: 'accepted' }): void {
    if ('status' in result) {
      this.accepted++;
      return;
    }
    if (result.code === 'duplicate_event') {
      this.duplicates++;
      return;
    }
    this.rejectedByCode[result.code] = (this.rejectedByCode[result.code] ?? 0) + 1;
    if (this.shown++ < SHOWN_REJECTIONS) process.stderr.write(`line ${line}: ${result.code}: ${result.error}\n`);
  }

  print(json: boolean | undefined): void {
    if (json) {
      printJson({ accepted: this.accepted, duplicates: this.duplicates, rejected: this.rejected, rejected_by_code: this.rejectedByCode });
      return;
    }
    const codes = Object.entries(this.rejectedByCode).map(([code, n]) => `${code} ${n}`).join(', ');
    process.stdout.write(`accepted ${this.accepted}, duplicates ${this.duplicates}, rejected ${this.rejected}${codes ? ` (${codes})` : ''}\n`);
  }
}

/**
 * Reads `{type, payload, dedup_id?}` per line and sends them MAX_BATCH at a time, so memory stays
 * bounded however long the input is. A line that is not a JSON object is rejected here, by line number.
 */
export async function sendStream(client: TriggersClient, input: NodeJS.ReadableStream, options: SendOptions): Promise<number> {
  const summary = new Summary();
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar({ stream: process.stderr, format: 'sending [{bar}] {value}/{total} events' }, cliProgress.Presets.shades_classic)
    : null;
  bar?.start(0, 0);
  let read = 0;
  let pending: Array<{ line: number; event: EventInput }> = [];

  const flush = async () => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    const { results } = await client.sendBatch(batch.map((item) => item.event));
    results.forEach((result: BatchItemResult, i) => summary.add(batch[i]!.line, result));
    bar?.update(summary.processed);
  };

  try {
    let line = 0;
    for await (const text of createInterface({ input, crlfDelay: Infinity })) {
      line++;
      if (text.trim() === '') continue;
      bar?.setTotal(++read);
      let event: unknown;
      try {
        event = JSON.parse(text);
      } catch {
        summary.add(line, { code: 'invalid_json', error: 'the line is not valid JSON' });
        continue;
      }
      if (typeof event !== 'object' || event === null || Array.isArray(event)) {
        summary.add(line, { code: 'validation_error', error: 'the line is not a JSON object' });
        continue;
      }
      pending.push({ line, event: event as EventInput });
      if (pending.length === MAX_BATCH) await flush();
    }
    await flush();
  } finally {
    // Also after an error: what was accepted before it is worth knowing.
    bar?.stop();
    summary.print(options.json);
  }
  return summary.rejected > 0 ? EXIT.api : EXIT.ok;
}
