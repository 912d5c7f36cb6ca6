//! Test fixtures: a real `docker-registry` on loopback and a busybox image built
//! with umoci from the host's static busybox.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` (distribution) bound to 127.0.0.1, killed on drop.
pub struct TestRegistry {
    child: Child,
    pub addr: String,
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
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("storage").display()
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
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
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

/// Whether the external tools the registry tests need are installed.
pub fn tools_present(tools: &[&str]) -> bool {
    for t in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            // Under CI=true a missing tool is a failure: scripts/setup.sh installs it.
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{t} is not installed under CI=true (scripts/setup.sh installs it)");
            }
            eprintln!("SKIPPED: {t} is not installed");
            return false;
        }
    }
    true
}

/// An OCI layout holding `busybox:<tag>`: the host's busybox binary with a few
/// applets, `PATH` and `Cmd` in the config.
pub fn busybox_layout(work: &Path, tag: &str) -> PathBuf {
    let layout = work.join("layout");
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = work.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    let busybox = run(Command::new("sh").args(["-c", "command -v busybox"]));
    std::fs::copy(busybox.trim(), rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    set_config(
        &layout,
        tag,
        &["--config.env", "PATH=/bin", "--config.cmd", "sh"],
    );
    layout
}

/// `umoci config` on `layout:tag`.
pub fn set_config(layout: &Path, tag: &str, args: &[&str]) {
    run(Command::new("umoci")
        .args(["config", "--image", &format!("{}:{tag}", layout.display())])
        .args(args));
}

/// `skopeo copy` of `layout:tag` to `addr/repo:tag` over plain HTTP.
pub fn push(layout: &Path, tag: &str, addr: &str, repo: &str) {
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{addr}/{repo}:{tag}"),
    ]));
}

/// The manifest digest `skopeo inspect` reports for `addr/repo:tag`.
pub fn skopeo_digest(addr: &str, repo: &str, tag: &str) -> String {
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{addr}/{repo}:{tag}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Digest"].as_str().unwrap().to_owned()
}
