//! Test fixtures: a real `docker-registry` on loopback, raw tar building for
//! hostile layers, OCI layouts and a file-tree comparison.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod tree;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use image_mgmt::cosign::{
    signature_tag, simple_signing_payload, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE,
};
use image_mgmt::digest::Sha256Digest;
use image_mgmt::keybroker::{BrokerError, KeyBroker};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use zeroize::Zeroizing;

/// A `docker-registry` (distribution 2.8) bound to 127.0.0.1, killed on drop.
pub struct TestRegistry {
    child: Child,
    pub addr: String,
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry must be installed (Debian package docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            storage,
            _dir: dir,
        }
    }

    /// Path of a blob's data file in the registry's storage (for tampering).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A tar entry written byte by byte, so hostile names are possible.
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub pax: Vec<(String, Vec<u8>)>,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            kind: b'0',
            data: data.to_vec(),
            link: vec![],
            mode: 0o644,
            pax: vec![],
        }
    }
    pub fn dir(name: &str) -> Self {
        Self {
            name: name.into(),
            kind: b'5',
            data: vec![],
            link: vec![],
            mode: 0o755,
            pax: vec![],
        }
    }
    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            name: name.into(),
            kind: b'2',
            data: vec![],
            link: target.into(),
            mode: 0o777,
            pax: vec![],
        }
    }
    pub fn hardlink(name: &str, target: &str) -> Self {
        Self {
            name: name.into(),
            kind: b'1',
            data: vec![],
            link: target.into(),
            mode: 0o644,
            pax: vec![],
        }
    }
    pub fn chardev(name: &str) -> Self {
        Self {
            name: name.into(),
            kind: b'3',
            data: vec![],
            link: vec![],
            mode: 0o666,
            pax: vec![],
        }
    }
}

fn octal(buf: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = buf.len() - 1);
    buf.copy_from_slice(s.as_bytes());
}

fn header(name: &[u8], kind: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

/// Serializes entries into an uncompressed tar stream.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &e.pax {
                let rec_len = |len: usize| -> usize {
                    let mut l = len + 1;
                    loop {
                        let t = l.to_string().len() + len + 1;
                        if t == l {
                            return l;
                        }
                        l = t;
                    }
                };
                let inner = k.len() + 1 + v.len() + 1;
                let total = rec_len(inner);
                body.extend_from_slice(format!("{total} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            out.extend_from_slice(&header(b"PaxHeader", b'x', body.len() as u64, b"", 0o644));
            out.extend_from_slice(&body);
            pad(&mut out);
        }
        out.extend_from_slice(&header(
            &e.name,
            e.kind,
            e.data.len() as u64,
            &e.link,
            e.mode,
        ));
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A layer for [`push_image`]: blob bytes, media type, diff_id.
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: String,
    pub diff_id: String,
}

impl Layer {
    pub fn gzip_tar(tar: &[u8]) -> Self {
        Self {
            blob: gzip(tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id: format!("sha256:{}", sha256_hex(tar)),
        }
    }
    pub fn zstd_tar(tar: &[u8]) -> Self {
        Self {
            blob: zstd::encode_all(tar, 3).unwrap(),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            diff_id: format!("sha256:{}", sha256_hex(tar)),
        }
    }
}

/// Pushes an image made of exactly these bytes (no tool in between may
/// "fix" a hostile layer). Returns the manifest digest.
pub async fn push_image(addr: &str, repo_tag: &str, layers: &[Layer]) -> String {
    push_image_with(addr, repo_tag, layers, |m| m).await
}

pub async fn push_image_with(
    addr: &str,
    repo_tag: &str,
    layers: &[Layer],
    edit: impl FnOnce(serde_json::Value) -> serde_json::Value,
) -> String {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let r: oci_client::Reference = format!("{addr}/{repo_tag}").parse().unwrap();
    client
        .store_auth_if_needed(r.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = format!("sha256:{}", sha256_hex(&config));
    client.push_blob(&r, config.clone(), &cd).await.unwrap();
    let mut descs = Vec::new();
    for l in layers {
        let d = format!("sha256:{}", sha256_hex(&l.blob));
        client.push_blob(&r, l.blob.clone(), &d).await.unwrap();
        descs.push(
            serde_json::json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()}),
        );
    }
    let manifest = edit(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }));
    let raw = serde_json::to_vec(&manifest).unwrap();
    let ct =
        reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
    client.push_manifest_raw(&r, raw.clone(), ct).await.unwrap();
    format!("sha256:{}", sha256_hex(&raw))
}

/// Options for pulling from the test registry.
pub fn pull_options(addr: &str, store: &Path) -> image_mgmt::PullOptions {
    let mut o = image_mgmt::PullOptions::default();
    o.registry.insecure_registries = vec![addr.to_owned()];
    o.registry.retries = 1;
    o.store_dir = store.to_owned();
    o
}

/// Builds a 3-layer image with umoci in `work/layout:v1` (files, modes,
/// owners, symlinks, hardlinks, setuid, then deletions and replacements that
/// umoci turns into whiteouts). Returns the layout path.
pub fn umoci_image(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let image = format!("{}:v1", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image"]).arg(&image));
    let scripts = [
        r#"
        set -e
        mkdir -p etc usr/bin data/sub/deeper var/empty opt
        echo hello > etc/hello
        echo gone > etc/removed
        printf 'x%.0s' $(seq 1 5000) > data/sub/deeper/big
        echo tool > usr/bin/tool && chmod 4755 usr/bin/tool
        echo secret > etc/shadowish && chmod 0600 etc/shadowish && chown 1000:2000 etc/shadowish
        ln -s ../etc/hello usr/bin/hello-link
        ln -s /etc/hello abs-link
        ln usr/bin/tool usr/bin/tool-hardlink
        mkfifo opt/fifo
        chmod 0700 var/empty
        touch -d '2001-02-03 04:05:06' etc/hello
        "#,
        r#"
        set -e
        rm etc/removed
        rm -rf data/sub
        echo replaced > etc/hello
        echo added > etc/added
        rm abs-link && mkdir abs-link && echo in-dir > abs-link/file
        "#,
        r#"
        set -e
        mkdir -p data/sub
        echo back > data/sub/again
        chown -R 7:8 data
        "#,
    ];
    for (i, script) in scripts.iter().enumerate() {
        // umoci diffs against the bundle's base: unpack afresh per layer.
        let bundle = work.join(format!("bundle{i}"));
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(&image)
            .arg(&bundle));
        run(Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(bundle.join("rootfs")));
        run(Command::new("umoci")
            .args(["repack", "--image"])
            .arg(&image)
            .arg(&bundle));
    }
    layout
}

/// `skopeo copy` from an OCI layout to the test registry, with extra args.
pub fn skopeo_push(layout_ref: &str, addr: &str, repo_tag: &str, extra: &[&str]) {
    let mut c = Command::new("skopeo");
    c.args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra);
    c.arg(format!("oci:{layout_ref}"));
    c.arg(format!("docker://{addr}/{repo_tag}"));
    run(&mut c);
}

/// Whether the external tools the registry tests need are installed.
pub fn tools_present(tools: &[&str]) -> bool {
    for t in tools {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("skipped: {t} is not installed");
            return false;
        }
    }
    true
}

/// An ECDSA P-256 key pair made by openssl: (private PEM, public PEM).
pub fn ec_keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&private));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    (private, public)
}

/// Signs like `cosign sign --key`: payload blob + signature manifest at
/// `sha256-<hex>.sig`. The signature is made by openssl.
pub async fn cosign_sign(addr: &str, repo: &str, manifest_digest: &str, key: &Path, dir: &Path) {
    let d = Sha256Digest::parse(manifest_digest).unwrap();
    let payload = simple_signing_payload(&format!("{addr}/{repo}"), &d);
    let pf = dir.join("payload.json");
    std::fs::write(&pf, &payload).unwrap();
    let sig = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(&pf)
        .output()
        .unwrap();
    assert!(sig.status.success());
    let sig_b64 = STANDARD.encode(&sig.stdout);

    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let r: oci_client::Reference = format!("{addr}/{repo}:{}", signature_tag(&d))
        .parse()
        .unwrap();
    client
        .store_auth_if_needed(
            r.resolve_registry(),
            &oci_client::secrets::RegistryAuth::Anonymous,
        )
        .await;
    let pd = format!("sha256:{}", sha256_hex(&payload));
    client.push_blob(&r, payload.clone(), &pd).await.unwrap();
    let config = b"{}".to_vec();
    let cd = format!("sha256:{}", sha256_hex(&config));
    client.push_blob(&r, config.clone(), &cd).await.unwrap();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": pd, "size": payload.len(),
                    "annotations": {SIGNATURE_ANNOTATION: sig_b64}}],
    });
    client
        .push_manifest_raw(
            &r,
            serde_json::to_vec(&m).unwrap(),
            reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .unwrap();
}

/// Key broker of the tests: resources from a map, or a refusal like a KBS
/// whose resource policy denies the request. Counts the requests.
#[derive(Debug, Default)]
pub struct TestBroker {
    pub resources: HashMap<String, Vec<u8>>,
    pub deny: bool,
    pub requests: AtomicUsize,
}

impl TestBroker {
    pub fn new(resources: HashMap<String, Vec<u8>>, deny: bool) -> Self {
        Self {
            resources,
            deny,
            requests: AtomicUsize::new(0),
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl KeyBroker for TestBroker {
    async fn resource(&self, path: &str) -> Result<Zeroizing<Vec<u8>>, BrokerError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.deny {
            return Err("KBS denied the resource: policy evaluation failed (401)".into());
        }
        self.resources
            .get(path)
            .map(|v| Zeroizing::new(v.clone()))
            .ok_or_else(|| format!("no resource {path}").into())
    }
}

/// Encrypts every layer of `layout:src_tag` with coco-encrypt for the
/// `attestation-agent` keyprovider under `kid` (`kbs:///r/t/k`), as
/// `layout:dst_tag`. Returns the generated KEK.
pub fn coco_encrypt(
    layout: &Path,
    src_tag: &str,
    dst_tag: &str,
    kid: &str,
    work: &Path,
) -> Vec<u8> {
    let kek_file = work.join(format!("kek-{dst_tag}"));
    run(Command::new(env!("CARGO_BIN_EXE_coco-encrypt"))
        .args([
            "encrypt",
            "--tag",
            src_tag,
            "--out-tag",
            dst_tag,
            "--kid",
            kid,
        ])
        .arg("--layout")
        .arg(layout)
        .arg("--kek-out")
        .arg(&kek_file));
    std::fs::read(&kek_file).unwrap()
}

/// What a hostile host or registry does to an encrypted image: adds its own
/// plaintext layer (an `/etc/ld.so.preload` and a replaced `/etc/hello`) on
/// top of `layout:src_tag`, as `layout:dst_tag`. The other layers, encrypted
/// or not, stay as they were.
pub fn append_plain_layer(layout: &Path, src_tag: &str, dst_tag: &str, work: &Path) {
    let dir = work.join(format!("evil-{dst_tag}"));
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/ld.so.preload"), "/evil.so\n").unwrap();
    std::fs::write(dir.join("etc/hello"), "pwned by the host\n").unwrap();
    let tar = work.join(format!("evil-{dst_tag}.tar"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("etc"));
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--no-history", "--image"])
        .arg(format!("{}:{src_tag}", layout.display()))
        .args(["--tag", dst_tag])
        .arg(&tar));
}
