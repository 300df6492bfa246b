//! Assembling and running the service: store, runtime, providers, vault,
//! gateway emulators and the HTTP API.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::api::{self, AppState};
use crate::checkout::{Checkouts, GatewayLessOrders, Refunds};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Secret};
use crate::emulators::StripeEmulator;
use crate::features::Features;
use crate::gateways::{Gateways, Vault};
use crate::janitor::Janitor;
use crate::quota::Quotas;
use crate::ratelimit::RateLimiter;
use crate::runtime::{ProviderRegistry, Runtime};
use crate::store::{Store, sqlite_file_url};
use crate::tenancy::{ResolverOptions, Tenancy, TenantResolver};

/// Running gateway emulators; dropping this stops them.
pub struct Emulators {
    /// The Stripe emulator.
    pub stripe: StripeEmulator,
}

impl Emulators {
    /// Start every gateway emulator on an ephemeral loopback port.
    pub async fn start() -> anyhow::Result<Emulators> {
        let stripe = StripeEmulator::start(0)
            .await
            .context("cannot start the Stripe emulator")?;
        Ok(Emulators { stripe })
    }

    /// Point the first-party providers at the emulators unless the operator
    /// configured a base URL explicitly. Without bundled providers only an
    /// existing `[providers.stripe]` section is pointed there: a section
    /// created here for a provider that is not loaded would fail the start.
    pub fn apply(&self, config: &mut Config) {
        if !config.bundled_providers && !config.providers.contains_key("stripe") {
            return;
        }
        let stripe = config.providers.entry("stripe".into()).or_default();
        if stripe.base_url.is_none() {
            stripe.base_url = Some(self.stripe.base_url());
        }
    }
}

/// Build the runtime and provider registry described by `config`. Fails
/// when a `[providers.<id>]` section names no loaded provider.
pub async fn load_providers(config: &Config) -> anyhow::Result<(Runtime, Arc<ProviderRegistry>)> {
    let runtime = Runtime::new(config.sandbox_limits())?;
    let registry = ProviderRegistry::load(
        &runtime,
        config.bundled_providers,
        config.providers_dir.as_deref(),
        |m| config.provider_settings(&m.id),
    )
    .await?;
    config.check_provider_sections(registry.iter().map(|p| p.id()))?;
    Ok((runtime, Arc::new(registry)))
}

/// Read a secret file in `data_dir`, or create it (mode 0600) with `make`.
fn secret_file(
    data_dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> anyhow::Result<Secret> {
    let path = data_dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(Secret::new(existing.trim()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let value = make();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(path = %path.display(), "generated {name}; set it in the config for production");
    Ok(Secret::new(value))
}

/// The vault described by `config` (generating a development key if none).
pub fn vault(config: &Config) -> anyhow::Result<Vault> {
    let active = match &config.master_key {
        Some(k) => k.clone(),
        None => secret_file(&config.data_dir, "master.key", Vault::generate_key)?,
    };
    let mut keys = BTreeMap::new();
    keys.insert(
        config.master_key_id.clone(),
        Vault::decode_key(&config.master_key_id, active.expose())?,
    );
    for (id, key) in &config.retired_master_keys {
        keys.insert(id.clone(), Vault::decode_key(id, key.expose())?);
    }
    Ok(Vault::new(&config.master_key_id, keys)?)
}

/// The database URL (default: SQLite in the data dir).
pub fn database_url(config: &Config) -> anyhow::Result<String> {
    match &config.database_url {
        Some(url) => Ok(url.clone()),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
            Ok(sqlite_file_url(&config.data_dir.join("payhost.db")))
        }
    }
}

/// Everything the HTTP API needs, from a migrated store and loaded providers.
/// Starts the tenant-cache invalidation listener (PostgreSQL NOTIFY or Redis
/// pub/sub) when the deployment has more than one possible instance.
pub async fn app_state(
    config: &Config,
    database_url: &str,
    store: Store,
    providers: Arc<ProviderRegistry>,
) -> anyhow::Result<AppState> {
    app_state_with_clock(
        config,
        database_url,
        store,
        providers,
        Arc::new(SystemClock),
        true,
        Arc::new(SystemClock),
    )
    .await
}

/// [`app_state`] with the wall clock that feature-override expiry, quota
/// periods and the webhook pipeline are judged against, the janitor's clock
/// (tests move both), and whether checkouts count against quotas at all
/// (`false` only for the checkout benchmark's baseline).
pub async fn app_state_with_clock(
    config: &Config,
    database_url: &str,
    store: Store,
    providers: Arc<ProviderRegistry>,
    clock: Arc<dyn Clock>,
    count_quotas: bool,
    janitor_clock: Arc<dyn Clock>,
) -> anyhow::Result<AppState> {
    let resolver = TenantResolver::new(
        store.clone(),
        ResolverOptions {
            redis_url: config.redis_url.clone(),
            ..ResolverOptions::default()
        }
        .with_database_url(database_url),
    )?;
    resolver.start_invalidation_listener().await?;
    let admin_token = match &config.admin_token {
        Some(t) => t.clone(),
        None => secret_file(&config.data_dir, "admin-token", || {
            format!("adm_{}", hex::encode(rand::random::<[u8; 24]>()))
        })?,
    };
    let gateways = Gateways::new(store.clone(), Arc::new(vault(config)?), providers.clone())
        .follow(resolver.broadcast());
    let features = Features::start(
        store.clone(),
        providers.iter().map(|p| p.id()),
        clock.clone(),
        resolver.broadcast().clone(),
    )
    .await
    .context("cannot load the features")?;
    let quotas = Quotas::new(store.clone(), Arc::new(features.clone()), clock.clone());
    let quotas = if count_quotas {
        quotas
    } else {
        quotas.uncounted()
    };
    let rate_limiter = RateLimiter::new(config.rate_limit_options())?;
    rate_limiter.set_rate_for(api_rate(
        &features,
        config.rate_limit_options().requests_per_minute,
    ));
    let webhooks = crate::webhooks::Webhooks::new(
        store.clone(),
        gateways.clone(),
        &config.webhooks,
        &config.jobs,
        crate::webhooks::Clock::from(clock),
        rate_limiter.clone(),
    );
    let checkouts = Checkouts::new(
        store.clone(),
        gateways.clone(),
        features.clone(),
        quotas.clone(),
    );
    Ok(AppState {
        janitor: Janitor::new(
            store.clone(),
            checkouts.clone(),
            config.janitor.options(),
            janitor_clock,
        ),
        checkouts,
        features,
        webhooks,
        orders: GatewayLessOrders::new(store.clone()),
        refunds: Refunds::new(store.clone(), gateways.clone()),
        tenancy: Tenancy::new(store.clone(), resolver.clone()),
        store,
        providers,
        gateways,
        admin_token,
        max_body_bytes: config.max_body_kib * 1024,
        resolver,
        mutations: api::Mutations::new(config.max_mutations_in_progress),
        rate_limiter,
        quotas,
        webhook_registrar: None,
    })
}

/// Starts the janitor's passes when `[janitor] enabled`; aborting the
/// handle stops them (a pass stopped midway leaves its claim to lapse).
pub fn start_janitor(config: &Config, state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    config
        .janitor
        .enabled
        .then(|| state.janitor.clone().spawn())
}

/// How long `serve` waits, after the listener closed, for mutations still in
/// progress.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// `payhost serve`: run until Ctrl-C / SIGTERM, then drain and stop.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    let emulators = if config.emulators {
        let s = Emulators::start().await?;
        s.apply(&mut config);
        tracing::info!(stripe = %s.stripe.base_url(), "gateway emulators running (offline mode)");
        Some(s)
    } else {
        None
    };
    let url = database_url(&config)?;
    let store = Store::connect_and_migrate(&url).await?;
    let (_runtime, providers) = load_providers(&config).await?;
    for p in providers.iter() {
        tracing::info!(provider = p.id(), source = p.source(), version = %p.manifest().version, "provider loaded");
    }
    let mut state = app_state(&config, &url, store, providers).await?;
    if let Some(emulators) = &emulators {
        let public = config.public_base();
        state.webhook_registrar = Some(crate::emulators::WebhookRegistrar::new(
            &emulators.stripe.base_url(),
            &public,
        )?);
        tracing::info!(%public, "Stripe webhooks of tenants without a secret go to {public}/webhooks/<tenant>/stripe");
    }
    let mutations = state.mutations.clone();
    // Applies stored webhook events; stops when dropped at the end.
    let workers = state.webhooks.start();
    let janitor = start_janitor(&config, &state);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "payhost listening");
    crate::http_server::serve_http(
        listener,
        api::router(state),
        config.http_options(),
        shutdown_signal(),
    )
    .await?;
    if let Some(janitor) = janitor {
        janitor.abort();
    }
    // Mutations whose clients hung up still run in their own tasks: let them
    // finish (book, store their idempotent response) before the process ends.
    if !mutations.idle(SHUTDOWN_DRAIN).await {
        tracing::warn!(
            in_progress = mutations.in_progress(),
            "mutations still running at shutdown; their orders stay pending for a retry to resume"
        );
    }
    drop(workers);
    drop(emulators);
    Ok(())
}

/// `payhost migrate`: apply pending migrations and exit.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = Store::connect(&database_url(config)?).await?;
    let report = store.migrate().await?;
    println!("{report:?}");
    Ok(())
}

/// `payhost emulators`: run only the gateway emulators.
pub async fn emulators_only() -> anyhow::Result<()> {
    let s = Emulators::start().await?;
    println!("stripe emulator: {}", s.stripe.base_url());
    shutdown_signal().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// The request rate of a tenant's API keys: its `api.requests_per_minute`
/// when a plan, an override or a kill switch sets it, else the configured
/// `rate_limit.requests_per_minute` (the feature's own default is
/// unlimited, so an unconfigured tenant keeps the platform's rate).
pub fn api_rate(features: &Features, configured: u64) -> crate::ratelimit::RateFor {
    let features = features.clone();
    Arc::new(move |tenant| {
        let e = features.evaluate(tenant, crate::features::keys::API_REQUESTS_PER_MINUTE);
        match (e.source, e.value) {
            (crate::features::Source::Default, _) => Some(configured),
            (_, crate::features::FeatureValue::Limit(n)) => n,
            (_, crate::features::FeatureValue::Flag(on)) => Some(u64::from(on)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_section_for_a_provider_that_is_not_loaded_refuses_the_start() {
        let mut config = Config {
            bundled_providers: false,
            ..Config::default()
        };
        config
            .providers
            .insert("strpie".into(), crate::config::ProviderConfig::default());
        let Err(err) = load_providers(&config).await else {
            panic!("a typo in a section name refuses the start");
        };
        let err = err.to_string();
        assert!(err.contains("providers.strpie"), "{err}");
    }

    #[tokio::test]
    async fn the_emulators_add_a_section_only_for_the_bundled_stripe() {
        let emulators = Emulators::start().await.expect("emulators start");
        let mut without = Config {
            bundled_providers: false,
            ..Config::default()
        };
        emulators.apply(&mut without);
        without
            .check_provider_sections(std::iter::empty())
            .expect("no section was added for a provider that is not loaded");

        let mut bundled = Config::default();
        emulators.apply(&mut bundled);
        assert_eq!(
            bundled.providers["stripe"].base_url.as_deref(),
            Some(emulators.stripe.base_url().as_str())
        );
    }
}
