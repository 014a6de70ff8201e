//! API keys: the in-memory key → organization cache in front of Postgres, and key minting.
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::{DbError, Pool};

#[derive(Clone, Copy)]
pub struct Org {
    pub id: Uuid,
    pub rate_limit_per_minute: u32,
}

/// Keys are cached forever once seen: the reference has no rotation, so nothing invalidates them.
#[derive(Default)]
pub struct KeyCache {
    orgs: DashMap<String, Org>,
}

impl KeyCache {
    /// `Ok(None)` for an unknown key. Unknown keys are not cached, so each costs a query.
    pub async fn lookup(&self, api_key: &str, db: &Pool) -> Result<Option<Org>, DbError> {
        if let Some(org) = self.orgs.get(api_key) {
            return Ok(Some(*org));
        }
        let found = db.find_org_by_key_hash(&key_digest(api_key)).await?;
        if let Some(org) = found {
            self.orgs.insert(api_key.to_owned(), org);
        }
        Ok(found)
    }
}

/// Hex SHA-256, the digest the real server stores for its keys.
pub fn key_digest(api_key: &str) -> String {
    format!("{:x}", Sha256::digest(api_key.as_bytes()))
}

/// `zap_live_` + 256 random bits, base64url without padding (the real server's format).
pub fn new_api_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the OS random source is available");
    format!(
        "zap_live_{}",
        base64::encode_config(bytes, base64::URL_SAFE_NO_PAD)
    )
}

pub fn tier_limit(tier: &str) -> Option<u32> {
    match tier {
        "free" => Some(100),
        "pro" => Some(1_000),
        "business" => Some(10_000),
        "enterprise" => Some(100_000),
        _ => None,
    }
}
