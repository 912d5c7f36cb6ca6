# nixpkgs' LTS kernel with what a confidential guest needs built in (no modules to
# load before the root filesystem exists, and every byte of it is measured).
{ lib, linuxPackages_6_12 }:

# 6.12 LTS: TSM_REPORTS (configfs-tsm, used by the attester) needs 6.7 or later.
linuxPackages_6_12.kernel.override {
  # Every option below must exist and take effect; a typo fails the build.
  ignoreConfigErrors = false;
  # mkForce: nixpkgs' common config builds some of these as modules.
  structuredExtraConfig = lib.mapAttrs (_: lib.mkForce) (with lib.kernel; {
    # SEV-SNP guest: memory encryption, /dev/sev-guest, TSM reports.
    AMD_MEM_ENCRYPT = yes;
    SEV_GUEST = yes;
    # TDX guest: /dev/tdx_guest.
    INTEL_TDX_GUEST = yes;
    TDX_GUEST_DRIVER = yes;
    TSM_REPORTS = yes;
    # vTPM (the `az-vtpm`-style and swtpm-backed guests).
    TCG_TPM = yes;
    TCG_TIS = yes;
    TCG_CRB = yes;
    # Agent transport and devices.
    VSOCKETS = yes;
    VIRTIO_VSOCKETS = yes;
    VIRTIO_PCI = yes;
    VIRTIO_BLK = yes;
    VIRTIO_NET = yes;
    VIRTIO_CONSOLE = yes;
    # Encrypted and integrity-protected container storage, overlay rootfs.
    BLK_DEV_DM = yes;
    DM_CRYPT = yes;
    DM_VERITY = yes;
    DM_INTEGRITY = yes;
    OVERLAY_FS = yes;
  });
}
