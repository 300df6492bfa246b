//! Shared harness for the end-to-end tests in `tests/tests/`.
//!
//! Components are compiled once per test process (one shared `Runtime`
//! per limit set, one `LoadedProvider` per component), because compiling is
//! the expensive part; every call still gets a fresh instance.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use payhost::runtime::{LoadError, LoadedProvider, ProviderSettings, Runtime, SandboxLimits};
use tokio::sync::OnceCell;

pub mod checkout;

/// Every log line of this test process: the first call installs a global
/// `trace` subscriber writing into the returned buffer (call it before the
/// code whose logs a test reads). The code generator's own traces (gigabytes
/// per component compiled) are left out; they never see request data.
pub fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
                 wasmtime_cranelift=info",
            )
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Limits used by the hostile-component tests: short deadline, small memory.
pub const HOSTILE_DEADLINE: Duration = Duration::from_millis(500);
/// Memory cap used by the hostile-component tests.
pub const HOSTILE_MEMORY_CAP: usize = 32 * 1024 * 1024;

/// A runtime with default limits, shared by the whole test process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(SandboxLimits::default()).expect("engine"))
}

/// A runtime with tight limits for hostile components.
pub fn tight_runtime() -> &'static Runtime {
    static RUNTIME: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(SandboxLimits {
            call_deadline: HOSTILE_DEADLINE,
            memory_cap_bytes: HOSTILE_MEMORY_CAP,
            ..SandboxLimits::default()
        })
        .expect("engine")
    })
}

/// Path of a test component built by `tests/build.rs`.
pub fn component_path(package_env: &str) -> &'static Path {
    match package_env {
        "HOSTILE" => Path::new(env!("PAYHOST_TEST_COMPONENT_HOSTILE_PROVIDER")),
        "WRONG_VERSION" => Path::new(env!("PAYHOST_TEST_COMPONENT_WRONG_VERSION_PROVIDER")),
        "NO_GATEWAY" => Path::new(env!("PAYHOST_TEST_COMPONENT_NO_GATEWAY_COMPONENT")),
        "FS_IMPORTING" => Path::new(env!("PAYHOST_TEST_COMPONENT_FS_IMPORTING_PROVIDER")),
        other => panic!("unknown test component {other}"),
    }
}

/// Load a test component's bytes under a runtime.
pub async fn load_component(
    runtime: &Runtime,
    package_env: &str,
    settings: ProviderSettings,
) -> Result<LoadedProvider, LoadError> {
    let path = component_path(package_env);
    let bytes = std::fs::read(path).expect("test component was built by build.rs");
    runtime
        .load(&path.display().to_string(), &bytes, settings)
        .await
}

/// The bundled Stripe component's bytes.
pub fn stripe_bytes() -> &'static [u8] {
    payhost::runtime::BUNDLED
        .iter()
        .find(|(id, _)| *id == "stripe")
        .map(|(_, b)| *b)
        .expect("stripe is bundled")
}

/// A tiny HTTP server on loopback that answers `200 ok` to anything and
/// counts connections. Lives for the whole test process (a plain thread, so
/// it survives each test's tokio runtime).
pub struct CountingServer {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    connections: std::sync::atomic::AtomicUsize,
}

impl CountingServer {
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The process-wide allowed server the hostile provider may reach.
pub fn allowed_server() -> &'static CountingServer {
    static SERVER: std::sync::OnceLock<&'static CountingServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let server: &'static CountingServer = Box::leak(Box::new(CountingServer {
            origin: format!("http://127.0.0.1:{port}"),
            connections: 0.into(),
        }));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                server
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        server
    })
}

/// The hostile provider, compiled once per process under the tight runtime,
/// allowed to reach only [`allowed_server`].
pub async fn hostile() -> Arc<LoadedProvider> {
    static CELL: OnceCell<Arc<LoadedProvider>> = OnceCell::const_new();
    CELL.get_or_init(|| async {
        let origin = payhost::runtime::Origin::parse(&allowed_server().origin).expect("origin");
        let settings = ProviderSettings {
            allowed_origins: Some(vec![origin]),
            ..ProviderSettings::default()
        };
        Arc::new(
            load_component(tight_runtime(), "HOSTILE", settings)
                .await
                .expect("hostile component loads"),
        )
    })
    .await
    .clone()
}

/// A Stripe emulator shared by the whole test process. It runs on its own
/// thread and tokio runtime, so it outlives each test's runtime.
pub fn stripe_emulator() -> &'static payhost::emulators::StripeEmulator {
    static EMULATOR: std::sync::OnceLock<&'static payhost::emulators::StripeEmulator> =
        std::sync::OnceLock::new();
    EMULATOR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("emulator runtime");
            rt.block_on(async move {
                let emulator = payhost::emulators::StripeEmulator::start(0)
                    .await
                    .expect("start stripe emulator");
                let emulator: &'static payhost::emulators::StripeEmulator =
                    Box::leak(Box::new(emulator));
                tx.send(emulator).expect("hand over emulator");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("emulator started")
    })
}

/// The bundled Stripe component, compiled once per process and pointed at
/// [`stripe_emulator`].
pub async fn stripe() -> Arc<LoadedProvider> {
    static CELL: OnceCell<Arc<LoadedProvider>> = OnceCell::const_new();
    CELL.get_or_init(|| async {
        let settings = ProviderSettings {
            base_url: Some(stripe_emulator().base_url()),
            ..ProviderSettings::default()
        };
        Arc::new(
            runtime()
                .load("bundled:stripe", stripe_bytes(), settings)
                .await
                .expect("stripe component loads"),
        )
    })
    .await
    .clone()
}

/// How many requests the Stripe emulator has received whose idempotency key
/// starts with `prefix` (components send `<key>:<operation>`).
pub fn stripe_calls_keyed(prefix: &str) -> usize {
    stripe_emulator()
        .calls()
        .iter()
        .filter(|c| {
            c.idempotency_key
                .as_deref()
                .is_some_and(|k| k.starts_with(prefix))
        })
        .count()
}

/// A fresh, unique Stripe test key (the emulator scopes objects per key).
pub fn stripe_test_key() -> String {
    format!("sk_test_{:016x}", rand_u64())
}

/// A random u64 from the OS (no extra dependency).
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    h.finish()
}

/// Every provider the API tests use, loaded once per process: the bundled
/// Stripe (pointed at [`stripe_emulator`]) and the hostile test provider
/// (a second gateway for routing tests).
pub async fn registry() -> Arc<payhost::runtime::ProviderRegistry> {
    static CELL: OnceCell<Arc<payhost::runtime::ProviderRegistry>> = OnceCell::const_new();
    CELL.get_or_init(|| async {
        let mut registry = payhost::runtime::ProviderRegistry::default();
        registry
            .insert(
                runtime()
                    .load(
                        "bundled:stripe",
                        stripe_bytes(),
                        ProviderSettings {
                            base_url: Some(stripe_emulator().base_url()),
                            ..ProviderSettings::default()
                        },
                    )
                    .await
                    .expect("stripe loads"),
            )
            .expect("insert stripe");
        let origin = payhost::runtime::Origin::parse(&allowed_server().origin).expect("origin");
        registry
            .insert(
                load_component(
                    tight_runtime(),
                    "HOSTILE",
                    ProviderSettings {
                        allowed_origins: Some(vec![origin]),
                        ..ProviderSettings::default()
                    },
                )
                .await
                .expect("hostile loads"),
            )
            .expect("insert hostile");
        Arc::new(registry)
    })
    .await
    .clone()
}

/// Retries `attempt` until it returns `Ok`, for at most 10 s (a broadcast
/// reaching another instance); panics with `what` and the last answer.
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, serde_json::Value>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(last) => assert!(std::time::Instant::now() < deadline, "{what}: {last}"),
        }
        // A bounded poll of a condition, not a wait in its place.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub use payhost::store::testing::POSTGRES_URL_ENV;

/// The webhook secret [`TestApp::save_stripe`] saves.
pub const WEBHOOK_SECRET: &str = "whsec_test_webhook_secret_value";

/// `127.0.0.1:<port>` of `app`, for raw TCP clients.
pub fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// The admin token every test app uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A test's adjustment of the configuration (see [`AppOptions::configure`]).
pub type Configure = Box<dyn FnOnce(&mut payhost::config::Config)>;

/// What a test instance runs with beyond the defaults.
#[derive(Default)]
pub struct AppOptions {
    /// The server loop's limits.
    pub http: payhost::http_server::HttpOptions,
    /// The rate limiter's options (default: the config's). Every instance's
    /// limiter runs on a [`payhost::ratelimit::ManualClock`] of its own.
    pub rate_limit: Option<payhost::ratelimit::RateLimitOptions>,
    /// Checkouts count against no quota (the checkout benchmark's baseline).
    pub uncounted: bool,
    /// Adjusts the configuration before the app is built (webhook retry
    /// policy, alert URL, …).
    pub configure: Option<Configure>,
}

impl AppOptions {
    /// Options whose API rate limit never gets in the way: benchmarks send
    /// thousands of requests with one key, and a test app's limiter runs on
    /// a clock that never moves (its budget would never refill).
    pub fn unthrottled() -> AppOptions {
        AppOptions {
            configure: Some(Box::new(|config| {
                config.rate_limit.requests_per_minute = 1_000_000;
                config.rate_limit.burst = Some(1_000_000);
            })),
            ..AppOptions::default()
        }
    }
}

/// A real payhost HTTP service on a loopback port with a fresh database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A plain HTTP client.
    pub client: reqwest::Client,
    /// The database (for raw-SQL assertions).
    pub store: payhost::store::Store,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The instance's mutations in progress (each in its own task).
    pub mutations: payhost::api::Mutations,
    /// The instance's request rate limiter (tests set rates with
    /// [`RateLimiter::set_rate_for`](payhost::ratelimit::RateLimiter::set_rate_for)).
    pub rate_limiter: payhost::ratelimit::RateLimiter,
    /// The clock of the limiter's in-process budgets: it moves only when a
    /// test advances it.
    pub rate_clock: payhost::ratelimit::ManualClock,
    /// The wall clock feature-override expiry and quota periods are judged
    /// against; tests move it.
    /// A sibling shares its first instance's clock.
    pub clock: Arc<payhost::clock::ManualClock>,
    /// The instance's webhook pipeline (its workers run until `finish`).
    pub webhooks: payhost::webhooks::Webhooks,
    workers: Option<payhost::webhooks::WorkerHandle>,
    /// The janitor's clock (the wall clock plus an offset tests advance;
    /// shared with siblings).
    pub janitor_clock: payhost::clock::OffsetClock,
    /// The instance's janitor (its passes also run every 50 ms on their own).
    pub janitor_handle: payhost::janitor::Janitor,
    db: Option<payhost::store::testing::TestDb>,
    server: tokio::task::JoinHandle<()>,
    janitor: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// Start the service on `db` (already migrated by `TestDb`).
    pub async fn spawn(db: payhost::store::testing::TestDb) -> TestApp {
        TestApp::spawn_with(db, payhost::http_server::HttpOptions::default()).await
    }

    /// [`TestApp::spawn`] with the server loop's limits set by the test
    /// (short timeouts, a small connection cap).
    pub async fn spawn_with(
        db: payhost::store::testing::TestDb,
        http: payhost::http_server::HttpOptions,
    ) -> TestApp {
        TestApp::spawn_opts(
            db,
            AppOptions {
                http,
                ..AppOptions::default()
            },
        )
        .await
    }

    /// [`TestApp::spawn`] whose checkouts count no quota at all (the
    /// baseline of the checkout benchmark).
    pub async fn spawn_uncounted(db: payhost::store::testing::TestDb) -> TestApp {
        let opts = AppOptions {
            uncounted: true,
            ..AppOptions::default()
        };
        TestApp::spawn_opts(db, opts).await
    }

    /// [`TestApp::spawn_with`] with the configuration adjusted by the test
    /// (webhook retry policy, alert URL, …).
    pub async fn spawn_configured(
        db: payhost::store::testing::TestDb,
        http: payhost::http_server::HttpOptions,
        configure: impl FnOnce(&mut payhost::config::Config) + 'static,
    ) -> TestApp {
        let opts = AppOptions {
            http,
            configure: Some(Box::new(configure)),
            ..AppOptions::default()
        };
        TestApp::spawn_opts(db, opts).await
    }

    /// [`TestApp::spawn`] with [`AppOptions`].
    pub async fn spawn_opts(db: payhost::store::testing::TestDb, opts: AppOptions) -> TestApp {
        let store = db.store().clone();
        let url = db.url().to_string();
        let clock = Arc::new(payhost::clock::ManualClock::starting_now());
        let janitor_clock = payhost::clock::OffsetClock::new();
        let mut app = TestApp::start(store, &url, opts, clock, janitor_clock).await;
        app.db = Some(db);
        app
    }

    /// A second instance of the service on the same database (another
    /// "host" behind the load balancer). Its database is not dropped on
    /// `finish`; the first instance owns it.
    pub async fn sibling(&self, database_url: &str) -> TestApp {
        self.sibling_opts(database_url, AppOptions::default()).await
    }

    /// [`TestApp::sibling`] with [`AppOptions`] (e.g. a rate limiter
    /// sharing its budgets through Redis).
    pub async fn sibling_opts(&self, database_url: &str, opts: AppOptions) -> TestApp {
        TestApp::start(
            self.store.clone(),
            database_url,
            opts,
            self.clock.clone(),
            self.janitor_clock.clone(),
        )
        .await
    }

    /// Moves the instance's wall clock (features, quotas, the webhook
    /// pipeline) forward and wakes the webhook workers.
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
        self.webhooks.wake();
    }

    /// The database URL this app uses (for [`TestApp::sibling`]).
    pub fn database_url(&self) -> Option<String> {
        self.db.as_ref().map(|d| d.url().to_string())
    }

    async fn start(
        store: payhost::store::Store,
        url: &str,
        opts: AppOptions,
        clock: Arc<payhost::clock::ManualClock>,
        janitor_clock: payhost::clock::OffsetClock,
    ) -> TestApp {
        let AppOptions {
            http,
            rate_limit,
            uncounted,
            configure,
        } = opts;
        let backend = match store.backend() {
            payhost::store::Backend::Sqlite => "sqlite",
            payhost::store::Backend::Postgres => "postgres",
        };
        let mut config = payhost::config::Config {
            admin_token: Some(payhost::config::Secret::new(ADMIN_TOKEN)),
            master_key: Some(payhost::config::Secret::new(shared_master_key())),
            janitor: janitor_config(),
            ..payhost::config::Config::default()
        };
        // Retries come due only when the test moves the clock; the timer
        // only finds other instances' events sooner.
        config.webhooks.poll_interval_ms = 100;
        if let Some(configure) = configure {
            configure(&mut config);
        }
        let mut state = payhost::server::app_state_with_clock(
            &config,
            url,
            store.clone(),
            registry().await,
            clock.clone(),
            !uncounted,
            Arc::new(janitor_clock.clone()),
        )
        .await
        .expect("app state");
        let rate_clock = payhost::ratelimit::ManualClock::new();
        let rate_options = rate_limit.unwrap_or_else(|| config.rate_limit_options());
        let default_rate = rate_options.requests_per_minute;
        state.rate_limiter = payhost::ratelimit::RateLimiter::with(
            rate_options,
            payhost::server::api_rate(&state.features, default_rate),
            Arc::new(rate_clock.clone()),
        )
        .expect("rate limiter");
        let rate_limiter = state.rate_limiter.clone();
        state.webhooks = state.webhooks.with_limiter(rate_limiter.clone());
        let webhooks = state.webhooks.clone();
        let workers = Some(webhooks.start());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        // Offline mode's webhook wiring, as `serve` sets it up.
        let mut state = state;
        state.webhook_registrar = Some(
            payhost::emulators::WebhookRegistrar::new(&stripe_emulator().base_url(), &base)
                .expect("registrar"),
        );
        let janitor = payhost::server::start_janitor(&config, &state);
        let janitor_handle = state.janitor.clone();
        let mutations = state.mutations.clone();
        let server = tokio::spawn(async move {
            let router = payhost::api::router(state);
            let forever = std::future::pending::<()>();
            if let Err(e) = payhost::http_server::serve_http(listener, router, http, forever).await
            {
                tracing::error!("test server stopped: {e}");
            }
        });
        TestApp {
            base,
            client: reqwest::Client::new(),
            store,
            backend,
            mutations,
            rate_limiter,
            rate_clock,
            clock,
            webhooks,
            workers,
            janitor_clock,
            janitor_handle,
            db: None,
            server,
            janitor,
        }
    }

    /// Waits (up to 60 s) until every mutation this instance started has
    /// finished, including those whose clients hung up; panics otherwise.
    pub async fn quiesce(&self) {
        assert!(
            self.mutations.idle(Duration::from_secs(60)).await,
            "{}: {} mutations still running after 60 s",
            self.backend,
            self.mutations.in_progress()
        );
    }

    /// Runs one janitor pass now (beside the ones that run on their own),
    /// so a test knows a pass saw the clock as it is.
    pub async fn janitor_pass(&self) -> payhost::janitor::Pass {
        self.janitor_handle.pass().await.expect("janitor pass")
    }

    /// An app on a fresh SQLite database.
    pub async fn sqlite() -> TestApp {
        match payhost::store::testing::TestDb::sqlite().await {
            Ok(db) => TestApp::spawn(db).await,
            Err(e) => panic!("cannot create a SQLite test database: {e}"),
        }
    }

    /// An app on a fresh PostgreSQL schema, or `None` when
    /// `PAYHOST_TEST_POSTGRES_URL` is unset. Panics when it is set but
    /// PostgreSQL is unusable, so a misconfiguration cannot skip the suite.
    pub async fn postgres() -> Option<TestApp> {
        use payhost::store::testing::{POSTGRES_URL_ENV, TestDb};
        let url = std::env::var(POSTGRES_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())?;
        match TestDb::postgres(&url).await {
            Ok(db) => Some(TestApp::spawn(db).await),
            Err(e) => panic!("{POSTGRES_URL_ENV} is set but PostgreSQL is unusable: {e}"),
        }
    }

    /// One app per available backend (SQLite always, PostgreSQL when
    /// `PAYHOST_TEST_POSTGRES_URL` is set).
    pub async fn each_backend() -> Vec<TestApp> {
        let mut apps = Vec::new();
        for db in payhost::store::testing::fresh_databases().await {
            apps.push(TestApp::spawn(db).await);
        }
        apps
    }

    /// Stop the server and drop the database.
    pub async fn finish(mut self) {
        // Detached mutations outlive the server task; let them end before
        // their database is dropped.
        self.quiesce().await;
        self.server.abort();
        drop(self.workers.take());
        if let Some(janitor) = self.janitor.take() {
            janitor.abort();
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }

    /// A request builder for `path` with optional bearer token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Send and return (status, JSON body or Null).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("request reaches the app");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Operator call.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self.request(method, path, Some(ADMIN_TOKEN));
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }

    /// Tenant call.
    pub async fn tenant(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self.request(method, path, Some(key));
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }

    /// Create a tenant and an API key; returns (tenant id, key).
    pub async fn new_tenant(&self, name: &str) -> (String, String) {
        let (status, tenant) = self
            .admin(
                reqwest::Method::POST,
                "/admin/tenants",
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{tenant}");
        let id = tenant["id"].as_str().expect("tenant id").to_string();
        let (status, key) = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/tenants/{id}/api-keys"),
                Some(serde_json::json!({})),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        (id, key["key"].as_str().expect("key").to_string())
    }

    /// Save Stripe settings for a tenant with a fresh emulator key; returns the key.
    pub async fn save_stripe(
        &self,
        tenant_key: &str,
        priority: i64,
        currencies: &[&str],
    ) -> String {
        let stripe_key = stripe_test_key();
        let (status, body) = self
            .tenant(
                tenant_key,
                reqwest::Method::PUT,
                "/v1/gateways/stripe",
                Some(serde_json::json!({
                    "credentials": {"secret-key": stripe_key},
                    "webhook_secret": WEBHOOK_SECRET,
                    "priority": priority,
                    "currencies": currencies,
                })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        stripe_key
    }
}

/// The janitor every test app runs: a pass every 50 ms (real time), acting
/// only on orders older than [`JANITOR_MIN_AGE`] on the app's clock, which
/// no test advances unless it tests the janitor.
fn janitor_config() -> payhost::config::JanitorConfig {
    payhost::config::JanitorConfig {
        interval_ms: 50,
        min_age_secs: JANITOR_MIN_AGE.as_secs(),
        backoff_base_secs: JANITOR_BACKOFF_BASE.as_secs(),
        backoff_max_secs: 3600,
        ..payhost::config::JanitorConfig::default()
    }
}

/// The test apps' `janitor.min_age_secs`.
pub const JANITOR_MIN_AGE: Duration = Duration::from_secs(15 * 60);
/// The test apps' `janitor.backoff_base_secs`.
pub const JANITOR_BACKOFF_BASE: Duration = Duration::from_secs(60);

/// One master key per test process, so sibling instances can open each
/// other's ciphertexts.
fn shared_master_key() -> String {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(payhost::gateways::Vault::generate_key)
        .clone()
}

/// One test per backend: `backend_test!(async fn name(app) { … })` expands to
/// a module `name` holding `#[tokio::test] async fn sqlite()` and
/// `async fn postgres()`, each running the body on a fresh [`TestApp`] of
/// its backend, so each backend passes or fails as a test of its own. The
/// PostgreSQL one returns early, saying it skipped, when
/// `PAYHOST_TEST_POSTGRES_URL` is unset. The body ends with
/// `app.finish().await`. Doc comments and attributes before `async fn` go on
/// the module; the body sees the enclosing module's items.
#[macro_export]
macro_rules! backend_test {
    ($(#[$meta:meta])* async fn $name:ident($app:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::TestApp) $body

            #[tokio::test]
            async fn sqlite() {
                run($crate::TestApp::sqlite().await).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(app) = $crate::TestApp::postgres().await else {
                    eprintln!("skipped: {} is not set", $crate::POSTGRES_URL_ENV);
                    return;
                };
                run(app).await;
            }
        }
    };
}

impl TestApp {
    /// Waits for detached mutations to end, then asserts that the balance
    /// projection and the daily aggregates equal the fold of the ledger rows
    /// (`payhost ledger verify`'s check), naming every difference.
    pub async fn assert_ledger_verified(&self) {
        self.quiesce().await;
        let report = payhost::ledger::verify_projections(&self.store, None)
            .await
            .expect("verify the ledger projections");
        assert!(
            report.is_clean(),
            "[{}] projections differ from the rows: {:#?}",
            self.backend,
            report.differences
        );
        assert!(
            report.balances_checked > 0,
            "[{}] nothing was booked",
            self.backend
        );
    }
}
