// The only importer of postgres (porsager).
import postgres from 'postgres';

export type Sql = postgres.Sql;
export type ConnectOptions = postgres.Options<{}>;

export function connect(url: string, options: ConnectOptions = {}): Sql {
  return postgres(url, { onnotice: () => {}, ...options });
}

/** Errors that say the database cannot be reached right now (not that the query is wrong). */
const UNREACHABLE_CODES = new Set([
  // postgres.js
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
  // node:net
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  // SQLSTATE: too many connections, admin/crash shutdown, cannot connect now
  '53300', '57P01', '57P02', '57P03',
]);

export function isUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  // SQLSTATE class 08: connection exception.
  return typeof code === 'string' && (UNREACHABLE_CODES.has(code) || code.startsWith('08'));
}
