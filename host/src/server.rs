//! Assembling and running the service: runtime, providers, sandbox gateways
//! and the HTTP API.

use std::sync::Arc;

use anyhow::Context;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::runtime::{ProviderRegistry, Runtime};
use crate::sandbox::StripeSandbox;

/// Running sandbox gateways; dropping this stops them.
pub struct Sandboxes {
    /// The Stripe sandbox.
    pub stripe: StripeSandbox,
}

impl Sandboxes {
    /// Start every sandbox gateway on an ephemeral loopback port.
    pub async fn start() -> anyhow::Result<Sandboxes> {
        let stripe = StripeSandbox::start(0)
            .await
            .context("cannot start the Stripe sandbox")?;
        Ok(Sandboxes { stripe })
    }

    /// Point the first-party providers at the sandboxes unless the operator
    /// configured a base URL explicitly.
    pub fn apply(&self, config: &mut Config) {
        let stripe = config.providers.entry("stripe".into()).or_default();
        if stripe.base_url.is_none() {
            stripe.base_url = Some(self.stripe.base_url());
        }
    }
}

/// Build the runtime and provider registry described by `config`.
pub async fn load_providers(config: &Config) -> anyhow::Result<(Runtime, Arc<ProviderRegistry>)> {
    let runtime = Runtime::new(config.sandbox_limits())?;
    let registry = ProviderRegistry::load(
        &runtime,
        config.bundled_providers,
        config.providers_dir.as_deref(),
        |m| config.provider_settings(&m.id),
    )
    .await?;
    Ok((runtime, Arc::new(registry)))
}

/// `payhost serve`: run until Ctrl-C / SIGTERM, then drain and stop.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    let sandboxes = if config.sandbox {
        let s = Sandboxes::start().await?;
        s.apply(&mut config);
        tracing::info!(stripe = %s.stripe.base_url(), "sandbox gateways running (offline mode)");
        Some(s)
    } else {
        None
    };
    let (_runtime, providers) = load_providers(&config).await?;
    for p in providers.iter() {
        tracing::info!(provider = p.id(), source = p.source(), version = %p.manifest().version, "provider loaded");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "payhost listening");
    let app = api::router(AppState { providers });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    drop(sandboxes);
    Ok(())
}

/// `payhost sandbox`: run only the sandbox gateways.
pub async fn sandbox_only() -> anyhow::Result<()> {
    let s = Sandboxes::start().await?;
    println!("stripe sandbox: {}", s.stripe.base_url());
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
