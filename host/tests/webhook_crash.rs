//! Crash safety of the webhook inbox, with the real binary: `payhost serve`
//! is SIGKILLed while signed deliveries are in flight and the worker is
//! applying them, then started again on the same database. Every event that
//! got a 2xx is applied exactly once; the deliveries that got no answer are
//! retried (as a gateway does) and are applied exactly once too.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use payhost::emulators::stripe::sign_payload;
use payhost::store::{Store, TenantId, sqlite_file_url};
use serde_json::{Value, json};

const ADMIN: &str = "crash-test-admin-token";
const SECRET: &str = "whsec_crash_test_secret";
const EVENTS: usize = 400;
/// Each event is delivered this many times (a gateway's duplicates).
const COPIES: usize = 2;
/// The host is killed once this many deliveries were answered 2xx.
const KILL_AFTER: usize = 150;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Where the two processes keep their data: an SQLite file, or a
/// PostgreSQL schema of its own (selected through the URL's `options`).
enum Db {
    Sqlite(PathBuf),
    Postgres { admin: String, schema: String },
}

impl Db {
    fn url(&self) -> String {
        match self {
            Db::Sqlite(path) => sqlite_file_url(path),
            Db::Postgres { admin, schema } => {
                let sep = if admin.contains('?') { '&' } else { '?' };
                format!("{admin}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    async fn drop_schema(&self) {
        if let Db::Postgres { admin, schema } = self {
            let store = Store::connect(admin).await.expect("admin connection");
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(store.pool())
                .await
                .ok();
            store.close().await;
        }
    }
}

/// One `payhost serve` process.
struct Host {
    child: Child,
    base: String,
}

impl Host {
    /// Starts the binary with a config file of its own (a short lease, so
    /// events leased by a killed process come back quickly; no rate limit
    /// in the way of the test's senders) and waits for `/health`.
    async fn start(dir: &Path, database_url: &str, run: usize) -> Host {
        let port = free_port();
        let config = dir.join(format!("payhost-{run}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n\
                 data_dir = \"{data}\"\n\
                 database_url = \"{database_url}\"\n\
                 admin_token = \"{ADMIN}\"\n\
                 [rate_limit]\nrequests_per_minute = 1000000\nwebhooks_per_minute = 1000000\n\
                 [webhooks]\nlease_secs = 2\npoll_interval_ms = 100\n",
                data = dir.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join(format!("serve-{run}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_payhost"))
            // Config refuses unknown `PAYHOST_*` variables, such as the test suite's.
            .env_clear()
            .env("PAYHOST_LOG", "warn")
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn payhost serve");
        let host = Host {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/health", host.base)).send().await
                && r.status().is_success()
            {
                return host;
            }
            assert!(
                Instant::now() < deadline,
                "payhost serve did not answer /health; see {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown hook, no flush, no drain.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn refund_event(re: &str, pi: &str, order: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt_{re}"), "object": "event", "api_version": "2024-06-20",
        "created": now_secs(), "livemode": false, "type": "refund.updated",
        "data": {"object": {"id": re, "object": "refund", "amount": 1, "currency": "usd",
            "payment_intent": pi, "status": "succeeded", "metadata": {"order_id": order}}},
    }))
    .expect("json")
}

/// Waits until the host has no pending inbox event.
async fn drained(client: &reqwest::Client, host: &Host) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let url = format!("{}/admin/webhooks/stats", host.base);
        let (status, stats) = call(client, reqwest::Method::GET, url, ADMIN, None).await;
        if status == 200 && stats["pending"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the inbox never drained: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Refund rows booked per gateway refund reference.
async fn booked(db: &Db, tenant: &str) -> HashMap<String, i64> {
    let store = Store::connect(&db.url()).await.expect("open db");
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT gateway_reference, COUNT(*) FROM payments \
         WHERE tenant_id = $1 AND status = 'refunded' GROUP BY gateway_reference",
    )
    .bind(tenant)
    .fetch_all(store.pool())
    .await
    .expect("count refund rows");
    store.close().await;
    rows.into_iter().collect()
}

/// Sends every delivery in `queue` from 16 tasks until it is empty or
/// `stop` is set; returns the refund references whose delivery got a 2xx.
async fn send_all(
    base: String,
    tenant: String,
    bodies: Arc<Vec<(String, Vec<u8>)>>,
    queue: Vec<usize>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let queue = Arc::new(Mutex::new(queue));
    let url = format!("{base}/webhooks/{tenant}/stripe");
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (client, url, bodies, queue) =
            (client.clone(), url.clone(), bodies.clone(), queue.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let Some(i) = queue.lock().expect("queue").pop() else {
                    break;
                };
                let (re, body) = &bodies[i];
                let sent = client
                    .post(&url)
                    .header("Stripe-Signature", sign_payload(SECRET, now_secs(), body))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(r) = sent {
                    if r.status().is_success() {
                        ok.push(re.clone());
                        acked.fetch_add(1, Ordering::SeqCst);
                    } else {
                        assert!(
                            r.status().is_server_error(),
                            "a signed delivery is never refused: {}",
                            r.status()
                        );
                    }
                }
            }
            ok
        }));
    }
    let mut ok = Vec::new();
    for s in senders {
        ok.extend(s.await.expect("sender"));
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_acknowledged_before_a_sigkill_are_applied_exactly_once_after_restart_sqlite() {
    let dir = temp_dir();
    let db = Db::Sqlite(dir.join("payhost.db"));
    crash_and_restart(&dir, &db).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_acknowledged_before_a_sigkill_are_applied_exactly_once_after_restart_postgres() {
    let Ok(admin) = std::env::var("PAYHOST_TEST_POSTGRES_URL") else {
        eprintln!("skipped: PAYHOST_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("payhost_crash_{}", &TenantId::generate().as_str()[4..]).to_lowercase();
    let store = Store::connect(&admin).await.expect("PostgreSQL");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(store.pool())
        .await
        .expect("schema");
    store.close().await;
    let dir = temp_dir();
    let db = Db::Postgres { admin, schema };
    crash_and_restart(&dir, &db).await;
    db.drop_schema().await;
    std::fs::remove_dir_all(&dir).ok();
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("payhost-crash-{}", TenantId::generate()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// The whole scenario against `db`, with `dir` for the processes' config,
/// logs and generated secrets (the master key survives the restart there).
async fn crash_and_restart(dir: &Path, db: &Db) {
    let url = db.url();
    let client = reqwest::Client::new();
    let host = Host::start(dir, &url, 1).await;
    let base = host.base.clone();
    use reqwest::Method;

    let (status, tenant) = call(
        &client,
        Method::POST,
        format!("{base}/admin/tenants"),
        ADMIN,
        Some(json!({"name": "Crash shop"})),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant = tenant["id"].as_str().expect("tenant id").to_string();
    let (status, key) = call(
        &client,
        Method::POST,
        format!("{base}/admin/tenants/{tenant}/api-keys"),
        ADMIN,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("api key").to_string();
    let (status, saved) = call(
        &client,
        Method::PUT,
        format!("{base}/v1/gateways/stripe"),
        &key,
        Some(
            json!({"credentials": {"secret-key": "sk_test_crash_123456"},
            "webhook_secret": SECRET, "priority": 1, "currencies": ["USD"]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let (status, order) = call(
        &client,
        Method::POST,
        format!("{base}/v1/checkouts"),
        &key,
        Some(json!({"currency": "USD", "items": [{"amount": 100_000}],
            "payment_method": "pm_card_visa"})),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().expect("order id").to_string();
    let pi = order["ledger"][0]["gateway_reference"]
        .as_str()
        .expect("pi")
        .to_string();

    // EVENTS gateway-side refunds of 1 cent each, every one delivered COPIES
    // times, shuffled.
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..EVENTS)
            .map(|i| {
                let re = format!("re_crash_{i:04}_{}", &tenant[tenant.len() - 6..]);
                let body = refund_event(&re, &pi, &order_id);
                (re, body)
            })
            .collect(),
    );
    let mut queue: Vec<usize> = (0..EVENTS * COPIES).map(|i| i % EVENTS).collect();
    let mut seed = u64::from(std::process::id()) | 1;
    for i in (1..queue.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        queue.swap(i, (seed % (i as u64 + 1)) as usize);
    }

    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn(send_all(
        base.clone(),
        tenant.clone(),
        bodies.clone(),
        queue,
        acked.clone(),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "deliveries never got {KILL_AFTER} answers"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    host.kill();
    stop.store(true, Ordering::SeqCst);
    let acknowledged = sending.await.expect("senders");
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        acknowledged.len() < EVENTS * COPIES,
        "the kill came after every delivery was answered: nothing was in flight"
    );
    let before_restart = booked(db, &tenant).await;
    let applied_before: usize = before_restart.len();

    // Restart on the same database: the worker finishes what was stored.
    let host = Host::start(dir, &url, 2).await;
    drained(&client, &host).await;
    let after = booked(db, &tenant).await;
    for re in &acknowledged {
        assert_eq!(
            after.get(re),
            Some(&1),
            "{re} got a 2xx: applied exactly once after the restart"
        );
    }
    for (re, n) in &after {
        assert_eq!(*n, 1, "{re} booked {n} times");
    }

    // The gateway retries what got no 2xx; every event ends applied once.
    let unanswered: Vec<usize> = (0..EVENTS)
        .filter(|&i| !acknowledged.contains(&bodies[i].0))
        .collect();
    assert!(
        !unanswered.is_empty(),
        "some events were never acknowledged before the kill"
    );
    let retried = send_all(
        host.base.clone(),
        tenant.clone(),
        bodies.clone(),
        unanswered.clone(),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert_eq!(
        retried.len(),
        unanswered.len(),
        "every retried delivery is answered 2xx"
    );
    drained(&client, &host).await;
    let after = booked(db, &tenant).await;
    assert_eq!(after.len(), EVENTS, "every event applied");
    assert!(after.values().all(|&n| n == 1), "and each exactly once");
    let (_, balance) = call(
        &client,
        Method::GET,
        format!("{}/v1/balance", host.base),
        &key,
        None,
    )
    .await;
    assert_eq!(
        balance["items"],
        json!([{"currency": "USD", "paid": 100_000, "refunded": EVENTS, "net": 100_000 - EVENTS as i64, "held": 0}]),
        "{balance}"
    );
    host.kill();
    eprintln!(
        "crash test: {} of {} deliveries acknowledged before the kill, {} refunds booked by then, {} retried",
        acknowledged.len(),
        EVENTS * COPIES,
        applied_before,
        unanswered.len()
    );

    let verify = Command::new(env!("CARGO_BIN_EXE_payhost"))
        .env_clear()
        .env("PAYHOST_DATABASE_URL", &url)
        .args(["ledger", "verify"])
        .output()
        .expect("run payhost ledger verify");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
