// One sample per second of the server under soak: memory from /proc/<pid>/status (the kernel's
// view, whatever the allocator), heap and event-loop delay of its main thread and the log figures
// from GET /metrics, the LMDB files' allocated size on disk, and the load side's counters.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { benchClock, readMetrics } from '../../native-bench/lib.ts';

export interface Sample {
  /** Seconds since the load started. */
  t: number;
  /** VmRSS, and its anonymous (heaps, buffers) and file-backed (the mmapped LMDB log, code) parts. */
  rssMb: number;
  rssAnonMb: number;
  rssFileMb: number;
  /** V8 heap of the server's main thread: used, and committed; memory outside it held by JS objects (Buffers). */
  heapUsedMb: number;
  heapTotalMb: number;
  externalMb: number;
  /**
   * Event-loop delay of the server's main thread over the last second, beyond the monitor's 10 ms
   * interval (monitorEventLoopDelay: ~100 readings a second, so the p99 is about the max).
   */
  loopMeanMs: number;
  loopP99Ms: number;
  /** The log's files: blocks allocated on disk, and their apparent size. */
  logDiskMb: number;
  logFileMb: number;
  backlog: number;
  drainLagMs: number;
  /** Events the server accepted in the last second (triggers_events_accepted_total). */
  acceptedPerS: number;
  /** Webhook requests the receivers answered in the last second. */
  deliveredPerS: number;
  /** Accepted events of the webhook orgs not yet received by their endpoint. */
  webhookBacklog: number;
  /** Accepted events of the inbox orgs not yet acknowledged: the fewest in the last second. */
  inboxPending: number;
  /** Slowest inbox read + ack cycle in the last second (0 when none finished). */
  inboxMs: number;
  /** How long GET /metrics took: the server's responsiveness as a client sees it. */
  scrapeMs: number;
  /** Cumulative: unexpected answers and socket errors, designed 429s. */
  errors: number;
  designed429: number;
}

/** What the load side has counted so far (cumulative, except the inbox cycle time). */
export interface LoadCounters {
  errors: number;
  designed429: number;
  webhookAccepted: number;
  delivered: number;
  /** Fewest accepted inbox-org events not yet acknowledged, since the previous call. */
  inboxUnacked: number;
  /** Slowest inbox cycle since the previous call. */
  inboxMaxMs: number;
}

const MB = 1024 * 1024;
/** prom-client's default eventLoopMonitoringPrecision: each reading is this interval plus the delay. */
const LOOP_MONITOR_INTERVAL_MS = 10;

/** VmRSS, RssAnon and RssFile of a process in MB (NaN when /proc does not have them). */
export function processMemory(pid: number): { rss: number; anon: number; file: number } {
  const kb = (text: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN) / 1024;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return { rss: kb(status, 'VmRSS'), anon: kb(status, 'RssAnon'), file: kb(status, 'RssFile') };
  } catch {
    return { rss: Number.NaN, anon: Number.NaN, file: Number.NaN };
  }
}

/** Allocated and apparent bytes of every file under `dir`. */
export function diskUsage(dir: string): { allocated: number; apparent: number } {
  let allocated = 0;
  let apparent = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const stat = statSync(path.join(entry.parentPath, entry.name));
    allocated += stat.blocks * 512;
    apparent += stat.size;
  }
  return { allocated, apparent };
}

export class Sampler {
  private previous: { at: number; accepted: number; delivered: number } | null = null;

  constructor(
    private readonly pid: number,
    private readonly port: number,
    /** Where the server keeps its LMDB log (DATA_DIR/log). */
    private readonly logDir: string,
    private readonly counters: () => LoadCounters,
  ) {}

  async take(t: number): Promise<Sample> {
    const scrapeStart = benchClock();
    const metrics = await readMetrics(this.port);
    const scrapeMs = benchClock() - scrapeStart;
    const at = benchClock();
    const load = this.counters();
    const memory = processMemory(this.pid);
    const disk = diskUsage(this.logDir);
    const metric = (name: string) => metrics.get(name) ?? Number.NaN;
    const accepted = metric('triggers_events_accepted_total');
    const previous = this.previous ?? { at: at - 1000, accepted, delivered: load.delivered };
    const perSecond = (now: number, before: number) => ((now - before) * 1000) / (at - previous.at);
    this.previous = { at, accepted, delivered: load.delivered };
    return {
      t,
      rssMb: memory.rss,
      rssAnonMb: memory.anon,
      rssFileMb: memory.file,
      heapUsedMb: metric('nodejs_heap_size_used_bytes') / MB,
      heapTotalMb: metric('nodejs_heap_size_total_bytes') / MB,
      externalMb: metric('nodejs_external_memory_bytes') / MB,
      loopMeanMs: metric('nodejs_eventloop_lag_mean_seconds') * 1000 - LOOP_MONITOR_INTERVAL_MS,
      loopP99Ms: metric('nodejs_eventloop_lag_p99_seconds') * 1000 - LOOP_MONITOR_INTERVAL_MS,
      logDiskMb: disk.allocated / MB,
      logFileMb: disk.apparent / MB,
      backlog: metric('triggers_log_backlog'),
      drainLagMs: metric('triggers_drain_lag_seconds') * 1000,
      acceptedPerS: perSecond(accepted, previous.accepted),
      deliveredPerS: perSecond(load.delivered, previous.delivered),
      webhookBacklog: load.webhookAccepted - load.delivered,
      inboxPending: load.inboxUnacked,
      inboxMs: load.inboxMaxMs,
      scrapeMs,
      errors: load.errors,
      designed429: load.designed429,
    };
  }
}
