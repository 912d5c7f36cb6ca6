//! Malformed ttrpc frames, oversized messages and unknown services/methods must get an
//! error (or a closed connection), never crash the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use coco_agent::policy::ALLOW_ALL_POLICY;
use coco_agent::protocols::{agent, health};
use common::*;
use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn frame(len: u32, stream: u32, ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = len.to_be_bytes().to_vec();
    f.extend_from_slice(&stream.to_be_bytes());
    f.push(ty);
    f.push(0);
    f.extend_from_slice(payload);
    f
}

fn request(service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut r = ttrpc::Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = payload.to_vec();
    r.write_to_bytes().unwrap()
}

/// Sends raw bytes; returns the decoded response status code, if one came back.
async fn raw(sock: &str, bytes: &[u8]) -> Option<ttrpc::Code> {
    let path = sock.strip_prefix("unix://").unwrap();
    let mut s = UnixStream::connect(path).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut hdr = [0u8; 10];
    let got = tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut hdr)).await;
    match got {
        Ok(Ok(_)) => {
            let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.ok()?;
            let resp = ttrpc::Response::parse_from_bytes(&body).ok()?;
            Some(resp.status.code())
        }
        _ => None,
    }
}

async fn still_healthy(ta: &TestAgent) {
    let (_, h) = ta.clients().await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        h.check(ctx(), &health::CheckRequest::new()),
    )
    .await
    .expect("agent answers")
    .unwrap();
    assert_eq!(r.status.value(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_do_not_crash_the_agent() {
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: busybox-static not installed");
        return;
    }
    let ta = TestAgent::start(ALLOW_ALL_POLICY).await;
    let sock = ta.sock.clone();

    // Length far beyond the 4 MiB limit, then nothing.
    raw(&sock, &frame(u32::MAX, 1, 1, &[])).await;
    still_healthy(&ta).await;
    // Oversized but present payload.
    let big = vec![0u8; (4 << 20) + 16];
    raw(&sock, &frame(big.len() as u32, 3, 1, &big)).await;
    still_healthy(&ta).await;
    // Garbage that is not a protobuf Request.
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    raw(&sock, &frame(garbage.len() as u32, 5, 1, &garbage)).await;
    still_healthy(&ta).await;
    // Truncated frame: header promises more than is sent.
    raw(&sock, &frame(100, 7, 1, b"short")).await;
    still_healthy(&ta).await;
    // Unknown message type and even stream id.
    raw(&sock, &frame(0, 2, 0x7f, &[])).await;
    still_healthy(&ta).await;
    // A valid request with a payload that does not decode as CreateContainerRequest.
    let bad = request("grpc.AgentService", "CreateContainer", &[0x0a, 0xff, 0xff]);
    let code = raw(&sock, &frame(bad.len() as u32, 9, 1, &bad)).await;
    assert_ne!(code, Some(ttrpc::Code::OK));
    still_healthy(&ta).await;
    // Unknown service and unknown method.
    let us = request("grpc.Nope", "Check", &[]);
    assert_eq!(
        raw(&sock, &frame(us.len() as u32, 11, 1, &us)).await,
        Some(ttrpc::Code::INVALID_ARGUMENT)
    );
    let um = request("grpc.AgentService", "MemAgentMemcgSet", &[]);
    assert_eq!(
        raw(&sock, &frame(um.len() as u32, 13, 1, &um)).await,
        Some(ttrpc::Code::UNIMPLEMENTED)
    );
    still_healthy(&ta).await;

    // An oversized legitimate message from a real client: refused, agent fine.
    let (c, _) = ta.clients().await;
    let mut cp = agent::CopyFileRequest::new();
    cp.path = ta.copy_root().join("big").display().to_string();
    cp.data = vec![7u8; 5 << 20];
    cp.file_size = cp.data.len() as i64;
    assert!(c.copy_file(ctx(), &cp).await.is_err());
    still_healthy(&ta).await;
}
