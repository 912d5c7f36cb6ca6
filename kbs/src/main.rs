//! `kbs`: the Key Broker Service.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Key Broker Service: releases secrets to workloads that prove, by hardware
/// attestation (SEV-SNP, TDX, TPM), that they run what you expect.
///
/// Speaks Trustee's RCAR protocol (`/kbs/v0/auth`, `/attest`, `/resource`) and
/// admin API, so Trustee's kbs-client and guest-components' attestation agent
/// work against it.
///
/// Example:  kbs --config /etc/coco/kbs.toml
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML); see docs/kbs.md for every setting.
    #[arg(short, long, env = "KBS_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify SEV-SNP, TDX or TPM evidence offline and print its claims as JSON
    /// (exit 0), or the reason it was rejected (non-zero). For operators
    /// debugging an attestation, and for checking captured evidence.
    ///
    /// Example: kbs verify-evidence --tee snp --evidence report.bin --vcek vcek.der
    VerifyEvidence(kbs::verifier::cli::VerifyEvidenceArgs),
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::VerifyEvidence(args)) => {
            let claims = kbs::verifier::cli::run(&args)?;
            println!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(())
        }
        Some(Command::CheckConfig { config }) => {
            let cfg = kbs::config::KbsConfig::load(&config)?;
            kbs::server::Kbs::new(cfg).context("configuration does not start")?;
            println!("{}: ok", config.display());
            Ok(())
        }
        None => {
            let path = cli.config.context("--config is required")?;
            let cfg = kbs::config::KbsConfig::load(&path)?;
            let kbs = kbs::server::Kbs::new(cfg).context("starting the KBS")?;
            kbs::server::serve(kbs, shutdown_signal()).await?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
