//! `attestation-agent`: the guest process that proves what the VM runs. Serves
//! `attestation_agent.AttestationAgentService` and `keyprovider.KeyProviderService`
//! over ttrpc on a unix socket.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use attestation_agent::service::{serve, AttestationAgent};
use attester::detect::{AttesterKind, RealHost};
use attester::kbs_client::{ClientOptions, KbsClient};
use attester::sample::SampleAttester;
use attester::Attester;
use clap::Parser;

/// Guest attestation agent: TEE evidence, KBS tokens and resources, and the
/// ocicrypt `attestation-agent` keyprovider, over ttrpc.
///
/// Example: attestation-agent --kbs-url https://kbs:8080 --kbs-cert /etc/kbs-ca.pem
///   --init-data /run/initdata.toml
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Unix socket to serve on (a stale socket file is replaced).
    #[arg(long, default_value = attestation_agent::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// KBS base URL for GetToken, GetResource and UnWrapKey (without it those fail).
    #[arg(long, env = "AA_KBS_URL")]
    kbs_url: Option<String>,
    /// PEM CA certificate of the KBS's TLS certificate.
    #[arg(long)]
    kbs_cert: Option<PathBuf>,
    /// Evidence source: auto (detect SNP/TDX/TPM; fails without a TEE), sample
    /// (development only, never trusted by default policies), snp, tdx, tpm.
    #[arg(long, default_value = "auto")]
    attester: AttesterKind,
    /// Initdata TOML of the pod: its digest must be the one bound into the TEE
    /// (refuses to start otherwise) and it is sent to the KBS with the evidence.
    #[arg(long)]
    init_data: Option<PathBuf>,
    /// Sample attester only: the initdata digest (hex) the pretend TEE carries.
    /// Default: the digest of --init-data. Lets tests show the mismatch refusal.
    #[arg(long, hide = true)]
    sample_init_data_digest: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let init_data = cli
        .init_data
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let digest = init_data
        .as_deref()
        .map(|t| coco_jose::binding::parse_init_data("toml", t))
        .transpose()
        .context("initdata")?
        .map(|d| d.digest);

    let attester: Arc<dyn Attester> = match cli.attester {
        AttesterKind::Sample => Arc::new(SampleAttester::reporting(
            cli.sample_init_data_digest.as_deref(),
            digest.as_deref(),
        )),
        kind => Arc::from(attester::detect::build(kind, &RealHost)?),
    };
    if let Some(d) = &digest {
        attester
            .bind_init_data(d)
            .context("binding the initdata to the TEE")?;
        tracing::info!(digest = %hex::encode(d), "initdata bound");
    }

    let kbs = match cli.kbs_url {
        Some(url) => {
            let ca_pem = cli
                .kbs_cert
                .as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()?;
            Some(KbsClient::new(
                &url,
                attester.clone(),
                ClientOptions {
                    ca_pem,
                    init_data_toml: init_data,
                    ..Default::default()
                },
            )?)
        }
        None => {
            tracing::warn!("no --kbs-url: GetToken, GetResource and UnWrapKey will fail");
            None
        }
    };

    let mut server = serve(AttestationAgent::new(attester, kbs), &cli.socket).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await?;
    let _ = std::fs::remove_file(&cli.socket);
    Ok(())
}
