//! Runtime cost per call: fresh instance + trivial export (`manifest`), and
//! the Stripe component's `parse-webhook` on a signed event.
//!
//! Run: `cargo bench -p payhost --bench runtime` (prints median / p99 per call).

use std::time::{Duration, Instant};

use payhost::runtime::contract::{CallContext, WebhookRequest};
use payhost::runtime::{BUNDLED, ProviderSettings, Runtime, SandboxLimits};

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    (median, p99)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let runtime = Runtime::new(SandboxLimits::default()).expect("engine");
        let stripe_bytes = BUNDLED
            .iter()
            .find(|(id, _)| *id == "stripe")
            .map(|(_, b)| *b)
            .expect("stripe bundled");
        let started = Instant::now();
        let stripe = runtime
            .load("bundled:stripe", stripe_bytes, ProviderSettings::default())
            .await
            .expect("stripe loads");
        println!(
            "load (compile + check + manifest) of stripe ({} KiB): {:?}",
            stripe_bytes.len() / 1024,
            started.elapsed()
        );

        let iterations = 5_000;
        for _ in 0..500 {
            stripe.call_manifest().await.expect("manifest");
        }
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            stripe.call_manifest().await.expect("manifest");
            samples.push(t.elapsed());
        }
        let (median, p99) = stats(samples);
        println!("fresh instance + manifest call:        median {median:?}  p99 {p99:?}  ({iterations} calls)");

        let secret = "whsec_bench";
        let body = br#"{"id":"evt_bench","object":"event","type":"payment_intent.succeeded","created":1700000000,"data":{"object":{"id":"pi_bench","object":"payment_intent","amount":1000,"amount_received":1000,"currency":"usd","status":"succeeded","metadata":{"order_id":"ord_1"}}}}"#;
        let now = 1_700_000_000i64;
        let header = payhost::sandbox::stripe::sign_payload(secret, now, body);
        let request = WebhookRequest {
            headers: vec![("stripe-signature".into(), header)],
            body: body.to_vec(),
            secret: secret.into(),
            received_at: now,
        };
        // A valid delivery never reaches the network, so no credentials.
        let no_credentials = CallContext {
            credentials: vec![],
            base_url: None,
            idempotency_key: None,
        };
        let events = stripe.parse_webhook(no_credentials.clone(), request.clone()).await.expect("valid webhook");
        assert_eq!(events.len(), 1);
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            stripe.parse_webhook(no_credentials.clone(), request.clone()).await.expect("webhook");
            samples.push(t.elapsed());
        }
        let (median, p99) = stats(samples);
        println!("fresh instance + stripe parse-webhook: median {median:?}  p99 {p99:?}  ({iterations} calls)");
    });
}
