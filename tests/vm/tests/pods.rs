//! Confidential pods end to end in a real VM: the release `coco-agent` is the guest's
//! `/init`, the host drives it over vsock in Kata-shim order, the guest pulls from a
//! real registry, attests to a real KBS over TLS and decrypts in the guest.
//! Needs `scripts/setup-vm-tools.sh` and `cargo build --release -p coco-agent`
//! (scripts/test.sh does both); missing tools fail the test, they do not skip it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Instant;

use coco_image::initdata::Initdata;
use vm_tests::guest::Guest;
use vm_tests::pod::{
    attestations_from_serial, confidential_policy_with_logs, initdata_toml, PodVm,
};
use vm_tests::services::{AppImage, Kbs, Registry, ALLOW_SAMPLE_POLICY};

const KEK_ID: &str = "kbs:///default/image-kek/app";
const KEK_PATH: &str = "default/image-kek/app";

struct Fixture {
    _work: tempfile::TempDir,
    guest: Guest,
    registry: Registry,
    plain: String,
    encrypted: String,
    kbs: Kbs,
}

async fn fixture() -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let guest = Guest::get(&work.path().join("guest")).unwrap();
    eprintln!("guest initrd: {} bytes", guest.initrd_size);
    let registry = Registry::start(work.path()).unwrap();
    let app = AppImage::build(work.path()).unwrap();
    let plain = app.push(&registry, "plain", "app").unwrap();
    let kek = app.encrypt(KEK_ID).unwrap();
    let encrypted = app.push(&registry, "encrypted", "app").unwrap();
    let kbs = Kbs::start().await.unwrap();
    kbs.set_resource(KEK_PATH, &kek).await.unwrap();
    Fixture {
        _work: work,
        guest,
        registry,
        plain,
        encrypted,
        kbs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_tee_pod_plain_then_encrypted_denied_then_released_exec_refused() {
    let f = fixture().await;
    let policy = confidential_policy_with_logs();
    let mut pod = PodVm::new(initdata_toml(Some(&f.kbs), &f.registry, Some(&policy)));
    // No TEE under TCG: the sample attester, named explicitly (never trusted by
    // the KBS's default policy, as the denied step below shows).
    pod.cmdline_extra = "agent.attester=sample".into();
    // The pod's owner registers its initdata before it attests.
    f.kbs.register_initdata(&pod.initdata_toml).await.unwrap();
    // Layers and rootfs on dm-crypt with a key that never leaves the guest.
    pod.scratch_mib = Some(512);
    let (vm, mut shim) = pod.boot(&f.guest).await.unwrap();
    eprintln!("agent ready after {:?}", shim.timings.agent_ready);

    // The agent left the initramfs for a tmpfs root, so runc can pivot_root.
    assert!(
        vm.serial()
            .contains("root moved from the initramfs to a tmpfs"),
        "{}",
        vm.diagnostics()
    );
    shim.setup_network().await.unwrap();
    shim.create_sandbox("sb").await.unwrap();
    shim.start_pause().await.unwrap();

    // A plain image: pulled in the guest, run, output read back.
    let t = Instant::now();
    match tokio::time::timeout(
        std::time::Duration::from_secs(60),
        shim.create_app("plain", &f.plain),
    )
    .await
    {
        Ok(r) => r.unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics())),
        Err(_) => panic!("CreateContainer hung\n{}", vm.diagnostics()),
    }
    let run = shim.run_app("plain", t).await.unwrap();
    assert!(
        run.stdout.contains("hello from a confidential pod"),
        "{run:?}\n{}",
        vm.diagnostics()
    );
    assert!(
        run.stdout.contains("image env: set in the image config"),
        "{run:?}"
    );
    assert_eq!(run.exit_code, 0, "{run:?}");
    eprintln!(
        "plain pod: create {:?}, create→first output {:?}",
        shim.timings.create_app, shim.timings.create_to_first_output
    );

    // kubectl exec is refused by the confidential policy.
    let e = shim
        .exec("plain", "e1", &["/bin/sh", "-c", "echo pwned"])
        .await
        .unwrap_err();
    assert_eq!(e.code, Some(ttrpc::Code::PERMISSION_DENIED), "{e}");
    assert!(e.detail.contains("ExecProcessRequest"), "{e}");

    // The encrypted image under the KBS's default policy: the sample TEE gets no key,
    // CreateContainer fails and says why.
    let e = shim
        .create_app("enc-denied", &f.encrypted)
        .await
        .unwrap_err();
    assert!(e.detail.contains("PolicyDeny"), "{e}");
    eprintln!("denied as expected: {e}");

    // The (non-confidential) sample TEE allowed explicitly: attestation → key →
    // decryption in the guest → run.
    f.kbs
        .set_resource_policy(ALLOW_SAMPLE_POLICY)
        .await
        .unwrap();
    let t = Instant::now();
    shim.create_app("enc", &f.encrypted).await.unwrap();
    let run = shim.run_app("enc", t).await.unwrap();
    assert!(
        run.stdout.contains("hello from a confidential pod"),
        "{run:?}"
    );
    assert_eq!(run.exit_code, 0);
    eprintln!(
        "encrypted pod: create {:?}, create→first output {:?}",
        shim.timings.create_app, shim.timings.create_to_first_output
    );

    for c in ["plain", "enc", "sb"] {
        shim.stop(c).await.unwrap();
    }
    shim.destroy_sandbox().await.unwrap();
    vm.wait_exit(std::time::Duration::from_secs(60)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_attested_encrypted_pod_and_swapped_initdata_gets_no_key() {
    use vm_tests::attest::{enroll_tpm, pcr8_for, tpm_reference_values};
    use vm_tests::services::ALLOW_TPM_POLICY;
    let ovmf = vm_tests::tools::ovmf().unwrap();
    let f = fixture().await;
    let state = f._work.path().join("tpm-state");
    let ak = enroll_tpm(&state).unwrap();

    let policy = confidential_policy_with_logs();
    let good = initdata_toml(Some(&f.kbs), &f.registry, Some(&policy));
    let mut pod = PodVm::new(good.clone());
    pod.firmware = vm_tests::Firmware::Ovmf(ovmf);
    pod.tpm = true;
    pod.tpm_state = Some(state.clone());

    // Reference values: the enrolled AK, the measured boot (kernel in PCR 4,
    // initrd + cmdline in PCR 9, computed from the artifacts) and the pod's
    // initdata in PCR 8, its digest registered.
    let reference = tpm_reference_values(&f.guest, &pod, &ak).unwrap();
    f.kbs.set_reference_values(&reference).await.unwrap();
    f.kbs.set_resource_policy(ALLOW_TPM_POLICY).await.unwrap();

    // The pod as its owner defined it: the TPM attests, the key is released.
    {
        let (vm, mut shim) = pod.boot(&f.guest).await.unwrap();
        eprintln!("TPM pod: agent ready after {:?}", shim.timings.agent_ready);
        shim.setup_network().await.unwrap();
        shim.create_sandbox("sb").await.unwrap();
        shim.start_pause().await.unwrap();
        let t = Instant::now();
        shim.create_app("enc", &f.encrypted)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", vm.diagnostics()));
        let run = shim.run_app("enc", t).await.unwrap();
        assert!(
            run.stdout.contains("hello from a confidential pod"),
            "{run:?}"
        );
        eprintln!("TPM encrypted pod: create {:?}", shim.timings.create_app);
        shim.stop("enc").await.unwrap();
        shim.stop("sb").await.unwrap();
        shim.destroy_sandbox().await.unwrap();
        vm.wait_exit(std::time::Duration::from_secs(60)).unwrap();
    }

    // The host swaps the initdata for one whose policy lets it exec into the pod.
    // The guest binds what it got into PCR 8, the KBS sees a PCR 8 it does not
    // know and an initdata nobody registered, and the key stays in the KBS.
    let swapped = initdata_toml(
        Some(&f.kbs),
        &f.registry,
        Some(coco_agent::policy::ALLOW_ALL_POLICY),
    );
    assert_ne!(pcr8_for(&swapped).unwrap(), pcr8_for(&good).unwrap());
    let mut evil = pod.clone();
    evil.initdata_toml = swapped;
    let (vm, mut shim) = evil.boot(&f.guest).await.unwrap();
    shim.setup_network().await.unwrap();
    shim.create_sandbox("sb").await.unwrap();
    shim.start_pause().await.unwrap();
    let e = shim.create_app("enc", &f.encrypted).await.unwrap_err();
    eprintln!("swapped initdata refused as expected: {e}");
    assert!(e.detail.contains("403") || e.detail.contains("401"), "{e}");
    drop(vm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_digest_other_than_the_initdata_makes_the_attester_refuse() {
    let f = fixture().await;
    let policy = confidential_policy_with_logs();
    let toml = initdata_toml(Some(&f.kbs), &f.registry, Some(&policy));
    // The host launches the VM bound to another pod's initdata (the sample TEE's
    // stand-in for SNP HOST_DATA / TDX MRCONFIGID is on the cmdline) but hands it
    // this initdata disk.
    let other = initdata_toml(Some(&f.kbs), &f.registry, None);
    let other_digest = Initdata::parse(&other).unwrap().digest_hex();
    f.kbs.register_initdata(&toml).await.unwrap();
    f.kbs
        .set_resource_policy(ALLOW_SAMPLE_POLICY)
        .await
        .unwrap();
    let mut pod = PodVm::new(toml);
    pod.cmdline_extra = format!("agent.attester=sample agent.sample_host_data={other_digest}");
    let (vm, mut shim) = pod.boot(&f.guest).await.unwrap();
    assert!(
        vm.serial().contains("the attester refused the initdata"),
        "{}",
        vm.diagnostics()
    );
    shim.setup_network().await.unwrap();
    shim.create_sandbox("sb").await.unwrap();
    shim.start_pause().await.unwrap();
    // Even with a KBS that would release the key to the sample TEE, the guest never
    // asks: its attester refused to run with this initdata.
    let e = shim.create_app("enc", &f.encrypted).await.unwrap_err();
    eprintln!("refused as expected: {e}");
    assert!(e.detail.contains("refused the initdata"), "{e}");
    assert!(
        !vm.serial().contains("attested to the KBS"),
        "no attestation may happen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistently_swapped_initdata_attests_but_gets_no_key() {
    let f = fixture().await;
    let policy = confidential_policy_with_logs();
    let good = initdata_toml(Some(&f.kbs), &f.registry, Some(&policy));
    // The owner registers the pod's initdata; with it the KBS would release the
    // key to the sample TEE.
    f.kbs.register_initdata(&good).await.unwrap();
    f.kbs
        .set_resource_policy(ALLOW_SAMPLE_POLICY)
        .await
        .unwrap();
    // The host swaps in an allow-all initdata of its own (same KBS, so the guest
    // still attests there) and launches the VM with the digest of that one, as a
    // host chooses SNP HOST_DATA / TDX MRCONFIGID: initdata and launch digest
    // agree, so the guest's attester has nothing to refuse.
    let swapped = initdata_toml(
        Some(&f.kbs),
        &f.registry,
        Some(coco_agent::policy::ALLOW_ALL_POLICY),
    );
    let swapped_digest = Initdata::parse(&swapped).unwrap().digest_hex();
    assert_ne!(swapped_digest, Initdata::parse(&good).unwrap().digest_hex());
    let mut pod = PodVm::new(swapped);
    pod.cmdline_extra = format!("agent.attester=sample agent.sample_host_data={swapped_digest}");
    let (vm, mut shim) = pod.boot(&f.guest).await.unwrap();
    assert!(
        !vm.serial().contains("the attester refused the initdata"),
        "{}",
        vm.diagnostics()
    );
    shim.setup_network().await.unwrap();
    shim.create_sandbox("sb").await.unwrap();
    shim.start_pause().await.unwrap();
    // The evidence is bound to the swapped initdata, so it verifies; its digest is
    // not registered, so the appraisal is contraindicated and the key stays.
    let e = shim.create_app("enc", &f.encrypted).await.unwrap_err();
    eprintln!("consistently swapped initdata refused as expected: {e}");
    assert!(e.detail.contains("PolicyDeny"), "{e}");
    let attestations = attestations_from_serial(&vm.serial());
    assert!(
        !attestations.is_empty(),
        "the guest must have attested\n{}",
        vm.diagnostics()
    );
    assert!(
        attestations
            .iter()
            .all(|a| a.tee == "sample" && a.status == "contraindicated"),
        "{attestations:?}"
    );
}
