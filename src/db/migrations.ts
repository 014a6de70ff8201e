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
  {
    version: 2,
    name: 'events',
    sql: `
      create table events (
        id uuid primary key,  -- UUIDv7: time ordered, the inbox's keyset
        organization_id uuid not null references organizations (id),
        type text not null,
        payload jsonb not null,
        dedup_id text,
        status text not null default 'pending'
          check (status in ('pending', 'delivered', 'failed', 'acknowledged')),
        received_at timestamptz not null,
        delivered_at timestamptz,
        acknowledged_at timestamptz,
        attempt_count integer not null default 0
      );
      -- Inbox: status=all, a single status, and the default (pending + failed) are each an
      -- index range scan in id order; the partial index holds only what is still undelivered.
      create index events_org_id on events (organization_id, id);
      create index events_org_status_id on events (organization_id, status, id);
      create index events_org_undelivered_id on events (organization_id, id) where status in ('pending', 'failed');
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
