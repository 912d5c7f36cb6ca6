//! Operator/test front end of the guest image puller.
//!
//! The guest agent exposes the same command as `coco-agent image pull` with
//! its attested KBS client as key broker. This stand-alone binary can read
//! KBS-style resources from a local directory instead (`--resource-dir`), for
//! operators preparing images and for tests without a KBS.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use image_mgmt::cli::{run_pull, PullArgs};
use image_mgmt::keybroker::{BrokerError, KeyBroker};

#[derive(Debug, Parser)]
#[command(
    name = "image-pull",
    version,
    about = "Pull, verify, decrypt and unpack an OCI image"
)]
struct Cli {
    #[command(flatten)]
    pull: PullArgs,
    /// Serve KBS resources `repo/type/tag` from files below this directory
    /// (instead of a KBS). Not for use in a guest.
    #[arg(long)]
    resource_dir: Option<PathBuf>,
}

/// Reads `<dir>/<repo>/<type>/<tag>` like a KBS local-filesystem repository.
#[derive(Debug)]
struct ResourceDir(PathBuf);

#[async_trait::async_trait]
impl KeyBroker for ResourceDir {
    async fn resource(&self, path: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, BrokerError> {
        // `path` was validated by kbs_resource_path: three safe components.
        let file = self.0.join(path);
        Ok(zeroize::Zeroizing::new(
            tokio::fs::read(&file)
                .await
                .map_err(|e| format!("reading resource {}: {e}", file.display()))?,
        ))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let broker = cli
        .resource_dir
        .map(|d| Arc::new(ResourceDir(d)) as Arc<dyn KeyBroker>);
    run_pull(cli.pull, broker).await
}
