//! The pause bundle is a real OCI bundle: runc runs it, its process stays up, and it
//! exits cleanly on SIGTERM (what a graceful sandbox stop sends).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn runc(args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runc (Debian package runc)")
}

fn status(id: &str) -> String {
    let out = runc(&["state", id]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["status"].as_str().unwrap_or("gone").to_string()
}

#[test]
fn runc_runs_the_pause_bundle_and_it_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("pause");
    coco_image::pause::write_dir(&bundle, std::path::Path::new("/bin/busybox")).unwrap();
    let id = format!("coco-pause-test-{}", std::process::id());
    // Detached containers inherit runc's stdio: a file, not a pipe, or waiting for
    // the pipe to close would wait for the container.
    let err_path = dir.path().join("runc.stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let st = Command::new("runc")
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "runc run: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    // Always clean up, even if an assertion below fails.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = runc(&["delete", "--force", &self.0]);
        }
    }
    let _cleanup = Cleanup(id.clone());

    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&id), "running", "pause must keep running");
    let kill = runc(&["kill", &id, "TERM"]);
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    let start = Instant::now();
    while status(&id) == "running" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pause ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status(&id), "stopped");
}
