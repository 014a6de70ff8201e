// The only importer of postgres (porsager).
import postgres from 'postgres';

export type Sql = postgres.Sql;
export type ConnectOptions = postgres.Options<{}>;

export function connect(url: string, options: ConnectOptions = {}): Sql {
  return postgres(url, { onnotice: () => {}, ...options });
}
