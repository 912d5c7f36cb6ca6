//! Guest-side probe: listens on AF_VSOCK (any CID) at the port given as the first
//! argument (default 1024, the agent's port) and echoes every connection's bytes back,
//! prefixed once with "probe:". Proves the host ↔ guest vsock path the agent will use.

use std::io::{Read, Write};

use vsock::{VsockListener, VMADDR_CID_ANY};

fn main() {
    let port: u32 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1024);
    let listener = match VsockListener::bind_with_cid_port(VMADDR_CID_ANY, port) {
        Ok(l) => l,
        Err(e) => {
            println!("COCO:vsock-probe-failed:{e}");
            std::process::exit(1);
        }
    };
    println!("COCO:vsock-listening:{port}");
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || {
            if s.write_all(b"probe:").is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}
