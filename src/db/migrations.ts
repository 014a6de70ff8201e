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
  {
    version: 3,
    name: 'webhook delivery',
    sql: `
      alter table organizations drop column webhook_url;
      create table webhook_endpoints (
        organization_id uuid primary key references organizations (id),
        url text not null,
        -- Secrets are AES-256-GCM encrypted with WEBHOOK_SECRET_KEY: a database dump alone does not leak them.
        secret_enc text not null,
        previous_secret_enc text,
        previous_secret_expires_at timestamptz,
        updated_at timestamptz not null default now(),
        -- Set when the endpoint answered 410 Gone: no more deliveries until it is configured again.
        disabled_at timestamptz
      );
      create table delivery_attempts (
        event_id uuid not null references events (id) on delete cascade,
        attempt integer not null,
        attempted_at timestamptz not null,
        status_code integer,
        duration_ms integer not null,
        error text,
        primary key (event_id, attempt)
      );
      -- When the next delivery attempt is due (null: none scheduled); a claimed event's time is
      -- pushed out by a lease, so a crashed instance's claims come due again.
      alter table events add column next_attempt_at timestamptz;
      -- Failed attempts in the current round of the retry schedule (redeliver starts a new round).
      alter table events add column schedule_step integer not null default 0;
      create index events_due on events (next_attempt_at) where status = 'pending' and next_attempt_at is not null;
    `,
  },
];

export const MIGRATION_VERSIONS = MIGRATIONS.map((migration) => migration.version);

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
