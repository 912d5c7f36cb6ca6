//! A pod's workload policy as `coco-policy` generates it, in a real VM: the pod owner
//! generates the policy and initdata for a one-container Pod from the registry, the host
//! boots the VM with that initdata and sends what containerd + the Kata shim send
//! (tests/vm/src/k8s.rs, a model written from the runtime, not from the generator). The
//! pod runs; the host's attacks on it in the same VM are refused with PERMISSION_DENIED.
//! Needs `scripts/setup-vm-tools.sh` and `cargo build --release -p coco-agent`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coco_agent::protocols::{agent, oci};
use coco_policy::image::Resolver;
use coco_policy::initdata::Settings;
use image_mgmt::registry::{Platform, Registry as RegistryClient, RegistryOptions};
use vm_tests::attacks::{digest_of, pinned, push_with_plain_layer};
use vm_tests::guest::Guest;
use vm_tests::k8s::{self, KubeContainer, KubePod};
use vm_tests::pod::PodVm;
use vm_tests::services::{AppImage, Kbs, Registry, ALLOW_SAMPLE_POLICY};
use vm_tests::shim::{rpc_err, RpcError, Shim};
use vm_tests::Vm;

/// The pod as its owner writes it: the app image by tag, its logs readable.
fn manifest(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\n  annotations:\n    coco-policy/read-logs: \"true\"\nspec:\n  runtimeClassName: kata-qemu-coco\n  containers:\n  - name: app\n    image: {image}\n"
    )
}

fn kube_pod() -> KubePod {
    KubePod {
        name: "web".into(),
        namespace: "default".into(),
        sandbox_id: "5b0c1d2e3f4a".into(),
    }
}

/// What containerd runs for the app image (its config as `AppImage::build` writes it: no
/// entrypoint, cmd `/app.sh`, two variables, no working directory or user).
fn app(image: &str) -> KubeContainer {
    KubeContainer::new(
        "app",
        image,
        &["/app.sh"],
        &["PATH=/bin", "APP_MESSAGE=set in the image config"],
    )
}

fn refused(what: &str, r: Result<(), RpcError>) {
    match r {
        Err(e) if e.code == Some(ttrpc::Code::PERMISSION_DENIED) => {
            eprintln!("{what}: refused ({e})")
        }
        Err(e) => panic!("{what}: failed, but not by the policy: {e}"),
        Ok(()) => panic!("{what}: admitted"),
    }
}

/// A change the host makes to the runtime's CreateContainer.
type Attack = fn(&mut agent::CreateContainerRequest);

fn process_mut(r: &mut agent::CreateContainerRequest) -> &mut oci::Process {
    r.OCI.as_mut().unwrap().Process.as_mut().unwrap()
}

/// The container's files and CreateContainer, bounded so a hang shows the console.
async fn create(
    shim: &mut Shim,
    vm: &Vm,
    pod: &KubePod,
    req: &agent::CreateContainerRequest,
) -> Result<(), RpcError> {
    match tokio::time::timeout(
        Duration::from_secs(120),
        shim.create_kube_container(pod, req),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => panic!("CreateContainer hung\n{}", vm.diagnostics()),
    }
}

/// The owner's generation for a Pod running `tagged`: resolved at the registry's host
/// address, pinned under the address the guest pulls from; its initdata digest
/// registered with the KBS; `image_policy` goes into its cdh.toml.
async fn owner_generates(
    registry: &Registry,
    kbs: &Kbs,
    tagged: &str,
    image_policy: Option<String>,
) -> coco_policy::Generated {
    let client = RegistryClient::new(RegistryOptions {
        platform: Platform::default(),
        insecure_registries: vec![registry.host_addr()],
        auth_file: None,
        retries: 2,
    })
    .unwrap();
    let opts = coco_policy::Options {
        resolver: Resolver::Online {
            registry: Box::new(client),
            via: BTreeMap::from([(registry.guest_addr(), registry.host_addr())]),
        },
        initdata: Settings {
            kbs_url: kbs.guest_url(),
            kbs_cert_pem: Some(kbs.ca_pem.clone()),
            insecure_registries: vec![registry.guest_addr()],
            image_policy,
        },
    };
    let generated = coco_policy::generate(&manifest(tagged), &opts)
        .await
        .unwrap();
    assert_eq!(generated.pods.len(), 1);
    kbs.set_reference_values(&serde_json::json!({
        "init_data_digest": [generated.pods[0].initdata.digest_hex()]
    }))
    .await
    .unwrap();
    generated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_policy_runs_the_pod_and_refuses_the_host_s_attacks() {
    let work = tempfile::tempdir().unwrap();
    let guest = Guest::get(&work.path().join("guest")).unwrap();
    let registry = Registry::start(work.path()).unwrap();
    let image = AppImage::build(work.path()).unwrap();
    let tagged = image.push(&registry, "plain", "app").unwrap();
    let kbs = Kbs::start().await.unwrap();

    let generated = owner_generates(&registry, &kbs, &tagged, None).await;
    let gen = &generated.pods[0];
    let digest = digest_of(&registry, "app:plain").unwrap();
    let pinned_ref = pinned(&tagged, &digest);
    assert_eq!(gen.data.containers[0].image, pinned_ref, "the pin");
    assert!(
        generated.manifest.contains(&pinned_ref),
        "{}",
        generated.manifest
    );

    let mut pod_vm = PodVm::new(gen.initdata.toml.clone());
    pod_vm.cmdline_extra = "agent.attester=sample".into();
    let (vm, mut shim) = pod_vm.boot(&guest).await.unwrap();
    shim.setup_network().await.unwrap();
    let pod = kube_pod();

    // (i) A sandbox with a kernel module and host-chosen parameters.
    let mut sb = k8s::sandbox_request(&pod);
    let mut module = agent::KernelModule::new();
    module.name = "loop".into();
    module.parameters = vec!["max_loop=64".into()];
    sb.kernel_modules.push(module);
    refused(
        "CreateSandbox with a kernel module",
        shim.agent
            .create_sandbox(ttrpc::context::with_timeout(0), &sb)
            .await
            .map(|_| ())
            .map_err(rpc_err("CreateSandbox")),
    );
    // (h) A policy of the host's choosing.
    let mut sp = agent::SetPolicyRequest::new();
    sp.policy = coco_agent::policy::ALLOW_ALL_POLICY.into();
    refused(
        "SetPolicy",
        shim.agent
            .set_policy(ttrpc::context::with_timeout(0), &sp)
            .await
            .map(|_| ())
            .map_err(rpc_err("SetPolicy")),
    );

    shim.create_kube_sandbox(&pod)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));

    // (g) Files outside the shim's per-container copies.
    for path in [
        "/etc/ld.so.preload",
        "/run/kata-containers/shared/containers/../../../etc/ld.so.preload",
        "/run/kata-containers/app1/rootfs/app.sh",
    ] {
        refused(
            &format!("CopyFile {path}"),
            shim.copy_file(path, b"/evil.so\n").await,
        );
    }

    // (a)-(c) The pinned image with another process.
    let attacks: [(&str, &str, Attack); 3] = [
        ("other args", "appa", |r| {
            process_mut(r).Args = vec!["/bin/sh".into(), "-c".into(), "echo pwned".into()]
        }),
        ("LD_PRELOAD", "appb", |r| {
            process_mut(r).Env.push("LD_PRELOAD=/evil.so".into())
        }),
        ("CAP_SYS_ADMIN", "appc", |r| {
            let c = process_mut(r).Capabilities.as_mut().unwrap();
            for set in [&mut c.Bounding, &mut c.Effective, &mut c.Permitted] {
                set.push("CAP_SYS_ADMIN".into());
            }
        }),
    ];
    for (what, cid, attack) in attacks {
        let mut r = k8s::container_request(&pod, cid, &app(&pinned_ref));
        attack(&mut r);
        refused(what, create(&mut shim, &vm, &pod, &r).await);
    }

    // The pod as containerd runs it: pulled by digest, run, its output read.
    let t = Instant::now();
    let r = k8s::container_request(&pod, "app1", &app(&pinned_ref));
    create(&mut shim, &vm, &pod, &r)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    let run = shim.run_app("app1", t).await.unwrap();
    assert!(
        run.stdout.contains("hello from a confidential pod")
            && run.stdout.contains("image env: set in the image config"),
        "{run:?}\n{}",
        vm.diagnostics()
    );
    assert_eq!(run.exit_code, 0, "{run:?}");
    eprintln!("the generated policy ran the pod: {:?}", run.stdout);

    // (f) kubectl exec: no exec is listed for app.
    refused(
        "ExecProcess",
        shim.exec("app1", "e1", &["/bin/sh", "-c", "echo pwned"])
            .await,
    );

    // (d) A second container of the pod that binds the first one's rootfs.
    let mut r = k8s::container_request(&pod, "appd", &app(&pinned_ref));
    let mut m = oci::Mount::new();
    m.destination = "/steal".into();
    m.type_ = "bind".into();
    m.source = "/run/kata-containers/app1/rootfs".into();
    m.options = vec!["rbind".into(), "rprivate".into()];
    r.OCI.as_mut().unwrap().Mounts.push(m);
    refused(
        "bind of app1's rootfs",
        create(&mut shim, &vm, &pod, &r).await,
    );

    // (e) The registry moves the tag to the host's image.
    push_with_plain_layer(&image, &registry, work.path(), "plain", "app", "plain").unwrap();
    let moved = digest_of(&registry, "app:plain").unwrap();
    assert_ne!(moved, digest, "the tag moved");
    let r = k8s::container_request(&pod, "appe", &app(&tagged));
    refused("the tag", create(&mut shim, &vm, &pod, &r).await);
    let r = k8s::container_request(&pod, "appe", &app(&pinned(&tagged, &moved)));
    refused(
        "the tag's new digest",
        create(&mut shim, &vm, &pod, &r).await,
    );
    // The pinned reference still pulls only what was pinned.
    let t = Instant::now();
    let r = k8s::container_request(&pod, "app2", &app(&pinned_ref));
    create(&mut shim, &vm, &pod, &r)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    let run = shim.run_app("app2", t).await.unwrap();
    assert!(
        run.stdout.contains("hello from a confidential pod") && !run.stdout.contains("pwned"),
        "{run:?}"
    );

    for c in ["app1", "app2", pod.sandbox_id.as_str()] {
        shim.stop(c).await.unwrap();
    }
    shim.destroy_sandbox().await.unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A generated policy makes the initdata tens of KiB: this also shows the KBS token
// stays under the bearer-token limit (it names the initdata by digest only).
async fn generated_policy_runs_an_encrypted_pod() {
    const KEK_ID: &str = "kbs:///default/image-kek/app";
    let work = tempfile::tempdir().unwrap();
    let guest = Guest::get(&work.path().join("guest")).unwrap();
    let registry = Registry::start(work.path()).unwrap();
    let image = AppImage::build(work.path()).unwrap();
    let kek = image.encrypt(KEK_ID).unwrap();
    let tagged = image.push(&registry, "encrypted", "app").unwrap();
    let kbs = Kbs::start().await.unwrap();
    kbs.set_resource("default/image-kek/app", &kek)
        .await
        .unwrap();
    kbs.set_resource_policy(ALLOW_SAMPLE_POLICY).await.unwrap();
    // The owner also requires encrypted layers for its repository, nothing else.
    let image_policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{}/app", registry.guest_addr()): [{"type": "encryptedLayers"}],
        }}
    });
    let generated = owner_generates(&registry, &kbs, &tagged, Some(image_policy.to_string())).await;
    let gen = &generated.pods[0];
    let pinned_ref = pinned(&tagged, &digest_of(&registry, "app:encrypted").unwrap());
    assert_eq!(gen.data.containers[0].image, pinned_ref, "the pin");

    let mut pod_vm = PodVm::new(gen.initdata.toml.clone());
    pod_vm.cmdline_extra = "agent.attester=sample".into();
    let (vm, mut shim) = pod_vm.boot(&guest).await.unwrap();
    shim.setup_network().await.unwrap();
    let pod = kube_pod();
    shim.create_kube_sandbox(&pod)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    // Encryption leaves the config alone: containerd runs the same process.
    let t = Instant::now();
    let r = k8s::container_request(&pod, "app1", &app(&pinned_ref));
    create(&mut shim, &vm, &pod, &r)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
    let run = shim.run_app("app1", t).await.unwrap();
    assert!(
        run.stdout.contains("hello from a confidential pod"),
        "{run:?}\n{}",
        vm.diagnostics()
    );
    assert!(
        vm.serial().contains("attested to the KBS"),
        "{}",
        vm.diagnostics()
    );
    eprintln!(
        "the generated policy ran the encrypted pod: {:?}",
        run.stdout
    );
    for c in ["app1", pod.sandbox_id.as_str()] {
        shim.stop(c).await.unwrap();
    }
    shim.destroy_sandbox().await.unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
}
