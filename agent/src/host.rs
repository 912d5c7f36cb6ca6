//! The VM-wide effects of sandbox requests (hostname, DNS, kernel modules, power off),
//! behind a trait so handlers can be tested in-process.

use std::path::PathBuf;

/// VM-wide operations.
#[async_trait::async_trait]
pub trait Host: Send + Sync + std::fmt::Debug {
    fn set_hostname(&self, name: &str) -> std::io::Result<()>;
    fn set_dns(&self, servers: &[String]) -> std::io::Result<()>;
    async fn load_module(&self, name: &str, params: &[String]) -> std::io::Result<()>;
    /// Powers the VM off (only as the VM's init); returns when that was requested.
    fn power_off(&self);
    /// Whether this agent is the VM's init.
    fn is_init(&self) -> bool;
    /// Mounts a tmpfs (Kata's `ephemeral` storage: /dev/shm, memory-backed emptyDir).
    fn mount_tmpfs(&self, target: &std::path::Path, options: &str) -> std::io::Result<()>;
    /// Unmounts (lazily) what `mount_tmpfs` mounted.
    fn unmount(&self, target: &std::path::Path) -> std::io::Result<()>;
}

/// The real host. Outside the VM (`init_mode == false`, e.g. on a development machine
/// with `unix://`) it refuses to touch machine-wide state and only logs.
#[derive(Debug, Clone)]
pub struct SystemHost {
    pub init_mode: bool,
    pub resolv_conf: PathBuf,
}

impl SystemHost {
    pub fn new(init_mode: bool) -> Self {
        Self {
            init_mode,
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

#[async_trait::async_trait]
impl Host for SystemHost {
    fn set_hostname(&self, name: &str) -> std::io::Result<()> {
        if !self.init_mode {
            tracing::info!(name, "not the VM's init: leaving the hostname alone");
            return Ok(());
        }
        nix::unistd::sethostname(name)?;
        Ok(())
    }

    fn set_dns(&self, servers: &[String]) -> std::io::Result<()> {
        if !self.init_mode || servers.is_empty() {
            return Ok(());
        }
        // The shim sends whole resolv.conf lines ("nameserver 10.0.0.1", "search ...").
        let mut text = servers.join("\n");
        text.push('\n');
        std::fs::write(&self.resolv_conf, text)
    }

    async fn load_module(&self, name: &str, params: &[String]) -> std::io::Result<()> {
        if !self.init_mode {
            return Ok(());
        }
        crate::init::modprobe(name, params).await
    }

    fn power_off(&self) {
        if !self.init_mode {
            tracing::info!("not the VM's init: not powering off");
            return;
        }
        nix::unistd::sync();
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        tracing::error!("power off failed: {e}");
    }

    fn is_init(&self) -> bool {
        self.init_mode
    }

    fn mount_tmpfs(&self, target: &std::path::Path, options: &str) -> std::io::Result<()> {
        use nix::mount::MsFlags;
        std::fs::create_dir_all(target)?;
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options),
        )?;
        Ok(())
    }

    fn unmount(&self, target: &std::path::Path) -> std::io::Result<()> {
        nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)?;
        Ok(())
    }
}
