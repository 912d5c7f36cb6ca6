# nixpkgs' LTS kernel with what a confidential guest needs built in (no modules to
# load before the root filesystem exists, and every byte of it is measured). What
# the agent needs from the kernel is deploy/guest-image.toml's [kernel.modules]
# (the modules the Debian path ships), built in here by their Kconfig symbols.
{ lib, linuxPackages_6_12 }:

let
  contents = builtins.fromTOML (builtins.readFile ../deploy/guest-image.toml);
  agentNeeds = lib.genAttrs (builtins.attrValues contents.kernel.modules) (_: lib.kernel.yes);
in
# 6.12 LTS: TSM_REPORTS (configfs-tsm, used by the attester) needs 6.7 or later.
linuxPackages_6_12.kernel.override {
  # Every option below must exist and take effect; a typo fails the build.
  ignoreConfigErrors = false;
  # mkForce: nixpkgs' common config builds some of these as modules.
  structuredExtraConfig = lib.mapAttrs (_: lib.mkForce) (agentNeeds // (with lib.kernel; {
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
    VIRTIO_CONSOLE = yes;
    # Integrity-protected container storage.
    BLK_DEV_DM = yes;
    DM_VERITY = yes;
    DM_INTEGRITY = yes;
  }));
}
