//! Host-side tool: encrypt the layers of an OCI image layout for
//! Confidential Containers guests, and act as an ocicrypt `cmd` keyprovider.
//!
//! Registry images: `skopeo copy docker://REF oci:DIR:TAG`, encrypt, then
//! `skopeo copy oci:DIR:TAG-enc docker://REF-enc` (copying encrypted layers
//! needs no keys).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use image_mgmt::encrypt::{encrypt_layout, read_small, Layout, Recipients};
use image_mgmt::keybroker::kbs_resource_path;
use image_mgmt::ocicrypt::keyprovider::handle_request;
use image_mgmt::ocicrypt::keys::PublicKey;
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(
    name = "coco-encrypt",
    version,
    about = "Encrypt OCI images for Confidential Containers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Encrypt the plain layers of a tagged image in an OCI layout.
    Encrypt(EncryptArgs),
    /// Serve one ocicrypt keyprovider request (JSON on stdin, reply on stdout),
    /// as a `cmd` provider named `attestation-agent` in ocicrypt.conf.
    Keyprovider(KeyproviderArgs),
}

#[derive(Debug, clap::Args)]
struct EncryptArgs {
    /// OCI image layout directory (from `skopeo copy ... oci:DIR:TAG`).
    #[arg(long)]
    layout: PathBuf,
    /// Tag of the plain image in the layout.
    #[arg(long)]
    tag: String,
    /// Tag for the encrypted image (default: TAG-encrypted).
    #[arg(long)]
    out_tag: Option<String>,
    /// JWE recipient: `jwe:PUBLIC.pem` (RSA, P-256, P-384). Repeatable.
    #[arg(long = "recipient")]
    recipients: Vec<String>,
    /// Wrap for the `attestation-agent` keyprovider with the KEK stored in the
    /// KBS at this resource, e.g. `kbs:///default/image-kek/app`.
    #[arg(long)]
    kid: Option<String>,
    /// Use this existing 32-byte KEK instead of generating one.
    #[arg(long, requires = "kid")]
    kek_file: Option<PathBuf>,
    /// Write the (generated) KEK here, e.g. to load it into a KBS later.
    #[arg(long, requires = "kid")]
    kek_out: Option<PathBuf>,
    /// Upload the KEK to this KBS (`http(s)://host:port`) through the admin API.
    #[arg(long, requires = "kid")]
    kbs: Option<String>,
    /// File holding the KBS admin bearer token (JWT).
    #[arg(long, requires = "kbs")]
    admin_token_file: Option<PathBuf>,
    /// CA certificate (PEM) of an https KBS.
    #[arg(long, requires = "kbs")]
    kbs_cert: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct KeyproviderArgs {
    /// The 32-byte KEK.
    #[arg(long)]
    kek_file: PathBuf,
    /// Resource id written into new annotations, `kbs:///repo/type/tag`.
    #[arg(long)]
    kid: String,
}

async fn upload(
    kbs: &str,
    path: &str,
    kek: &[u8],
    token: &str,
    ca: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let mut b = reqwest::Client::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        b = b.tls_certs_only([reqwest::Certificate::from_pem(&pem)?]);
    }
    let url = format!("{}/kbs/v0/resource/{path}", kbs.trim_end_matches('/'));
    let resp = b
        .build()?
        .post(&url)
        .bearer_auth(token.trim())
        .header("Content-Type", "application/octet-stream")
        .body(kek.to_vec())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("KBS refused the KEK upload: {status} {body}");
    }
    Ok(())
}

async fn encrypt(a: EncryptArgs) -> anyhow::Result<()> {
    let mut to = Recipients::default();
    for r in &a.recipients {
        let path = r
            .strip_prefix("jwe:")
            .with_context(|| format!("recipient {r:?} must be jwe:PUBLIC.pem"))?;
        let pem = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        to.jwe
            .push(PublicKey::from_pem(&pem).with_context(|| path.to_owned())?);
    }
    if let Some(kid) = &a.kid {
        let path = kbs_resource_path(kid)?;
        let kek = match &a.kek_file {
            Some(f) => read_small(f)?,
            None => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("random: {e}"))?;
                k
            }
        };
        if kek.len() != 32 {
            bail!("KEK must be 32 bytes, got {}", kek.len());
        }
        if a.kek_out.is_none() && a.kbs.is_none() && a.kek_file.is_none() {
            bail!("the generated KEK would be lost: give --kek-out and/or --kbs");
        }
        if let Some(out) = &a.kek_out {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.write_all(&kek)?;
        }
        if let Some(kbs) = &a.kbs {
            let tf = a
                .admin_token_file
                .as_ref()
                .context("--kbs needs --admin-token-file")?;
            let token =
                std::fs::read_to_string(tf).with_context(|| format!("reading {}", tf.display()))?;
            upload(kbs, &path, &kek, &token, a.kbs_cert.as_ref()).await?;
            eprintln!("KEK stored in the KBS at {path}");
        }
        to.provider = Some((kek, kid.clone()));
    }
    let out_tag = a
        .out_tag
        .clone()
        .unwrap_or_else(|| format!("{}-encrypted", a.tag));
    let layout = Layout::open(&a.layout)?;
    let (tag, layout2, to2) = (a.tag.clone(), layout.clone(), to.clone());
    let ot = out_tag.clone();
    let d =
        tokio::task::spawn_blocking(move || encrypt_layout(&layout2, &tag, &ot, &to2)).await??;
    println!("{}:{out_tag} {d}", a.layout.display());
    Ok(())
}

fn keyprovider(a: KeyproviderArgs) -> anyhow::Result<()> {
    kbs_resource_path(&a.kid)?;
    let kek = read_small(&a.kek_file)?;
    let mut input = Vec::new();
    std::io::stdin()
        .take(16 << 20)
        .read_to_end(&mut input)
        .context("reading request")?;
    let out = handle_request(&input, &kek, &a.kid)?;
    std::io::stdout().write_all(&out)?;
    Ok(())
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
    match Cli::parse().cmd {
        Cmd::Encrypt(a) => encrypt(a).await,
        Cmd::Keyprovider(a) => keyprovider(a),
    }
}
