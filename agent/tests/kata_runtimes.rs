//! What Kata's runtimes send, spelled as each of them spells it, over the agent's socket:
//! runtime-rs and `kata-agent-ctl` convert specs with Kata's `trans.rs` (capabilities
//! without `CAP_`, namespaces `net`/`mnt`), Kata 4.1 defines 42 AgentService RPCs, and at
//! EOF a stream read answers OK with no data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use coco_agent::policy::ALLOW_ALL_POLICY;
use coco_agent::protocols::{agent, agent_ttrpc};
use common::*;
use protobuf::Message;

/// Every RPC of Kata 4.1's `grpc.AgentService`, read from Kata's
/// `src/libs/protocols/protos/agent.proto` at 7c6ba40c (see fixtures/README.md).
const KATA_RPCS: &str = include_str!("fixtures/kata-4.1-agent-rpcs.txt");

fn status(e: &ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an rpc status: {other:?}"),
    }
}

async fn raw_call(c: &ttrpc::r#async::Client, method: &str) -> ttrpc::Result<Vec<u8>> {
    let req = ttrpc::Request {
        service: "grpc.AgentService".into(),
        method: method.into(),
        timeout_nano: 10_000_000_000,
        payload: Vec::new(),
        ..Default::default()
    };
    let resp = c.request(req).await?;
    match resp.status.into_option() {
        Some(s) if s.code() != ttrpc::Code::OK => Err(ttrpc::Error::RpcStatus(s)),
        _ => Ok(resp.payload),
    }
}

#[tokio::test]
async fn our_proto_defines_every_kata_4_1_rpc() {
    let ours = include_str!("../protos/agent.proto");
    for name in KATA_RPCS.lines().filter(|l| !l.is_empty()) {
        assert!(
            ours.contains(&format!("\trpc {name}(")),
            "{name} missing from agent.proto"
        );
    }
    assert_eq!(KATA_RPCS.lines().filter(|l| !l.is_empty()).count(), 42);
}

// A policy that allows nothing: every implemented RPC is dispatched and denied by name,
// every other one answers UNIMPLEMENTED by name; none is unknown to the server.
#[tokio::test]
async fn every_kata_4_1_rpc_answers_by_name() {
    if let Err(why) = prerequisites() {
        return unavailable(&why);
    }
    let ta = TestAgent::start("package agent_policy\n").await;
    let c = ttrpc::r#async::Client::connect(&ta.sock).await.unwrap();
    for name in KATA_RPCS.lines().filter(|l| !l.is_empty()) {
        let e = raw_call(&c, name).await.unwrap_err();
        let (code, msg) = status(&e);
        match code {
            ttrpc::Code::PERMISSION_DENIED => {
                assert!(
                    msg.contains("Request") && msg.contains("denied"),
                    "{name}: {msg}"
                )
            }
            ttrpc::Code::UNIMPLEMENTED => {
                assert_eq!(msg, format!("{name} is not implemented"), "{name}")
            }
            other => panic!("{name}: {other:?} {msg}"),
        }
    }
    // The check can fail: ttrpc answers a method the service lacks with its own message.
    let (_, msg) = status(&raw_call(&c, "NoSuchRpc").await.unwrap_err());
    assert_ne!(msg, "NoSuchRpc is not implemented");
}

/// The capability bits in `/proc/<pid>/status` (`CapBnd: 00000000a80425fb`).
fn cap_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} not in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

const CAP_CHOWN: u64 = 1 << 0;
const CAP_KILL: u64 = 1 << 5;
const CAP_NET_RAW: u64 = 1 << 13;

fn trans_rs_spellings(spec: &mut coco_agent::protocols::oci::Spec, caps: &[&str]) {
    let c = spec
        .Process
        .as_mut()
        .unwrap()
        .Capabilities
        .as_mut()
        .unwrap();
    let caps: Vec<String> = caps.iter().map(|s| s.to_string()).collect();
    c.Bounding = caps.clone();
    c.Effective = caps.clone();
    c.Permitted = caps;
    for ns in spec.Linux.as_mut().unwrap().Namespaces.iter_mut() {
        ns.Type = match ns.Type.as_str() {
            "mount" => "mnt".into(),
            "network" => "net".into(),
            t => t.into(),
        };
    }
}

/// A registry with the busybox image, and an allow-all agent with its sandbox created.
struct Pod {
    client: agent_ttrpc::AgentServiceClient,
    image: String,
    _agent: TestAgent,
    _registry: Registry,
    _work: tempfile::TempDir,
}

impl Pod {
    async fn start() -> Pod {
        let work = tempfile::tempdir().unwrap();
        let reg = Registry::start().await;
        let image = push_busybox(&reg, work.path()).await;
        let ta = TestAgent::start_with(ALLOW_ALL_POLICY, std::slice::from_ref(&reg.addr)).await;
        let (client, _) = ta.clients().await;
        let mut sb = agent::CreateSandboxRequest::new();
        sb.sandbox_id = "sb".into();
        client.create_sandbox(ctx(), &sb).await.unwrap();
        Pod {
            client,
            image,
            _agent: ta,
            _registry: reg,
            _work: work,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_rs_spellings_run_with_exactly_the_requested_capabilities() {
    if let Err(why) = prerequisites() {
        return unavailable(&why);
    }
    let pod = Pod::start().await;
    let (c, image) = (&pod.client, pod.image.clone());
    let mut pause = create_request("pause", "sandbox", "", &["/pause"]);
    trans_rs_spellings(pause.OCI.as_mut().unwrap(), &["KILL"]);
    c.create_container(ctx(), &pause).await.unwrap();
    let mut st = agent::StartContainerRequest::new();
    st.container_id = "pause".into();
    c.start_container(ctx(), &st).await.unwrap();

    let mut app = create_request(
        "app",
        "container",
        &image,
        &["/bin/cat", "/proc/self/status"],
    );
    trans_rs_spellings(
        app.OCI.as_mut().unwrap(),
        &["CHOWN", "NET_RAW", "\"CAP_KILL\""],
    );
    // What the policy and runc are given is the canonical spelling; the wire carries Kata's.
    let wire = app.write_to_bytes().unwrap();
    assert!(wire.windows(7).any(|w| w == b"NET_RAW"));
    c.create_container(ctx(), &app).await.unwrap();
    st.container_id = "app".into();
    c.start_container(ctx(), &st).await.unwrap();
    let status = String::from_utf8(read_all(c, "app", "app", false).await).unwrap();
    let want = CAP_CHOWN | CAP_NET_RAW | CAP_KILL;
    for field in ["CapBnd:", "CapEff:", "CapPrm:"] {
        assert_eq!(cap_mask(&status, field), want, "{field}\n{status}");
    }

    // An exec in the sandbox with a smaller set, also without the prefix.
    let mut ex = coco_agent::requests::exec("pause", "e1", &["/bin/cat", "/proc/self/status"]);
    let mut caps = coco_agent::protocols::oci::LinuxCapabilities::new();
    caps.Bounding = vec!["KILL".into()];
    caps.Effective = vec!["KILL".into()];
    caps.Permitted = vec!["KILL".into()];
    ex.process.as_mut().unwrap().Capabilities = Some(caps).into();
    c.exec_process(ctx(), &ex).await.unwrap();
    let status = String::from_utf8(read_all(c, "pause", "e1", false).await).unwrap();
    assert_eq!(cap_mask(&status, "CapEff:"), CAP_KILL, "{status}");
    assert_eq!(cap_mask(&status, "CapBnd:"), CAP_KILL, "{status}");

    // EOF as Kata ≥ 3.27: OK with no data, again and again, on both streams.
    let mut rd = agent::ReadStreamRequest::new();
    rd.container_id = "app".into();
    rd.exec_id = "app".into();
    rd.len = 64;
    for _ in 0..2 {
        assert!(c.read_stdout(ctx(), &rd).await.unwrap().data.is_empty());
        assert!(c.read_stderr(ctx(), &rd).await.unwrap().data.is_empty());
    }

    // A capability neither runtime can spell is refused before runc sees it.
    let mut bad = create_request("bad", "container", &image, &["/bin/true"]);
    trans_rs_spellings(bad.OCI.as_mut().unwrap(), &["CAP_NOT_A_CAP"]);
    let (code, msg) = status_of(c.create_container(ctx(), &bad).await.unwrap_err());
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("CAP_NOT_A_CAP"), "{msg}");
}

fn status_of(e: ttrpc::Error) -> (ttrpc::Code, String) {
    status(&e)
}

/// Linux capability numbers (`include/uapi/linux/capability.h`) of the capabilities
/// in kata-agent-ctl's OCI template.
const TEMPLATE_CAPS: [(&str, u32); 14] = [
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("NET_BIND_SERVICE", 10),
    ("NET_RAW", 13),
    ("SYS_CHROOT", 18),
    ("MKNOD", 27),
    ("AUDIT_WRITE", 29),
    ("SETFCAP", 31),
];

// The CreateContainerRequest kata-agent-ctl itself sent (captured on the wire; see
// fixtures/README.md): its spec, produced by Kata's Rust conversion, runs as asked once
// given the guest-pull storage our agent requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kata_agent_ctl_spec_runs_with_exactly_its_capabilities() {
    if let Err(why) = prerequisites() {
        return unavailable(&why);
    }
    let captured = agent::CreateContainerRequest::parse_from_bytes(include_bytes!(
        "fixtures/kata-agent-ctl-create-container.pb"
    ))
    .unwrap();
    let mut spec = captured.OCI.as_ref().unwrap().clone();
    // What the peer sent, before our agent canonicalises it.
    let sent = &spec.Process.Capabilities.Bounding;
    assert!(sent.iter().all(|c| !c.starts_with("CAP_")), "{sent:?}");
    let ns: Vec<&str> = spec
        .Linux
        .Namespaces
        .iter()
        .map(|n| n.Type.as_str())
        .collect();
    assert!(ns.contains(&"net") && ns.contains(&"mnt"), "{ns:?}");
    let want = TEMPLATE_CAPS
        .iter()
        .filter(|(name, _)| sent.iter().any(|s| s == name))
        .fold(0u64, |m, (_, bit)| m | 1 << bit);
    assert_eq!(want.count_ones() as usize, sent.len(), "{sent:?}");

    let pod = Pod::start().await;
    let (c, image) = (&pod.client, pod.image.clone());
    c.create_container(ctx(), &create_request("pause", "sandbox", "", &["/pause"]))
        .await
        .unwrap();
    let mut st = agent::StartContainerRequest::new();
    st.container_id = "pause".into();
    c.start_container(ctx(), &st).await.unwrap();

    spec.Process.as_mut().unwrap().Args = vec!["/bin/cat".into(), "/proc/self/status".into()];
    spec.Process.as_mut().unwrap().Terminal = false;
    let cid = "agentctl";
    spec.Linux.as_mut().unwrap().CgroupsPath =
        format!("/coco-agent-test/{cid}-{}", std::process::id());
    let req = coco_agent::requests::guest_pull_create(cid, "container", &image, spec);
    c.create_container(ctx(), &req).await.unwrap();
    st.container_id = cid.into();
    c.start_container(ctx(), &st).await.unwrap();
    let status = String::from_utf8(read_all(c, cid, cid, false).await).unwrap();
    for field in ["CapBnd:", "CapEff:", "CapPrm:"] {
        assert_eq!(cap_mask(&status, field), want, "{field}\n{status}");
    }
}
