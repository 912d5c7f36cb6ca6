//! `coco-policy`: generates a confidential pod's workload policy and initdata.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use coco_policy::image::Resolver;
use coco_policy::initdata::Settings;
use image_mgmt::registry::{Platform, Registry, RegistryOptions};

const ABOUT: &str = "Generate the workload policy of a confidential pod.

Reads a Kubernetes manifest (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
CronJob; several YAML documents allowed), resolves every container image to its digest,
reads the image configs, and computes each container's process as kubelet, containerd and
the guest agent will run it. The policy is the agent's rules plus a `policy_data` object
pinning images, processes, mounts and allowed execs (docs/WORKLOAD-POLICY.md). It is put
into the pod's initdata together with the KBS settings.

Written to --out-dir: the manifest with images pinned (image@sha256:...) and the initdata
annotation set on every pod template, initdata.toml, policy.rego and reference-values.json
for the KBS (one <kind>-<name>/ directory per pod template when there are several).

Pod annotations read:
  coco-policy/exec-<container>: '[[\"sh\", \"-c\", \"date\"]]'   argv lists kubectl exec may run
  coco-policy/read-logs: \"true\"                               allow kubectl logs (default false)

Refused: privileged containers, hostPath and other host volumes, envFrom, image users given by
name (set runAsUser), tags in --offline mode.";

const EXAMPLES: &str = "Examples:
  # Online: resolve images at their registries.
  coco-policy --kbs-url https://kbs.example:8080 --kbs-cert kbs-ca.pem \\
      --out-dir out/ deploy/confidential-pod.yaml

  # A registry the guest reaches at 10.0.2.2:5000 and this host at 127.0.0.1:5000,
  # over plain HTTP.
  coco-policy --kbs-url http://10.0.2.2:8080 --insecure-registry 10.0.2.2:5000 \\
      --resolve-via 10.0.2.2:5000=127.0.0.1:5000 --out-dir out/ pod.yaml

  # Resolve docker.io images at a local mirror over plain HTTP.
  coco-policy --kbs-url https://kbs:8080 --resolve-via docker.io=http://127.0.0.1:5000 \\
      --out-dir out/ deploy/confidential-pod.yaml

  # Offline: references carry digests; blobs come from an OCI layout
  # (skopeo copy docker://busybox@sha256:... oci:layout).
  coco-policy --offline --image-configs layout/ --kbs-url https://kbs:8080 --out-dir out/ pod.yaml

Then register the initdata digest with the KBS:
  kbs-client --url URL config --auth-private-key admin.key register-initdata out/initdata.toml";

#[derive(Debug, Parser)]
#[command(name = "coco-policy", version, about = ABOUT, after_help = EXAMPLES)]
struct Cli {
    /// The Kubernetes manifest (multi-document YAML).
    manifest: PathBuf,
    /// Directory for the outputs (created if missing).
    #[arg(long)]
    out_dir: PathBuf,
    /// The KBS the guest attests to, as the guest reaches it.
    #[arg(long)]
    kbs_url: String,
    /// PEM CA certificate the guest trusts for the KBS.
    #[arg(long)]
    kbs_cert: Option<PathBuf>,
    /// A registry reached over plain HTTP (host:port), by the guest (written to the
    /// initdata) and by this tool (also at its --resolve-via address). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Resolve images of registry REGISTRY at ADDR (host:port, or http://host:port for
    /// plain HTTP) instead; the pinned reference keeps REGISTRY. Repeatable.
    #[arg(long = "resolve-via", value_name = "REGISTRY=ADDR")]
    resolve_via: Vec<String>,
    /// The pod's image policy (containers-policy.json; `{"type":"encryptedLayers"}`
    /// refuses any plain layer, `sigstoreSigned` any image without the key's
    /// signature). Written into the initdata's cdh.toml; the guest enforces it on
    /// every pull.
    #[arg(long, value_name = "POLICY.JSON")]
    image_policy: Option<PathBuf>,
    /// Registry credentials (auth.json / Docker config.json).
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// Platform whose manifest an image index is resolved to.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// No network: image references must carry digests, blobs come from --image-configs.
    #[arg(long, requires = "image_configs")]
    offline: bool,
    /// Directory of blobs by digest (an OCI layout, or sha256/<hex> files).
    #[arg(long, value_name = "DIR", requires = "offline")]
    image_configs: Option<PathBuf>,
}

fn resolver(cli: &Cli) -> anyhow::Result<Resolver> {
    let platform: Platform = cli.platform.parse()?;
    if cli.offline {
        if !cli.resolve_via.is_empty() {
            bail!("--resolve-via needs the network; drop it with --offline");
        }
        let dir = cli
            .image_configs
            .clone()
            .context("--offline needs --image-configs DIR")?;
        return Ok(Resolver::Offline { dir, platform });
    }
    let mut via = BTreeMap::new();
    let mut insecure = cli.insecure_registries.clone();
    for v in &cli.resolve_via {
        let (reg, addr) = v
            .split_once('=')
            .filter(|(r, a)| !r.is_empty() && !a.is_empty())
            .with_context(|| format!("--resolve-via {v:?}: want REGISTRY=HOST:PORT"))?;
        let plain = addr.strip_prefix("http://");
        let addr = plain
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        if plain.is_some() || cli.insecure_registries.iter().any(|r| r == reg) {
            insecure.push(addr.to_owned());
        }
        via.insert(reg.to_owned(), addr.to_owned());
    }
    let registry = Registry::new(RegistryOptions {
        platform,
        insecure_registries: insecure,
        auth_file: cli.auth_file.clone(),
        retries: 2,
    })?;
    Ok(Resolver::Online {
        registry: Box::new(registry),
        via,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.manifest)
        .with_context(|| format!("reading {}", cli.manifest.display()))?;
    let kbs_cert_pem = cli
        .kbs_cert
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let opts = coco_policy::Options {
        resolver: resolver(&cli)?,
        initdata: Settings {
            kbs_url: cli.kbs_url.clone(),
            kbs_cert_pem,
            insecure_registries: cli.insecure_registries.clone(),
            image_policy: cli
                .image_policy
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?,
        },
    };
    let g = coco_policy::generate(&text, &opts).await?;
    for w in &g.warnings {
        eprintln!("warning: {w}");
    }
    let out = coco_policy::output::write_all(&cli.out_dir, &cli.manifest, &g)?;
    println!("manifest: {}", out.manifest.display());
    for p in &out.pods {
        println!("{}:", p.workload);
        println!(
            "  policy:   {} (sha256 {})",
            p.policy.display(),
            p.policy_sha256
        );
        println!("  initdata: {}", p.initdata.display());
        println!("  initdata digest: {}", p.initdata_digest);
    }
    println!("reference values: {}", out.reference_values.display());
    println!("Register with the KBS:");
    for p in &out.pods {
        println!(
            "  kbs-client --url {} config --auth-private-key admin.key register-initdata {}",
            cli.kbs_url,
            p.initdata.display()
        );
    }
    Ok(())
}
