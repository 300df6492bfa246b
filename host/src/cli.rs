//! Command line: `payhost serve`, `payhost provider inspect`, `payhost emulators`,
//! `payhost migrate`, `payhost ledger verify`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::runtime::{CONTRACT_VERSION, Runtime};

/// payhost: payments host with sandboxed WebAssembly gateway components.
#[derive(Debug, Parser)]
#[command(name = "payhost", version, about)]
pub struct Cli {
    /// Config file (TOML). `PAYHOST_*` environment variables override it.
    #[arg(long, short, global = true, env = "PAYHOST_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (by default with gateway emulators on loopback).
    Serve,
    /// Provider component tools.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Run only the gateway emulators, printing their base URLs.
    Emulators,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Ledger tools.
    #[command(subcommand)]
    Ledger(LedgerCommand),
}

/// `payhost ledger …`
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute the balance projection and the daily aggregates from the
    /// ledger rows and print every difference; exits non-zero if there is one.
    Verify {
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `payhost provider …`
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Load a component as the host would and print its manifest, or the
    /// reason it is refused.
    Inspect {
        /// Path to the component (`.wasm`).
        file: PathBuf,
    },
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = std::env::vars().filter(|(k, _)| k != "PAYHOST_CONFIG");
    let config = Config::load(cli.config.as_deref(), env)?;
    match cli.command {
        Command::Serve => crate::server::serve(config).await,
        Command::Provider(ProviderCommand::Inspect { file }) => inspect(&config, &file).await,
        Command::Emulators => crate::server::emulators_only().await,
        Command::Migrate => crate::server::migrate(&config).await,
        Command::Ledger(LedgerCommand::Verify { tenant }) => verify(&config, tenant).await,
    }
}

/// `payhost ledger verify`: reads only; an error (exit status 1) when a
/// projection differs from the rows.
async fn verify(config: &Config, tenant: Option<String>) -> anyhow::Result<()> {
    let tenant = tenant
        .as_deref()
        .map(crate::store::TenantId::parse)
        .transpose()
        .context("--tenant")?;
    let store = crate::store::Store::connect(&crate::server::database_url(config)?).await?;
    let report = crate::ledger::verify_projections(&store, tenant.as_ref()).await?;
    println!(
        "checked {} balance entries and {} daily entries",
        report.balances_checked, report.daily_checked
    );
    for d in &report.differences {
        println!(
            "DIFFERENCE {} {} {}: rows give {}, stored {}",
            d.table, d.key, d.field, d.expected, d.stored
        );
    }
    if report.is_clean() {
        println!("ledger projections match the rows");
        Ok(())
    } else {
        anyhow::bail!(
            "{} projection value(s) differ from the ledger rows",
            report.differences.len()
        )
    }
}

async fn inspect(config: &Config, file: &PathBuf) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = Runtime::new(config.sandbox_limits())?;
    let source = file.display().to_string();
    let provider = runtime
        .load_with(&source, &bytes, |m| config.provider_settings(&m.id))
        .await?;
    let m = provider.manifest();
    println!("file:        {source}");
    println!("contract:    payhost:provider@{CONTRACT_VERSION}");
    println!("id:          {}", m.id);
    println!("name:        {}", m.name);
    println!("version:     {}", m.version);
    println!("currencies:  {}", m.currencies.join(" "));
    println!("capabilities: {:?}", m.capabilities);
    println!("base url:    {}", m.default_base_url);
    println!("credentials:");
    for f in &m.credential_fields {
        println!(
            "  - {} ({}){}{}",
            f.name,
            f.label,
            if f.secret { " secret" } else { "" },
            if f.required { " required" } else { "" }
        );
    }
    println!("outbound allow-list:");
    for o in &provider.policy().allowed {
        println!("  - {o}");
    }
    Ok(())
}
