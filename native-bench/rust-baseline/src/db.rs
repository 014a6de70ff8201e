//! Postgres: connections, the baseline's own tables, and the queries of the request path.
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::auth::Org;

/// Table names start with `baseline_` so they can never collide with the real server's.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS baseline_organizations (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  api_key_hash text NOT NULL UNIQUE,
  tier text NOT NULL,
  rate_limit_per_minute integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS baseline_events (
  id uuid PRIMARY KEY,
  organization_id uuid NOT NULL REFERENCES baseline_organizations (id),
  type text NOT NULL,
  payload jsonb NOT NULL,
  dedup_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (organization_id, dedup_id)
);";

pub const INSERT_EVENT: &str =
    "INSERT INTO baseline_events (id, organization_id, type, payload, dedup_id) \
   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (organization_id, dedup_id) DO NOTHING";

pub type DbError = tokio_postgres::Error;

/// One connection; its driver task runs on the runtime until the client is dropped.
pub async fn connect(database_url: &str) -> Result<Client, String> {
    let mut config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| format!("DATABASE_URL is not a valid postgres:// URL: {e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| format!("cannot connect to Postgres: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!(
                "{}",
                serde_json::json!({"msg": "postgres_connection_closed", "error": e.to_string()})
            );
        }
    });
    Ok(client)
}

pub async fn create_schema(client: &Client) -> Result<(), String> {
    client
        .batch_execute(SCHEMA)
        .await
        .map_err(|e| format!("cannot create the baseline tables: {e}"))
}

/// A few connections shared round-robin by the request handlers; tokio-postgres pipelines
/// concurrent queries on one connection, so no checkout is needed.
pub struct Pool {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl Pool {
    pub async fn open(database_url: &str, size: usize) -> Result<Pool, String> {
        let mut clients = Vec::with_capacity(size);
        for _ in 0..size {
            clients.push(connect(database_url).await?);
        }
        Ok(Pool {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    pub fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    pub async fn find_org_by_key_hash(&self, key_hash: &str) -> Result<Option<Org>, DbError> {
        let row = self
            .client()
            .query_opt(
                "SELECT id, rate_limit_per_minute FROM baseline_organizations WHERE api_key_hash = $1",
                &[&key_hash],
            )
            .await?;
        Ok(row.map(|row| Org {
            id: row.get(0),
            rate_limit_per_minute: row.get::<_, i32>(1) as u32,
        }))
    }

    /// Returns `created_at` as ISO 8601 UTC with milliseconds, as the real server prints it.
    pub async fn insert_org(
        &self,
        id: Uuid,
        name: &str,
        key_hash: &str,
        tier: &str,
        rate_limit_per_minute: u32,
    ) -> Result<String, DbError> {
        let row = self
            .client()
            .query_one(
                "INSERT INTO baseline_organizations (id, name, api_key_hash, tier, rate_limit_per_minute) \
                 VALUES ($1, $2, $3, $4, $5) \
                 RETURNING to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                &[&id, &name, &key_hash, &tier, &(rate_limit_per_minute as i32)],
            )
            .await?;
        Ok(row.get(0))
    }
}
