//! Shared harness for the end-to-end tests in `tests/tests/`.
//!
//! Components are compiled once per test process (one shared `Runtime`
//! per limit set, one `LoadedProvider` per component), because compiling is
//! the expensive part; every call still gets a fresh instance.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use payhost::runtime::{LoadError, LoadedProvider, ProviderSettings, Runtime, SandboxLimits};
use tokio::sync::OnceCell;

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

/// A Stripe sandbox shared by the whole test process. It runs on its own
/// thread and tokio runtime, so it outlives each test's runtime.
pub fn stripe_sandbox() -> &'static payhost::sandbox::StripeSandbox {
    static SANDBOX: std::sync::OnceLock<&'static payhost::sandbox::StripeSandbox> =
        std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("sandbox runtime");
            rt.block_on(async move {
                let sandbox = payhost::sandbox::StripeSandbox::start(0)
                    .await
                    .expect("start stripe sandbox");
                let sandbox: &'static payhost::sandbox::StripeSandbox =
                    Box::leak(Box::new(sandbox));
                tx.send(sandbox).expect("hand over sandbox");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("sandbox started")
    })
}

/// The bundled Stripe component, compiled once per process and pointed at
/// [`stripe_sandbox`].
pub async fn stripe() -> Arc<LoadedProvider> {
    static CELL: OnceCell<Arc<LoadedProvider>> = OnceCell::const_new();
    CELL.get_or_init(|| async {
        let settings = ProviderSettings {
            base_url: Some(stripe_sandbox().base_url()),
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

/// A fresh, unique Stripe test key (the sandbox scopes objects per key).
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
