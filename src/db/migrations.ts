// Versioned schema migrations, applied at start. Several instances may start at once:
// an advisory lock makes one apply them while the others wait and then find nothing to do.
import type { Sql } from './postgres.ts';

const MIGRATION_LOCK = 0x7472_6967; // 'trig'

const MIGRATIONS: ReadonlyArray<{ version: number; name: string; sql: string }> = [
  {
    version: 1,
    name: 'organizations',
    sql: `
      create table organizations (
        id uuid primary key,
        -- A small integer per org: its slot in the shared rate-limit table and in dedup keys.
        num integer generated always as identity unique,
        name text not null,
        tier text not null check (tier in ('free', 'pro', 'business', 'enterprise')),
        api_key_digest text not null unique,
        key_rotated_at timestamptz,
        webhook_url text,
        created_at timestamptz not null default now()
      );
    `,
  },
];

export async function migrate(sql: Sql): Promise<number[]> {
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    await tx`create table if not exists schema_migrations (
      version integer primary key, name text not null, applied_at timestamptz not null default now())`;
    const done = new Set((await tx<{ version: number }[]>`select version from schema_migrations`).map((row) => row.version));
    const applied: number[] = [];
    for (const migration of MIGRATIONS) {
      if (done.has(migration.version)) continue;
      await tx.unsafe(migration.sql);
      await tx`insert into schema_migrations (version, name) values (${migration.version}, ${migration.name})`;
      applied.push(migration.version);
    }
    return applied;
  });
}
