//! Feature evaluation cost: one `Features::enabled` / `limit` / `evaluate`
//! on a snapshot the size of a busy platform (10 000 tenants on plans, 200
//! overrides, 60 features, one kill switch). Evaluation is an in-memory
//! lookup; the target is a median of at most 200 ns.
//!
//! Run: `cargo bench -p payhost --bench features` (prints median / p99).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payhost::features::{
    Feature, FeatureKey, FeatureValue, Features, KillSwitch, Override, PlanGrants, Snapshot,
    SystemClock,
};
use payhost::store::{TenantId, UnixMillis};

fn feature(key: &str, default: FeatureValue) -> Feature {
    Feature {
        key: FeatureKey::parse(key).expect("key"),
        kind: default.kind(),
        default,
        description: String::new(),
        builtin: false,
    }
}

fn snapshot(tenants: &[TenantId]) -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..50 {
        let key = format!("custom.flag{i}");
        s.features
            .insert(key.clone(), feature(&key, FeatureValue::Flag(i % 2 == 0)));
    }
    for key in [
        "provider.stripe",
        "provider.paddle",
        "orders.manual",
        "refunds",
    ] {
        s.features
            .insert(key.into(), feature(key, FeatureValue::Flag(true)));
    }
    for key in [
        "gateways.max",
        "checkouts.monthly",
        "api.requests_per_minute",
    ] {
        s.features
            .insert(key.into(), feature(key, FeatureValue::Limit(None)));
    }
    for plan in ["free", "pro", "enterprise"] {
        let mut grants = PlanGrants::default();
        grants
            .grants
            .insert("gateways.max".into(), FeatureValue::Limit(Some(3)));
        grants
            .grants
            .insert("provider.paddle".into(), FeatureValue::Flag(plan != "free"));
        s.plans.insert(plan.into(), grants);
    }
    for (i, t) in tenants.iter().enumerate() {
        let plan = ["free", "pro", "enterprise"][i % 3];
        s.tenant_plans.insert(t.clone(), plan.into());
        if i % 50 == 0 {
            let mut by_key = HashMap::default();
            by_key.insert(
                "gateways.max".to_owned(),
                Override {
                    value: FeatureValue::Limit(Some(10)),
                    reason: "bench".into(),
                    actor: "operator:admin".into(),
                    expires_at: None,
                    created_at: UnixMillis(0),
                },
            );
            s.overrides.insert(t.clone(), by_key);
        }
    }
    s.kill_switches.insert(
        "custom.flag7".into(),
        KillSwitch {
            key: FeatureKey::parse("custom.flag7").expect("key"),
            reason: "bench".into(),
            actor: "operator:admin".into(),
            created_at: UnixMillis(0),
        },
    );
    s
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    println!("{what}: median {median:?}, p99 {p99:?}");
}

/// Times `batch` calls per sample (one call is below the timer's
/// resolution) and reports the per-call figure.
fn measure(what: &str, mut call: impl FnMut(usize)) {
    const BATCH: usize = 1_000;
    for i in 0..100_000 {
        call(i);
    }
    let mut samples = Vec::with_capacity(2_000);
    for s in 0..2_000 {
        let t = Instant::now();
        for i in 0..BATCH {
            call(s * BATCH + i);
        }
        samples.push(t.elapsed() / BATCH as u32);
    }
    report(what, samples);
}

fn main() {
    let tenants: Vec<TenantId> = (0..10_000).map(|_| TenantId::generate()).collect();
    let features = Features::fixed(snapshot(&tenants), Arc::new(SystemClock));
    let n = tenants.len();
    measure("enabled(provider.paddle)", |i| {
        black_box(features.enabled(&tenants[i % n], black_box("provider.paddle")));
    });
    measure("limit(gateways.max), override or plan", |i| {
        black_box(features.limit(&tenants[i % n], black_box("gateways.max")));
    });
    measure("enabled(custom.flag7), kill-switched", |i| {
        black_box(features.enabled(&tenants[i % n], black_box("custom.flag7")));
    });
    measure("evaluate(gateways.max), full result", |i| {
        black_box(features.evaluate(&tenants[i % n], black_box("gateways.max")));
    });
    measure("evaluate(unknown key)", |i| {
        black_box(features.evaluate(&tenants[i % n], black_box("no.such.key")));
    });
}
