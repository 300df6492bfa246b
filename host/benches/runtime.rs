//! Runtime cost per call: fresh instance + trivial export (`manifest`), and
//! the Stripe component's `parse-webhook` on a signed event.
//!
//! Run: `cargo bench -p payhost --bench runtime` (prints median / p99 per call).

use std::time::{Duration, Instant};

use payhost::emulators::stripe::StripeEmulator;
use payhost::runtime::contract::{CallContext, Credential, WebhookRequest};
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
        let header = payhost::emulators::stripe::sign_payload(secret, now, body);
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

        // The component's HTTP path against the loopback emulator, next to the
        // same request made directly: the difference is what the runtime adds
        // to a gateway call (instance, wasi-http, policy, body streaming).
        let emulator = StripeEmulator::start(0).await.expect("emulator");
        let settings = ProviderSettings {
            base_url: Some(emulator.base_url()),
            ..ProviderSettings::default()
        };
        let networked = runtime
            .load("bundled:stripe", stripe_bytes, settings)
            .await
            .expect("stripe loads");
        let key = "sk_test_bench_runtime";
        let ctx = CallContext {
            credentials: vec![Credential {
                name: "secret-key".into(),
                value: key.into(),
            }],
            base_url: None,
            idempotency_key: None,
        };
        let direct = reqwest::Client::new();
        let balance = format!("{}/v1/balance", emulator.base_url());
        let iterations = 2_000;
        let mut through_component = Vec::with_capacity(iterations);
        let mut straight = Vec::with_capacity(iterations);
        for i in 0..iterations + 200 {
            let t = Instant::now();
            networked.validate_credentials(ctx.clone()).await.expect("valid key");
            let component = t.elapsed();
            let t = Instant::now();
            let response = direct.get(&balance).bearer_auth(key).send().await.expect("emulator");
            assert!(response.status().is_success());
            response.bytes().await.expect("body");
            if i >= 200 {
                through_component.push(component);
                straight.push(t.elapsed());
            }
        }
        let (median, p99) = stats(through_component);
        println!("stripe validate-credentials (GET /v1/balance via component): median {median:?}  p99 {p99:?}");
        let (median, p99) = stats(straight);
        println!("same GET made directly with reqwest:                         median {median:?}  p99 {p99:?}");
    });
}
