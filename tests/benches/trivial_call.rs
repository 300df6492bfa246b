//! Per-call cost of the sandbox on a minimal component: fresh store +
//! instance + one trivial export (`manifest` of the hostile test provider,
//! which returns a handful of short strings).
//!
//! Run: `cargo bench -p payhost-tests --bench trivial_call`.

use std::time::{Duration, Instant};

use payhost::runtime::ProviderSettings;
use payhost_tests::{load_component, runtime};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let provider = load_component(runtime(), "HOSTILE", ProviderSettings::default())
            .await
            .expect("hostile component loads");
        for _ in 0..1_000 {
            provider.call_manifest().await.expect("manifest");
        }
        let iterations = 10_000;
        let mut samples: Vec<Duration> = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            provider.call_manifest().await.expect("manifest");
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "minimal component: fresh instance + trivial export: median {:?}  p99 {:?}  ({iterations} calls)",
            samples[iterations / 2],
            samples[iterations * 99 / 100]
        );
    });
}
