//! Pull + decrypt + unpack of a generated, JWE-encrypted, 4-layer image from
//! a local `docker-registry`: image-pull against the 2021 pipeline
//! `skopeo copy --decryption-key` + `umoci unpack`, same machine, same run.
//!
//! Sizes (MiB of layer content) come from `BENCH_SIZES_MIB` (default "256"),
//! e.g. `BENCH_SIZES_MIB=256,1024 cargo bench -p image-mgmt --bench pull`.
//! Time and peak RSS are measured by GNU time (`/usr/bin/time -f "%e %M"`);
//! each contender runs twice, alternating; best time and worst RSS are shown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{run, sha256_hex, TestRegistry};

const LAYERS: usize = 4;
const FILE_MIB: usize = 4;
const ROUNDS: usize = 2;

/// Layer `i` of an image of `total_mib`: files of 4 MiB, half random
/// (incompressible), half text (compressible), like real binaries + data.
fn layer_tar(i: usize, total_mib: usize, seed: &mut u64) -> Vec<u8> {
    let per_layer = total_mib / LAYERS;
    let mut b = tar::Builder::new(Vec::with_capacity((per_layer + 1) << 20));
    let files = per_layer.div_ceil(FILE_MIB);
    for f in 0..files {
        let len = FILE_MIB << 20;
        let mut data = Vec::with_capacity(len);
        while data.len() < len / 2 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            data.extend_from_slice(&seed.to_le_bytes());
        }
        let line = format!("layer {i} file {f} some repetitive configuration text\n");
        while data.len() < len {
            data.extend_from_slice(line.as_bytes());
        }
        data.truncate(len);
        let mut h = tar::Header::new_gnu();
        h.set_size(len as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("layer{i}/file{f:04}"), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// Writes a plain OCI layout with `LAYERS` gzip layers.
fn make_layout(dir: &Path, total_mib: usize) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..LAYERS {
        let tar = layer_tar(i, total_mib, &mut seed);
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let d = sha256_hex(&blob);
        std::fs::write(blobs.join(&d), &blob).unwrap();
        descs.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{d}"), "size": blob.len()}),
        );
    }
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    let cd = sha256_hex(&config);
    std::fs::write(blobs.join(&cd), &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cd}"), "size": config.len()},
        "layers": descs})).unwrap();
    let md = sha256_hex(&manifest);
    std::fs::write(blobs.join(&md), &manifest).unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{md}"),
        "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]})).unwrap()).unwrap();
}

/// (seconds, peak RSS KiB) of a shell command, from GNU time.
fn timed(cmd: &str) -> (f64, u64) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "BENCH %e %M", "sh", "-c", cmd])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("GNU time (Debian package `time`) is needed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} failed:\n{err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("BENCH "))
        .expect("time output");
    let mut it = line.split_whitespace().skip(1);
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

fn du_mib(p: &Path) -> f64 {
    let out = run(Command::new("du").args(["-sk"]).arg(p));
    out.split_whitespace()
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1024.0
}

fn main() {
    if !common::tools_present(&["docker-registry", "skopeo", "umoci", "openssl"]) {
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES_MIB")
        .unwrap_or_else(|_| "256".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_SIZES_MIB: comma-separated MiB")
        })
        .collect();
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let work = tempfile::tempdir_in(base).unwrap();
    let w = work.path();
    let key = w.join("key.pem");
    let pubkey = w.join("pub.pem");
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pubkey));
    let reg = TestRegistry::start();
    let puller = env!("CARGO_BIN_EXE_image-pull");

    println!("| image | pipeline | time (s) | peak RSS (MiB) | rootfs (MiB) |");
    println!("|---|---|---|---|---|");
    for size in sizes {
        let layout = w.join(format!("layout-{size}"));
        make_layout(&layout, size);
        let image = format!("{}/bench/img{size}:v1", reg.addr);
        run(Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--encryption-key",
            ])
            .arg(format!("jwe:{}", pubkey.display()))
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{image}")));
        std::fs::remove_dir_all(&layout).unwrap();
        // Warm the registry's files in the page cache for both contenders.
        run(Command::new("sh").arg("-c").arg(format!(
            "cat $(find {} -type f) > /dev/null",
            reg.storage.display()
        )));

        // Alternate the contenders and keep the best time of each (the
        // machine is shared); peak RSS is the worst seen.
        let (mut t_old, mut rss_old, mut t_new, mut rss_new) = (f64::MAX, 0u64, f64::MAX, 0u64);
        let (mut old_size, mut new_size) = (0.0, 0.0);
        for round in 0..ROUNDS {
            let old = w.join(format!("old-{size}-{round}"));
            std::fs::create_dir_all(&old).unwrap();
            let (t, rss) = timed(&format!(
                "skopeo copy --quiet --src-tls-verify=false --decryption-key {key} docker://{image} oci:{old}/layout:v1 && umoci unpack --image {old}/layout:v1 {old}/bundle",
                key = key.display(),
                old = old.display(),
            ));
            t_old = t_old.min(t);
            rss_old = rss_old.max(rss);
            old_size = du_mib(&old.join("bundle/rootfs"));
            std::fs::remove_dir_all(&old).unwrap();

            let new = w.join(format!("new-{size}-{round}"));
            let (t, rss) = timed(&format!(
                "{puller} {image} --rootfs {new}/rootfs --store {new}/store --decryption-key {key} --insecure-registry {addr} --no-progress",
                new = new.display(),
                key = key.display(),
                addr = reg.addr,
            ));
            t_new = t_new.min(t);
            rss_new = rss_new.max(rss);
            new_size = du_mib(&new.join("rootfs"));
            std::fs::remove_dir_all(&new).unwrap();
        }

        println!("| {size} MiB, {LAYERS} layers, JWE | skopeo copy + umoci unpack | {t_old:.2} | {:.1} | {old_size:.0} |", rss_old as f64 / 1024.0);
        println!("| {size} MiB, {LAYERS} layers, JWE | image-pull | {t_new:.2} | {:.1} | {new_size:.0} |", rss_new as f64 / 1024.0);
        println!("| {size} MiB | speed-up | {:.2}x | | |", t_old / t_new);
    }
}
