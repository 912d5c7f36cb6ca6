//! Host-side services a confidential pod needs, all real and on host loopback (the
//! guest reaches them through slirp at 10.0.2.2): a docker-registry with a busybox
//! app image (plain and encrypted with `image-mgmt`'s ocicrypt), and a KBS over TLS
//! with an admin key.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;

use crate::{Guard, VmError};

/// The host as the guest sees it through slirp.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

fn free_port() -> Result<u16, VmError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| VmError::io("picking a free port", e))
}

fn run(cmd: &mut Command) -> Result<(), VmError> {
    let out = cmd.output().map_err(|e| VmError::Spawn {
        what: format!("{cmd:?}"),
        source: e,
    })?;
    if !out.status.success() {
        return Err(VmError::Config(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A docker-registry (distribution) on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct Registry {
    pub port: u16,
    _guard: Guard,
}

impl Registry {
    pub fn start(dir: &Path) -> Result<Self, VmError> {
        let port = free_port()?;
        let cfg = dir.join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .map_err(|e| VmError::io("writing registry config", e))?;
        // Its request log (404s on every blob HEAD of a push) goes to a file.
        let log = std::fs::File::create(dir.join("registry.log"))
            .map_err(|e| VmError::io("registry log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| VmError::io("registry log", e))?;
        let guard = Guard::spawn(
            "docker-registry",
            Command::new(crate::tools::require(
                "docker-registry",
                "COCO_DOCKER_REGISTRY",
            )?)
            .arg("serve")
            .arg(&cfg)
            .stdout(log)
            .stderr(log2),
        )?;
        crate::vm::wait_until(
            "docker-registry to listen",
            Duration::from_secs(5),
            || crate::vm::exited(&guard, "docker-registry"),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )?;
        Ok(Self {
            port,
            _guard: guard,
        })
    }

    /// `host:port` for host-side tools.
    pub fn host_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `host:port` as the guest reaches it.
    pub fn guest_addr(&self) -> String {
        format!("{HOST_FROM_GUEST}:{}", self.port)
    }
}

/// The app image: busybox with `/app.sh` as its command.
#[derive(Debug)]
pub struct AppImage {
    /// OCI layout directory holding the `plain` (and `encrypted`) tags.
    pub layout: PathBuf,
}

/// What the app prints: a greeting, then what it sees of its environment.
pub const APP_SCRIPT: &str = "#!/bin/sh\necho \"hello from a confidential pod\"\necho \"image env: $APP_MESSAGE\"\necho \"kernel: $(uname -r)\"\n";

/// The app image's `/etc/os-release`.
pub const APP_OS_RELEASE: &str = "NAME=\"coco test app\"\nID=coco-test\n";

impl AppImage {
    /// Builds the image with umoci: one busybox layer, env, entrypoint.
    pub fn build(work: &Path) -> Result<Self, VmError> {
        let layout = work.join("app-layout");
        let bundle = work.join("app-bundle");
        let l = layout.display().to_string();
        let image = format!("{l}:plain");
        run(Command::new("umoci").args(["init", "--layout", &l]))?;
        run(Command::new("umoci").args(["new", "--image", &image]))?;
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle))?;
        let rootfs = bundle.join("rootfs");
        let io = |e| VmError::io("filling the app rootfs", e);
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).map_err(io)?;
        }
        std::fs::copy(crate::tools::busybox()?, rootfs.join("bin/busybox")).map_err(io)?;
        for applet in ["sh", "echo", "cat", "sleep", "uname", "ls"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).map_err(io)?;
        }
        std::fs::write(rootfs.join("app.sh"), APP_SCRIPT).map_err(io)?;
        // deploy/confidential-pod.yaml prints it.
        std::fs::write(rootfs.join("etc/os-release"), APP_OS_RELEASE).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            rootfs.join("app.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .map_err(io)?;
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle))?;
        run(Command::new("umoci").args([
            "config",
            "--image",
            &image,
            "--config.env",
            "PATH=/bin",
            "--config.env",
            "APP_MESSAGE=set in the image config",
            "--config.cmd",
            "/app.sh",
        ]))?;
        Ok(Self { layout })
    }

    /// Encrypts the `plain` tag into `encrypted` for the attestation-agent
    /// keyprovider; the KEK is returned for the KBS.
    pub fn encrypt(&self, kid: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, VmError> {
        let kek = zeroize::Zeroizing::new(coco_jose::random_bytes::<32>().to_vec());
        let layout = image_mgmt::encrypt::Layout::open(&self.layout)
            .map_err(|e| VmError::Config(format!("opening layout: {e}")))?;
        image_mgmt::encrypt::encrypt_layout(
            &layout,
            "plain",
            "encrypted",
            &image_mgmt::encrypt::Recipients {
                jwe: vec![],
                provider: Some((kek.clone(), kid.to_string())),
            },
        )
        .map_err(|e| VmError::Config(format!("encrypting the image: {e}")))?;
        Ok(kek)
    }

    /// Pushes `tag` to `registry` as `repo:tag`; returns the reference the guest uses.
    pub fn push(&self, registry: &Registry, tag: &str, repo: &str) -> Result<String, VmError> {
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", self.layout.display()),
            &format!("docker://{}/{repo}:{tag}", registry.host_addr()),
        ]))?;
        Ok(format!("{}/{repo}:{tag}", registry.guest_addr()))
    }
}

/// A KBS served from this process over TLS on 127.0.0.1 (certificate valid for the
/// guest's view of the host, 10.0.2.2), administered with a generated Ed25519 key.
pub struct Kbs {
    pub port: u16,
    /// PEM of the CA the guest must trust (goes into the initdata `aa.toml`).
    pub ca_pem: String,
    http: reqwest::Client,
    local: kbs::local::LocalKbs,
}

impl std::fmt::Debug for Kbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kbs").field("port", &self.port).finish()
    }
}

impl Kbs {
    /// Starts the KBS on the current tokio runtime.
    pub async fn start() -> Result<Self, VmError> {
        let err = |what: &str, e: &dyn std::fmt::Display| VmError::Config(format!("{what}: {e}"));
        let (ca_pem, cert_pem, key_pem) = tls_material().map_err(|e| err("KBS TLS", &e))?;
        let local =
            kbs::local::LocalKbs::start(Some((&cert_pem, &key_pem))).map_err(|e| err("KBS", &e))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(
                attester::kbs_client::tls_config(Some(ca_pem.as_bytes()))
                    .map_err(|e| err("CA", &e))?,
            )
            .build()
            .map_err(|e| err("HTTP client", &e))?;
        Ok(Self {
            port: local.port,
            ca_pem,
            http,
            local,
        })
    }

    /// The URL the guest uses.
    pub fn guest_url(&self) -> String {
        format!("https://{HOST_FROM_GUEST}:{}", self.port)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("{}/kbs/v0/{path}", self.local.url)
    }

    async fn admin_post(&self, path: &str, body: reqwest::Body) -> Result<(), VmError> {
        let resp = self
            .http
            .post(self.admin_url(path))
            .bearer_auth(&self.local.admin_token)
            .body(body)
            .send()
            .await
            .map_err(|e| VmError::Config(format!("KBS admin {path}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(VmError::Config(format!(
                "KBS admin {path}: {status} {text}"
            )));
        }
        Ok(())
    }

    /// Stores a resource (`repo/type/tag`).
    pub async fn set_resource(&self, path: &str, data: &[u8]) -> Result<(), VmError> {
        self.admin_post(&format!("resource/{path}"), data.to_vec().into())
            .await
    }

    /// Replaces the resource policy (Rego, `data.policy.allow`).
    pub async fn set_resource_policy(&self, rego: &str) -> Result<(), VmError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rego);
        self.admin_post(
            "resource-policy",
            serde_json::json!({ "policy": b64 }).to_string().into(),
        )
        .await
    }

    /// Replaces the reference values (`{name: [values]}`).
    pub async fn set_reference_values(&self, values: &serde_json::Value) -> Result<(), VmError> {
        self.admin_post("reference-value", values.to_string().into())
            .await
    }

    /// Registers a pod's initdata as its owner does (`kbs-client config
    /// register-initdata`): its digest joins the `init_data_digest` reference
    /// value, without which the default attestation policy trusts no evidence.
    /// Returns the digest.
    pub async fn register_initdata(&self, initdata_toml: &str) -> Result<String, VmError> {
        use coco_jose::initdata::{with_registered_digest, Initdata, REFERENCE_VALUE};
        let digest = Initdata::parse(initdata_toml)
            .map_err(|e| VmError::Config(format!("initdata: {e}")))?
            .digest_hex();
        let what =
            |e: &dyn std::fmt::Display| VmError::Config(format!("KBS {REFERENCE_VALUE}: {e}"));
        let resp = self
            .http
            .get(self.admin_url(&format!("reference-value/{REFERENCE_VALUE}")))
            .bearer_auth(&self.local.admin_token)
            .send()
            .await
            .map_err(|e| what(&e))?;
        let current = match resp.status() {
            reqwest::StatusCode::NOT_FOUND => None,
            s if s.is_success() => Some(resp.json().await.map_err(|e| what(&e))?),
            s => return Err(what(&s)),
        };
        let list = with_registered_digest(current, &digest).map_err(|e| what(&e))?;
        self.set_reference_values(&serde_json::json!({ REFERENCE_VALUE: list }))
            .await?;
        Ok(digest)
    }
}

/// A resource policy that releases keys to the (non-confidential) sample TEE:
/// development only, which is exactly what the tests that use it say. The default
/// attestation policy gives the sample TEE "warning" only when its initdata is
/// registered ([`Kbs::register_initdata`]); otherwise this releases nothing.
pub const ALLOW_SAMPLE_POLICY: &str = "package policy\ndefault allow := false\nallow if {\n    input.tee == \"sample\"\n    input.submods.cpu0[\"ear.status\"] != \"contraindicated\"\n}\n";

/// A resource policy that releases keys to affirmed TPM evidence only, and only
/// when the firmware's event log came along and replayed to the quoted PCR 4
/// (kernel) and PCR 9 (initrd, cmdline).
pub const ALLOW_TPM_POLICY: &str = r#"package policy
default allow := false
allow if {
    input.tee == "tpm"
    input.submods.cpu0["ear.status"] == "affirming"
    log := input.submods.cpu0["ear.veraison.annotated-evidence"].tpm.event_log
    log.replayed_pcrs[_] == "04"
    log.replayed_pcrs[_] == "09"
}
"#;

type Pems = (String, String, String);

fn tls_material() -> Result<Pems, rcgen::Error> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "coco VM test KBS CA");
    let ca_cert = ca.clone().self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec![
        HOST_FROM_GUEST.to_string(),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
    ])?;
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}
