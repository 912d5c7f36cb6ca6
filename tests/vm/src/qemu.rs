//! How a VM configuration becomes a hypervisor command line. Behind the [`Hypervisor`]
//! trait so the argument generation is unit-tested without starting anything, and so
//! another VMM (cloud-hypervisor) can be added later.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Acceleration. TCG works everywhere; KVM where the host really has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    /// `COCO_VM_ACCEL=kvm` selects KVM; the default is TCG. Not auto-detected: a
    /// `/dev/kvm` that opens is not proof of a usable one (nested setups without
    /// working KVM hang the guest instead of failing).
    pub fn from_env() -> Self {
        match std::env::var("COCO_VM_ACCEL").as_deref() {
            Ok("kvm") => Accel::Kvm,
            _ => Accel::Tcg,
        }
    }
}

/// Guest firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's default SeaBIOS: fastest boot under TCG.
    SeaBios,
    /// A unified OVMF image (`-bios`), needed for measured direct boot.
    Ovmf(PathBuf),
}

/// Everything about one VM that ends up on the hypervisor's command line.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub firmware: Firmware,
    /// Attach a virtio-vsock device (vhost-user, served by vhost-device-vsock).
    pub vsock: bool,
    /// Attach a slirp (user-mode) NIC; the guest reaches host loopback via 10.0.2.2.
    pub network: bool,
    /// Attach a TPM 2.0 backed by swtpm.
    pub tpm: bool,
    /// swtpm state to start from (copied; e.g. a TPM whose AK was enrolled on the
    /// host beforehand). Fresh state when `None`.
    pub tpm_state: Option<PathBuf>,
    /// Bytes of the initdata disk (first virtio disk, read-only).
    pub initdata: Option<Vec<u8>>,
    /// Size of a blank scratch disk (next virtio disk), MiB.
    pub scratch_mib: Option<u64>,
}

impl VmConfig {
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, cmdline: &str) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: initrd.into(),
            cmdline: cmdline.to_string(),
            memory_mib: 512,
            vcpus: 1,
            accel: Accel::from_env(),
            firmware: Firmware::SeaBios,
            vsock: false,
            network: false,
            tpm: false,
            tpm_state: None,
            initdata: None,
            scratch_mib: None,
        }
    }
}

/// Host paths the running VM's devices use (all inside the VM's work directory).
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub serial_log: PathBuf,
    /// vhost-user control socket (QEMU ↔ vhost-device-vsock).
    pub vhost_user_socket: PathBuf,
    pub swtpm_socket: PathBuf,
    pub initdata_disk: PathBuf,
    pub scratch_disk: PathBuf,
}

impl VmPaths {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            serial_log: dir.join("serial.log"),
            vhost_user_socket: dir.join("vhost-user-vsock.sock"),
            swtpm_socket: dir.join("swtpm.sock"),
            initdata_disk: dir.join("initdata.img"),
            scratch_disk: dir.join("scratch.img"),
        }
    }
}

/// A virtual machine monitor we can drive.
pub trait Hypervisor {
    /// The command that starts the VM (not yet spawned).
    fn command(&self, cfg: &VmConfig, paths: &VmPaths) -> Command;
}

/// QEMU (`qemu-system-x86_64`).
#[derive(Debug, Clone)]
pub struct Qemu {
    pub binary: PathBuf,
}

impl Qemu {
    /// The arguments, separately from the binary (what the unit tests check).
    pub fn args(cfg: &VmConfig, paths: &VmPaths) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let accel = match cfg.accel {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        };
        push(&[
            "-accel",
            accel,
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
        ]);
        push(&["-vga", "none", "-monitor", "none"]);
        push(&[
            "-smp",
            &cfg.vcpus.to_string(),
            "-m",
            &format!("{}M", cfg.memory_mib),
        ]);
        push(&["-serial", &format!("file:{}", paths.serial_log.display())]);
        if cfg.vsock {
            // vhost-user needs guest memory the backend process can map: shared memfd.
            push(&[
                "-object",
                &format!(
                    "memory-backend-memfd,id=mem0,size={}M,share=on",
                    cfg.memory_mib
                ),
                "-machine",
                "pc,memory-backend=mem0",
                "-chardev",
                &format!("socket,id=vhu0,path={}", paths.vhost_user_socket.display()),
                "-device",
                "vhost-user-vsock-pci,chardev=vhu0",
            ]);
        } else {
            push(&["-machine", "pc"]);
        }
        if let Firmware::Ovmf(fw) = &cfg.firmware {
            push(&["-bios", &fw.display().to_string()]);
        }
        push(&["-kernel", &cfg.kernel.display().to_string()]);
        push(&["-initrd", &cfg.initrd.display().to_string()]);
        push(&["-append", &cfg.cmdline]);
        if cfg.initdata.is_some() {
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=initdata,readonly=on",
                    paths.initdata_disk.display()
                ),
                "-device",
                "virtio-blk-pci,drive=initdata",
            ]);
        }
        if cfg.scratch_mib.is_some() {
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=scratch",
                    paths.scratch_disk.display()
                ),
                "-device",
                "virtio-blk-pci,drive=scratch",
            ]);
        }
        if cfg.network {
            // romfile= skips the iPXE option ROM: faster boot, nothing to PXE anyway.
            push(&[
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:12:34:56",
            ]);
        }
        if cfg.tpm {
            push(&[
                "-chardev",
                &format!("socket,id=chrtpm,path={}", paths.swtpm_socket.display()),
                "-tpmdev",
                "emulator,id=tpm0,chardev=chrtpm",
                "-device",
                "tpm-tis,tpmdev=tpm0",
            ]);
        }
        a
    }
}

impl Hypervisor for Qemu {
    fn command(&self, cfg: &VmConfig, paths: &VmPaths) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(Self::args(cfg, paths));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(cfg: &VmConfig) -> String {
        Qemu::args(cfg, &VmPaths::in_dir(Path::new("/w"))).join(" ")
    }

    #[test]
    fn minimal_vm_has_no_extra_devices() {
        let mut cfg = VmConfig::new("/k", "/i", "console=ttyS0");
        cfg.accel = Accel::Tcg;
        let a = joined(&cfg);
        assert!(a.contains("-accel tcg"));
        assert!(a.contains("-kernel /k -initrd /i -append console=ttyS0"));
        assert!(a.contains("-serial file:/w/serial.log"));
        for absent in ["vsock", "netdev", "tpm", "drive", "-bios"] {
            assert!(!a.contains(absent), "{absent} in {a}");
        }
    }

    #[test]
    fn all_devices() {
        let mut cfg = VmConfig::new("/k", "/i", "x");
        cfg.vsock = true;
        cfg.network = true;
        cfg.tpm = true;
        cfg.initdata = Some(vec![0; 512]);
        cfg.scratch_mib = Some(8);
        cfg.firmware = Firmware::Ovmf("/fw.fd".into());
        cfg.memory_mib = 256;
        let a = joined(&cfg);
        assert!(
            a.contains("memory-backend-memfd,id=mem0,size=256M,share=on"),
            "{a}"
        );
        assert!(a.contains("vhost-user-vsock-pci,chardev=vhu0"));
        assert!(a.contains("path=/w/vhost-user-vsock.sock"));
        assert!(a.contains("id=initdata,readonly=on"));
        assert!(a.contains("file=/w/scratch.img,format=raw"));
        assert!(a.contains("user,id=net0"));
        assert!(a.contains("emulator,id=tpm0,chardev=chrtpm"));
        assert!(a.contains("-bios /fw.fd"));
        // initdata must be the first disk (the guest finds it at /dev/vda).
        assert!(a.find("id=initdata").unwrap() < a.find("id=scratch").unwrap());
    }
}
