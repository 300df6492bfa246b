//! Cost of one in-process rate limit check ([`RateLimiter::check`] in the
//! `api` lane, no Redis): the GCRA step, the shard lock and the map lookup,
//! over 10,000 keys so the map is not one hot entry.
//!
//! Run: `cargo bench -p payhost-tests --bench ratelimit`.

use std::sync::Arc;
use std::time::Instant;

use payhost::ratelimit::{Lane, LimitKey, RateLimitOptions, RateLimiter, SystemClock};
use payhost::store::{ApiKeyId, TenantId};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let limiter = RateLimiter::with(
        RateLimitOptions::default(),
        Arc::new(|_| Some(1_000_000)),
        Arc::new(SystemClock::new()),
    )
    .expect("limiter");
    let keys: Vec<LimitKey> = (0..10_000)
        .map(|i| {
            LimitKey::api_key(
                &TenantId::parse(&format!("ten_{}", i % 100)).expect("tenant"),
                &ApiKeyId::parse(&format!("key_{i}")).expect("key"),
            )
        })
        .collect();
    rt.block_on(async {
        for k in &keys {
            limiter.check(Lane::Api, k).await;
        }
        let rounds = 9;
        let per_round = 200_000;
        let mut medians = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            for i in 0..per_round {
                std::hint::black_box(limiter.check(Lane::Api, &keys[i % keys.len()]).await);
            }
            medians.push(t.elapsed().as_nanos() as f64 / per_round as f64);
        }
        medians.sort_by(f64::total_cmp);
        println!(
            "in-process rate limit check: median {:.0} ns/check (rounds {:.0}–{:.0} ns; {rounds} × {per_round} checks over {} keys)",
            medians[rounds / 2],
            medians[0],
            medians[rounds - 1],
            keys.len()
        );
    });
}
