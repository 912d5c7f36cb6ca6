//! `kbs-client`: attest, fetch resources and administer a KBS from a shell.

mod admin;

use anyhow::{bail, Context};
use attester::kbs_client::{ClientOptions, KbsClient, TeeKeyKind};
use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;

/// Client for the Key Broker Service (same verbs as Trustee's kbs-client).
///
/// Attest and fetch a resource (as a workload would):
///   kbs-client --url https://kbs:8080 --cert-file ca.pem get-resource --path default/key/1
///
/// Administer (admin key pair made once with `gen-admin-key`):
///   kbs-client --url URL config --auth-private-key admin.key set-resource --path default/key/1 --resource-file key.bin
///   kbs-client mint-admin-token --private-key admin.key --ttl 1h > token
///   kbs-client --url URL config --admin-token-file token set-resource-policy --policy-file policy.rego
///
/// Register a pod's initdata (the default attestation policies trust only
/// evidence bound to a registered one):
///   kbs-client --url URL config --auth-private-key admin.key register-initdata initdata.toml
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// KBS base URL.
    #[arg(
        long,
        env = "KBS_URL",
        global = true,
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// PEM CA certificate of the KBS's TLS certificate (default: public roots).
    #[arg(long, global = true)]
    cert_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AttesterChoice {
    /// Detect the TEE (SEV-SNP, TDX, TPM); fail if there is none.
    Auto,
    /// No TEE: development only, never trusted by the default policies.
    Sample,
    Snp,
    Tdx,
    Tpm,
}

#[derive(Debug, clap::Args)]
struct AttestArgs {
    /// Evidence source.
    #[arg(long, value_enum, default_value = "auto")]
    attester: AttesterChoice,
    /// Initdata TOML to send with the evidence.
    #[arg(long)]
    init_data: Option<PathBuf>,
    /// Kind of the ephemeral TEE key the resource is encrypted to.
    #[arg(long, value_enum, default_value = "p256")]
    tee_key: TeeKeyChoice,
    /// Same as `--tee-key rsa` (kept for existing scripts).
    #[arg(long, hide = true)]
    rsa: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TeeKeyChoice {
    /// EC P-256, ECDH-ES+A256KW (the default of Trustee's clients too).
    P256,
    /// EC P-521, ECDH-ES+A256KW.
    P521,
    /// RSA-2048, RSA-OAEP-256.
    Rsa,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the attestation handshake and print the token.
    Attest(AttestArgs),
    /// Attest, then fetch a resource and print it base64-encoded (or write it raw).
    GetResource {
        /// Resource path repo/type/tag (or kbs:///repo/type/tag).
        #[arg(long)]
        path: String,
        /// Write the raw resource here instead of printing base64.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        attest: AttestArgs,
    },
    /// Admin verbs.
    Config(admin::ConfigArgs),
    /// Make an admin key pair (PKCS#8 private key, SPKI public key for kbs.toml).
    GenAdminKey {
        #[arg(long)]
        private_key_out: PathBuf,
        #[arg(long)]
        public_key_out: PathBuf,
        /// ed25519 or p256.
        #[arg(long, default_value = "ed25519")]
        alg: String,
    },
    /// Print an admin token signed with an admin private key.
    MintAdminToken {
        #[arg(long)]
        private_key: PathBuf,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

/// The attester, with the initdata (if any) bound to it: a TEE must carry its
/// digest from launch; the sample TEE reports it.
fn attester_for(
    choice: AttesterChoice,
    init_data_toml: Option<&str>,
) -> anyhow::Result<Arc<dyn attester::Attester>> {
    use attester::detect::AttesterKind;
    let digest = init_data_toml
        .map(coco_jose::initdata::Initdata::parse)
        .transpose()
        .context("initdata")?
        .map(|d| d.digest().to_vec());
    let kind = match choice {
        AttesterChoice::Auto => AttesterKind::Auto,
        AttesterChoice::Sample => AttesterKind::Sample,
        AttesterChoice::Snp => AttesterKind::Snp,
        AttesterChoice::Tdx => AttesterKind::Tdx,
        AttesterChoice::Tpm => AttesterKind::Tpm,
    };
    let attester: Arc<dyn attester::Attester> = match kind {
        AttesterKind::Sample => Arc::new(attester::sample::SampleAttester::reporting(
            None,
            digest.as_deref(),
        )),
        kind => Arc::from(attester::detect::build(kind, &attester::detect::RealHost)?),
    };
    if let Some(d) = &digest {
        attester
            .bind_init_data(d)
            .context("binding the initdata to the TEE")?;
    }
    Ok(attester)
}

fn client(cli: &Cli, a: &AttestArgs) -> anyhow::Result<KbsClient> {
    let ca_pem = match &cli.cert_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let init_data_toml = match &a.init_data {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    Ok(KbsClient::new(
        &cli.url,
        attester_for(a.attester, init_data_toml.as_deref())?,
        ClientOptions {
            ca_pem,
            init_data_toml,
            key_kind: match (a.rsa, a.tee_key) {
                (true, _) | (false, TeeKeyChoice::Rsa) => TeeKeyKind::Rsa,
                (false, TeeKeyChoice::P521) => TeeKeyKind::Ec521,
                (false, TeeKeyChoice::P256) => TeeKeyKind::Ec,
            },
            timeout: None,
        },
    )?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Attest(a) => {
            let token = client(&cli, a)?.attest().await?;
            println!("{token}");
        }
        Command::GetResource {
            path,
            output,
            attest,
        } => {
            let data = client(&cli, attest)?.get_resource(path).await?;
            match output {
                Some(out) => std::fs::write(out, data.as_slice())
                    .with_context(|| format!("writing {}", out.display()))?,
                None => println!(
                    "{}",
                    base64::engine::general_purpose::STANDARD.encode(data.as_slice())
                ),
            }
        }
        Command::Config(args) => admin::run(&cli.url, cli.cert_file.as_deref(), args).await?,
        Command::GenAdminKey {
            private_key_out,
            public_key_out,
            alg,
        } => {
            let key = match alg.as_str() {
                "ed25519" => coco_jose::jwt::SigningKey::generate_ed25519(),
                "p256" => coco_jose::jwt::SigningKey::generate_es256(),
                other => bail!("unknown algorithm {other}: use ed25519 or p256"),
            };
            admin::write_private(private_key_out, key.to_pkcs8_pem()?.as_bytes())?;
            std::fs::write(public_key_out, key.verifying_key().to_public_key_pem()?)?;
        }
        Command::MintAdminToken {
            private_key,
            ttl,
            role,
        } => println!("{}", admin::mint(private_key, ttl.as_secs(), role)?),
    }
    Ok(())
}
