//! The `payhost` binary: parse the command line, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAYHOST_LOG")
                .unwrap_or_else(|_| "info,payhost=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = payhost::cli::Cli::parse();
    match payhost::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
