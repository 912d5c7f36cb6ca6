# The two confidential OVMF flavours from nixpkgs' edk2 package, selected by DSC.
{ OVMF }:

let
  build = { dsc, prefix }:
    (OVMF.override {
      projectDscPath = dsc;
      fwPrefix = prefix;
      # Neither flavour has SMM, a CSM or a varstore the host could tamper with.
      secureBoot = false;
      csmSupport = false;
    }).overrideAttrs (old: {
      postPatch = (old.postPatch or "") + ''
        # AmdSevX64.dsc embeds a grub.efi it builds with grub.sh; we boot the kernel
        # directly (measured via the kernel-hashes table), so an empty placeholder
        # keeps the grub build out of the closure.
        touch OvmfPkg/AmdSev/Grub/grub.efi
      '';
      # Both builds produce one combined image (no separate VARS), which replaces
      # nixpkgs' CODE/VARS split.
      postFixup = ''
        mkdir -p $fd/FV
        cp $out/FV/OVMF.fd $fd/FV/${prefix}.fd
      '';
    });
in
{
  snp = build { dsc = "OvmfPkg/AmdSev/AmdSevX64.dsc"; prefix = "AMDSEV"; };
  tdx = build { dsc = "OvmfPkg/IntelTdx/IntelTdxX64.dsc"; prefix = "INTELTDX"; };
}
