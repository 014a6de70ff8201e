//! Per-organization fixed-window rate limit (count, window start), as the reference does it.
use std::time::{Duration, Instant};

use dashmap::DashMap;
use uuid::Uuid;

const WINDOW: Duration = Duration::from_secs(60);

struct Window {
    start: Instant,
    count: u32,
}

#[derive(Default)]
pub struct RateLimiter {
    windows: DashMap<Uuid, Window>,
}

impl RateLimiter {
    /// Takes one request from the org's current window; `Err(seconds until it resets)` when full.
    pub fn take(&self, org: Uuid, limit_per_minute: u32) -> Result<(), u64> {
        let now = Instant::now();
        let mut window = self.windows.entry(org).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(window.start) >= WINDOW {
            window.start = now;
            window.count = 0;
        }
        if window.count >= limit_per_minute {
            let left = WINDOW.saturating_sub(now.duration_since(window.start));
            return Err(left.as_secs().max(1));
        }
        window.count += 1;
        Ok(())
    }
}
