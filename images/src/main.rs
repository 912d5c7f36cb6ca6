//! `coco-image`: build the guest image and compute its reference values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use coco_image::builder::{self, Compression, ImageSpec};
use coco_image::initdata::Initdata;
use coco_image::kernel;
use coco_image::measure::authenticode::{DirectBoot, Machine};
use coco_image::measure::{self, tdx::PageOrder, MeasureConfig};

/// Reproducible confidential-guest image builder.
///
/// `build` assembles kernel + initrd + cmdline + manifest from a Debian cloud kernel and
/// the binaries you name; two builds from the same inputs are byte-identical.
/// `measure` turns a built image into KBS reference values (SEV-SNP launch digest,
/// TDX MRTD/RTMR1/RTMR2, vTPM PCR 4/9), loadable with
/// `kbs-client config ... set-reference-values FILE`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build kernel, initrd, cmdline and manifest.json into --out.
    ///
    /// Example:
    ///   coco-image build --kernel-package linux-image-cloud-amd64 \
    ///     --binary coco-agent=target/release/coco-agent --busybox /bin/busybox \
    ///     --pause-bundle --module vsock --module vmw_vsock_virtio_transport \
    ///     --module virtio_blk --out out/
    #[command(verbatim_doc_comment)]
    Build(BuildArgs),
    /// Compute reference values for a built image (reads --image DIR).
    ///
    /// Example:
    ///   coco-image measure --image out/ --snp-ovmf OVMF-AmdSev.fd --vcpus 1,2,4 \
    ///     --tdx-ovmf /usr/share/ovmf/OVMF.fd --tpm --out out/reference-values.json
    #[command(verbatim_doc_comment)]
    Measure(MeasureArgs),
    /// Write an initdata disk image from a TOML file (for the VM's initdata drive).
    Initdata {
        /// initdata TOML (version, algorithm, [data]).
        toml: PathBuf,
        /// Output disk image.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the pod annotation for an initdata TOML and the digest the TEE binds.
    ///
    /// Output (two lines): the annotation
    /// `io.katacontainers.config.hypervisor.cc_init_data: <base64(gzip(TOML))>`, then
    /// `digest (<algorithm>): <hex>`, the value the guest's HOST_DATA (SNP, first 32
    /// bytes) / MRCONFIGID (TDX, zero-padded to 48) / PCR 8 (vTPM) must carry.
    ///
    /// Example:
    ///   coco-image annotation --toml deploy/initdata.toml
    #[command(verbatim_doc_comment)]
    Annotation {
        /// initdata TOML (version, algorithm, [data]).
        #[arg(long)]
        toml: PathBuf,
    },
    /// Print the kernel command line Kata boots with for a Kata configuration: its own
    /// defaults (console, panic, nr_cpus, ...) followed by kernel_params. This, not
    /// kernel_params alone, is what SNP/TDX/vTPM measure.
    ///
    /// Example:
    ///   coco-image kata-cmdline --config deploy/kata/configuration-coco-snp.toml
    #[command(verbatim_doc_comment)]
    KataCmdline {
        /// Kata configuration (TOML with [hypervisor.qemu]).
        #[arg(long)]
        config: PathBuf,
    },
}

fn kata_cmdline(config: &std::path::Path) -> Result<String> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    coco_image::kata::cmdline(&text).with_context(|| format!("{}", config.display()))
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Debian kernel (meta)package to download with apt-get (cached under
    /// $COCO_IMAGE_CACHE, default /var/cache/coco-image).
    #[arg(long, conflicts_with_all = ["kernel_deb", "kernel_tree"])]
    kernel_package: Option<String>,
    /// A kernel .deb already on disk.
    #[arg(long)]
    kernel_deb: Option<PathBuf>,
    /// An unpacked kernel tree (boot/vmlinuz-R, lib/modules/R with modules.dep).
    #[arg(long)]
    kernel_tree: Option<PathBuf>,
    /// ELF binary to ship: [NAME=]PATH; NAME is a guest path or a bare name (→ /usr/bin/NAME),
    /// default the file name.
    /// Its shared libraries (DT_NEEDED, read from the ELF headers) come along.
    #[arg(long = "binary", value_name = "[NAME=]PATH")]
    binaries: Vec<String>,
    /// Any other file: GUEST_PATH=HOST_PATH.
    #[arg(long = "file", value_name = "GUEST=HOST")]
    files: Vec<String>,
    /// Kernel module to ship and list in /etc/coco/modules (dependencies added).
    #[arg(long = "module")]
    modules: Vec<String>,
    /// busybox-static binary: /bin/busybox plus a few applet links.
    #[arg(long)]
    busybox: Option<PathBuf>,
    /// Ship the pause bundle at /pause_bundle (needs --busybox).
    #[arg(long)]
    pause_bundle: bool,
    /// /init (until the agent is /init: a script).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Firmware to ship next to the kernel (e.g. an AmdSev OVMF).
    #[arg(long)]
    firmware: Option<PathBuf>,
    /// Kernel command line (measured as given).
    #[arg(long, default_value = builder::DEFAULT_CMDLINE, conflicts_with = "kata_config")]
    cmdline: String,
    /// Use the command line Kata composes from this configuration file (its defaults,
    /// then kernel_params), so the measurement matches what Kata boots.
    #[arg(long, value_name = "TOML")]
    kata_config: Option<PathBuf>,
    /// mtime of every initrd entry.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    mtime: u32,
    /// Compress the initrd with deterministic gzip (default) or not at all.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionArg,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompressionArg {
    Gzip,
    None,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MachineArg {
    Pc,
    Q35,
}

#[derive(Debug, Args)]
struct MeasureArgs {
    /// Directory written by `coco-image build`.
    #[arg(long)]
    image: PathBuf,
    /// AmdSev OVMF (with the SNP kernel-hashes section) for the SNP digest.
    #[arg(long)]
    snp_ovmf: Option<PathBuf>,
    /// vCPU counts to emit SNP digests for.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 4])]
    vcpus: Vec<u32>,
    /// QEMU CPU model of the SNP guest.
    #[arg(long, default_value = "EPYC-v4")]
    vcpu_type: String,
    /// OVMF with TDX metadata (IntelTdx build or Debian's unified OVMF.fd).
    #[arg(long)]
    tdx_ovmf: Option<PathBuf>,
    /// Add every TD page before extending (older TDX stacks) instead of page by page.
    #[arg(long)]
    tdx_two_pass: bool,
    /// Emit vTPM PCR 4 and 9.
    #[arg(long)]
    tpm: bool,
    /// QEMU machine type of the direct kernel boot (decides where QEMU puts the initrd,
    /// which it writes into the kernel header that the firmware measures).
    #[arg(long, value_enum, default_value = "pc")]
    machine: MachineArg,
    /// Guest RAM in MiB (`-m`), for the same reason.
    #[arg(long, default_value_t = 512)]
    ram_mib: u64,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn split_pair(s: &str) -> Result<(String, PathBuf)> {
    let (a, b) = s
        .split_once('=')
        .with_context(|| format!("{s:?}: expected NAME=PATH"))?;
    if a.is_empty() || b.is_empty() {
        bail!("{s:?}: expected NAME=PATH");
    }
    Ok((a.to_string(), PathBuf::from(b)))
}

fn build(a: BuildArgs) -> Result<()> {
    let cache = kernel::cache_root();
    let tree = match (&a.kernel_package, &a.kernel_deb, &a.kernel_tree) {
        (Some(p), None, None) => kernel::fetch_package(p, &cache)?,
        (None, Some(deb), None) => {
            let d =
                kernel::sha256_file(deb).with_context(|| format!("reading {}", deb.display()))?;
            kernel::unpack_deb(
                deb,
                &cache.join("kernel").join(format!("deb-{d}")).join("root"),
            )?
        }
        (None, None, Some(t)) => kernel::open_tree(t)?,
        (None, None, None) => kernel::fetch_package(kernel::CLOUD_KERNEL_META, &cache)?,
        _ => bail!("give one of --kernel-package, --kernel-deb, --kernel-tree"),
    };
    let mut binaries = BTreeMap::new();
    for b in &a.binaries {
        // A bare path ships the binary as /usr/bin/<its file name>.
        let (n, p) = if b.contains('=') {
            split_pair(b)?
        } else {
            let p = PathBuf::from(b);
            let n = p
                .file_name()
                .with_context(|| format!("{b:?}: not a file path"))?
                .to_string_lossy()
                .into_owned();
            (n, p)
        };
        binaries.insert(n, p);
    }
    let mut files = BTreeMap::new();
    for f in &a.files {
        let (n, p) = split_pair(f)?;
        files.insert(n, p);
    }
    let spec = ImageSpec {
        kernel: Some(tree),
        binaries,
        files,
        modules: a.modules,
        busybox: a.busybox,
        pause_bundle: a.pause_bundle,
        init: a.init,
        firmware: a.firmware,
        cmdline: match &a.kata_config {
            Some(k) => kata_cmdline(k)?,
            None => a.cmdline,
        },
        mtime: a.mtime,
        compression: match a.compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::None => Compression::None,
        },
    };
    let built = spec.build(&a.out)?;
    println!(
        "built {} (initrd {} bytes, {} inputs, {} modules)",
        built.dir.display(),
        built.manifest.initrd_size,
        built.manifest.inputs.len(),
        built.manifest.modules.len()
    );
    for (name, digest) in &built.manifest.outputs {
        println!("  {digest}  {name}");
    }
    Ok(())
}

fn measure_cmd(a: MeasureArgs) -> Result<()> {
    let cmdline = std::fs::read_to_string(a.image.join(builder::CMDLINE_FILE))
        .with_context(|| format!("{}: not a built image", a.image.display()))?;
    let cfg = MeasureConfig {
        snp_ovmf: a.snp_ovmf,
        snp_vcpus: a.vcpus,
        snp_vcpu_type: a.vcpu_type,
        tdx_ovmf: a.tdx_ovmf,
        tdx_page_order: if a.tdx_two_pass {
            PageOrder::TwoPass
        } else {
            PageOrder::Interleaved
        },
        tpm: a.tpm,
        direct_boot: DirectBoot {
            machine: match a.machine {
                MachineArg::Pc => Machine::Pc,
                MachineArg::Q35 => Machine::Q35,
            },
            ram_mib: a.ram_mib,
        },
    };
    let rv = measure::reference_values(
        &a.image.join(builder::KERNEL_FILE),
        &a.image.join(builder::INITRD_FILE),
        &cmdline,
        &cfg,
    )?;
    if rv.is_empty() {
        bail!("nothing to measure: give --snp-ovmf, --tdx-ovmf and/or --tpm");
    }
    let json = measure::to_json(&rv);
    match a.out {
        Some(p) => std::fs::write(&p, json).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{}", String::from_utf8_lossy(&json)),
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Build(a) => build(a),
        Cmd::Measure(a) => measure_cmd(a),
        Cmd::Initdata { toml, out } => {
            let text = std::fs::read_to_string(&toml)
                .with_context(|| format!("reading {}", toml.display()))?;
            let disk = Initdata::parse(&text)?.to_disk()?;
            std::fs::write(&out, disk).with_context(|| format!("writing {}", out.display()))?;
            Ok(())
        }
        Cmd::KataCmdline { config } => {
            println!("{}", kata_cmdline(&config)?);
            Ok(())
        }
        Cmd::Annotation { toml } => {
            let text = std::fs::read_to_string(&toml)
                .with_context(|| format!("reading {}", toml.display()))?;
            let doc = Initdata::parse(&text)?;
            println!(
                "{}: {}",
                coco_image::initdata::ANNOTATION,
                doc.to_annotation()?
            );
            println!("digest ({}): {}", doc.algorithm, doc.digest_hex());
            Ok(())
        }
    }
}
