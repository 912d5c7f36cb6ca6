//! Field-number compatibility with Kata's protocol: messages hand-encoded from Kata's
//! field numbers (wire type and number per field, as Kata's shim puts them on the wire)
//! must decode into our types with every field in place, and ours must encode the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coco_agent::protocols::{agent, health, types};
use protobuf::Message;

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Field `num` with wire type 2 (length-delimited).
fn ld(num: u64, body: &[u8]) -> Vec<u8> {
    let mut out = varint(num << 3 | 2);
    out.extend(varint(body.len() as u64));
    out.extend_from_slice(body);
    out
}

/// Field `num` with wire type 0 (varint).
fn vi(num: u64, v: u64) -> Vec<u8> {
    let mut out = varint(num << 3);
    out.extend(varint(v));
    out
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn create_container_request_with_guest_pull_storage() {
    let opts = r#"image_guest_pull={"metadata":{"io.kubernetes.cri.container-type":"container"}}"#;
    let storage = cat(&[
        ld(1, b"image_guest_pull"),
        ld(2, opts.as_bytes()),
        ld(3, b"registry.local/app:1"),
        ld(4, b"overlay"),
        ld(5, b"ro"),
        ld(6, b"/run/kata-containers/c1/rootfs"),
        ld(7, &cat(&[vi(2, 1000), vi(3, 1)])), // FSGroup{group_id=2, policy=3}
    ]);
    let user = cat(&[vi(1, 1000), vi(2, 2000), vi(3, 5), ld(4, b"app")]);
    let process = cat(&[
        vi(1, 1),          // Terminal
        ld(3, &user),      // User
        ld(4, b"/bin/sh"), // Args
        ld(4, b"-c"),
        ld(5, b"PATH=/bin"),      // Env
        ld(6, b"/work"),          // Cwd
        vi(9, 1),                 // NoNewPrivileges
        vi(11, (-500i64) as u64), // OOMScoreAdj (int64, two's complement varint)
    ]);
    let ns = cat(&[ld(1, b"pid"), ld(2, b"/proc/1/ns/pid")]);
    let mem = cat(&[vi(1, 1 << 30)]);
    let resources = cat(&[ld(2, &mem)]);
    let linux = cat(&[ld(4, &resources), ld(5, b"/kubepods/pod1/c1"), ld(6, &ns)]);
    let annotation = cat(&[
        ld(1, b"io.kubernetes.cri.container-type"),
        ld(2, b"container"),
    ]);
    let mount = cat(&[
        ld(1, b"/etc/hosts"),
        ld(2, b"/run/x-hosts"),
        ld(3, b"bind"),
        ld(4, b"rbind"),
    ]);
    let spec = cat(&[
        ld(1, b"1.0.2"),
        ld(2, &process),
        ld(3, &cat(&[ld(1, b"/rootfs"), vi(2, 1)])),
        ld(4, b"pod-host"),
        ld(5, &mount),
        ld(7, &annotation),
        ld(8, &linux),
    ]);
    let device = cat(&[
        ld(1, b"0000:00:02.0"),
        ld(2, b"blk"),
        ld(3, b"/dev/vdb"),
        ld(4, b"/dev/xvda"),
    ]);
    let shared = cat(&[
        ld(1, b"m"),
        ld(2, b"a"),
        ld(3, b"/s"),
        ld(4, b"b"),
        ld(5, b"/d"),
    ]);
    let wire = cat(&[
        ld(1, b"c1"),
        ld(2, b"e1"),
        ld(3, &cat(&[ld(1, b"1000"), ld(2, b"2000"), ld(3, b"5")])),
        ld(4, &device),
        ld(5, &storage),
        ld(6, &spec),
        vi(7, 1),
        ld(8, &shared),
    ]);
    let r = agent::CreateContainerRequest::parse_from_bytes(&wire).unwrap();
    assert_eq!(r.container_id, "c1");
    assert_eq!(r.exec_id, "e1");
    assert_eq!(r.string_user.additionalGids, vec!["5"]);
    assert_eq!(r.devices[0].vm_path, "/dev/vdb");
    assert_eq!(r.devices[0].container_path, "/dev/xvda");
    let s = &r.storages[0];
    assert_eq!(s.driver, "image_guest_pull");
    assert_eq!(s.driver_options, vec![opts]);
    assert_eq!(s.source, "registry.local/app:1");
    assert_eq!(s.fstype, "overlay");
    assert_eq!(s.options, vec!["ro"]);
    assert_eq!(s.mount_point, "/run/kata-containers/c1/rootfs");
    assert_eq!(s.fs_group.group_id, 1000);
    assert_eq!(s.fs_group.group_change_policy.value(), 1);
    let o = &r.OCI;
    assert_eq!(o.Version, "1.0.2");
    assert!(o.Process.Terminal);
    assert_eq!((o.Process.User.UID, o.Process.User.GID), (1000, 2000));
    assert_eq!(o.Process.User.AdditionalGids, vec![5]);
    assert_eq!(o.Process.Args, vec!["/bin/sh", "-c"]);
    assert_eq!(o.Process.Cwd, "/work");
    assert!(o.Process.NoNewPrivileges);
    assert_eq!(o.Process.OOMScoreAdj, -500);
    assert_eq!(o.Root.Path, "/rootfs");
    assert!(o.Root.Readonly);
    assert_eq!(o.Hostname, "pod-host");
    assert_eq!(o.Mounts[0].type_, "bind");
    assert_eq!(
        o.Annotations["io.kubernetes.cri.container-type"],
        "container"
    );
    assert_eq!(o.Linux.CgroupsPath, "/kubepods/pod1/c1");
    assert_eq!(o.Linux.Resources.Memory.Limit, 1 << 30);
    assert_eq!(o.Linux.Namespaces[0].Path, "/proc/1/ns/pid");
    assert!(r.sandbox_pidns);
    assert_eq!(r.shared_mounts[0].dst_path, "/d");
    assert_eq!(
        r.special_fields.unknown_fields().iter().count(),
        0,
        "every field known"
    );
}

#[test]
fn exec_signal_wait_and_stream_messages() {
    let process = cat(&[ld(4, b"/bin/ls"), ld(6, b"/")]);
    let wire = cat(&[ld(1, b"c1"), ld(2, b"exec-1"), ld(4, &process)]);
    let e = agent::ExecProcessRequest::parse_from_bytes(&wire).unwrap();
    assert_eq!(
        (e.container_id.as_str(), e.exec_id.as_str()),
        ("c1", "exec-1")
    );
    assert_eq!(e.process.Args, vec!["/bin/ls"]);
    // Our encoder produces exactly Kata's bytes (fields in number order).
    assert_eq!(e.write_to_bytes().unwrap(), wire);

    let s = agent::SignalProcessRequest::parse_from_bytes(&cat(&[ld(1, b"c1"), vi(3, 9)])).unwrap();
    assert_eq!((s.exec_id.as_str(), s.signal), ("", 9));

    let mut w = agent::WaitProcessResponse::new();
    w.status = 137;
    assert_eq!(w.write_to_bytes().unwrap(), vi(1, 137));

    let r =
        agent::ReadStreamRequest::parse_from_bytes(&cat(&[ld(1, b"c"), ld(2, b"e"), vi(3, 32768)]))
            .unwrap();
    assert_eq!(r.len, 32768);
    let ws = agent::WriteStreamRequest::parse_from_bytes(&cat(&[ld(1, b"c"), ld(3, b"\x00\xff")]))
        .unwrap();
    assert_eq!(ws.data, b"\x00\xff");
}

#[test]
fn copy_file_sandbox_policy_and_health() {
    let wire = cat(&[
        ld(1, b"/run/kata-containers/shared/containers/x-hosts"),
        vi(2, 20),
        vi(3, 0o100644),
        vi(4, 0o750),
        vi(5, (-1i64) as u64), // int32 -1 is a 10-byte varint on the wire
        vi(6, 0),
        vi(7, 11),
        ld(8, b"127.0.0.1"),
    ]);
    let c = agent::CopyFileRequest::parse_from_bytes(&wire).unwrap();
    assert_eq!(
        (c.file_size, c.file_mode, c.dir_mode, c.uid, c.offset),
        (20, 0o100644, 0o750, -1, 11)
    );
    assert_eq!(c.data, b"127.0.0.1");

    let module = cat(&[ld(1, b"vsock"), ld(2, b"a=1")]);
    let sb = agent::CreateSandboxRequest::parse_from_bytes(&cat(&[
        ld(1, b"pod"),
        ld(2, b"nameserver 10.0.0.1"),
        vi(4, 1),
        ld(5, b"sb-1"),
        ld(6, b"/hooks"),
        ld(7, &module),
        vi(8, 1),
    ]))
    .unwrap();
    assert_eq!(
        (sb.hostname.as_str(), sb.sandbox_id.as_str()),
        ("pod", "sb-1")
    );
    assert_eq!(sb.dns, vec!["nameserver 10.0.0.1"]);
    assert!(sb.sandbox_pidns && sb.guest_userns);
    assert_eq!(sb.kernel_modules[0].parameters, vec!["a=1"]);

    let sp = agent::SetPolicyRequest::parse_from_bytes(&ld(1, b"package agent_policy")).unwrap();
    assert_eq!(sp.policy, "package agent_policy");

    let mut h = health::HealthCheckResponse::new();
    h.status = health::health_check_response::ServingStatus::SERVING.into();
    assert_eq!(h.write_to_bytes().unwrap(), vi(1, 1));
    let v = health::VersionCheckResponse::parse_from_bytes(&cat(&[ld(1, b"g"), ld(2, b"3.2.0")]))
        .unwrap();
    assert_eq!(v.agent_version, "3.2.0");

    let gd = agent::GuestDetailsResponse::parse_from_bytes(&cat(&[
        vi(1, 128 << 20),
        ld(
            2,
            &cat(&[
                ld(1, b"3.2.0"),
                vi(2, 1),
                ld(4, b"image_guest_pull"),
                vi(5, 1),
            ]),
        ),
        vi(3, 1),
    ]))
    .unwrap();
    assert!(gd.agent_details.init_daemon && gd.support_mem_hotplug_probe);
}

#[test]
fn network_types() {
    let ip = cat(&[vi(1, 1), ld(2, b"fd00::2"), ld(3, b"64")]);
    let wire = cat(&[
        ld(1, b"eth0"),
        ld(2, b"eth0"),
        ld(3, &ip),
        vi(4, 1500),
        ld(5, b"02:00:ca:fe:00:01"),
        ld(6, b"02/00"),
        ld(7, b"veth"),
        vi(8, 0x1003),
    ]);
    let i = types::Interface::parse_from_bytes(&wire).unwrap();
    assert_eq!(
        i.IPAddresses[0].family.enum_value().unwrap(),
        types::IPFamily::v6
    );
    assert_eq!(
        (i.mtu, i.hwAddr.as_str(), i.raw_flags),
        (1500, "02:00:ca:fe:00:01", 0x1003)
    );
    let req = agent::UpdateInterfaceRequest::parse_from_bytes(&ld(1, &wire)).unwrap();
    assert_eq!(req.interface.devicePath, "02/00");

    let route = cat(&[
        ld(1, b"10.0.0.0/24"),
        ld(2, b"10.0.0.1"),
        ld(3, b"eth0"),
        ld(4, b"10.0.0.2"),
        vi(5, 253),
        vi(6, 0),
        vi(7, 4),
    ]);
    let rr = agent::UpdateRoutesRequest::parse_from_bytes(&ld(1, &ld(1, &route))).unwrap();
    let r = &rr.routes.Routes[0];
    assert_eq!(
        (r.dest.as_str(), r.gateway.as_str(), r.scope, r.flags),
        ("10.0.0.0/24", "10.0.0.1", 253, 4)
    );

    let neigh = cat(&[
        ld(1, &cat(&[ld(2, b"10.0.0.9")])),
        ld(2, b"eth0"),
        ld(3, b"02:00:00:00:00:09"),
        vi(4, 0x80),
        vi(5, 0),
    ]);
    let a = agent::AddARPNeighborsRequest::parse_from_bytes(&ld(1, &ld(1, &neigh))).unwrap();
    let n = &a.neighbors.ARPNeighbors[0];
    assert_eq!(
        (n.toIPAddress.address.as_str(), n.lladdr.as_str(), n.state),
        ("10.0.0.9", "02:00:00:00:00:09", 0x80)
    );
}
