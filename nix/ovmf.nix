# The confidential OVMF builds listed in deploy/guest-image.toml ([firmware.*]: the
# edk2 platform and file name scripts/build-ovmf.sh uses on the Debian path), built
# with nixpkgs' edk2.mkDerivation, the builder nixpkgs' own OVMF packages use. Not
# OVMF.override: its arguments changed across releases (csmSupport went away in
# NixOS/nixpkgs#291963, projectDscPath/fwPrefix later), and its postInstall moves
# FV/<fwPrefix>.fd while these platforms write FV/OVMF.fd.
{ lib, edk2, util-linux, nasm, acpica-tools }:

let
  contents = builtins.fromTOML (builtins.readFile ../deploy/guest-image.toml);

  build = variant: fw:
    assert lib.assertMsg (lib.versionAtLeast edk2.version contents.measure.edk2_min)
      "edk2 ${edk2.version} predates edk2-stable${contents.measure.edk2_min} (SNP kernel hashes)";
    edk2.mkDerivation fw.dsc (finalAttrs: {
      pname = "coco-ovmf-${lib.toLower variant}";
      version = edk2.version;
      outputs = [ "out" "fd" ];
      nativeBuildInputs = [ util-linux nasm acpica-tools ];
      strictDeps = true;
      hardeningDisable = [ "format" "stackprotector" "pic" "fortify" ];
      buildConfig = "RELEASE";
      # AmdSevX64.dsc embeds a grub.efi that its prebuild hook makes with grub.sh
      # unless one exists; the kernel boots directly (measured through the
      # kernel-hashes table), so an empty one keeps grub out.
      postPatch = lib.optionalString (variant == "AmdSev") ''
        touch OvmfPkg/AmdSev/Grub/grub.efi
      '';
      # Both platforms write one combined image (no CODE/VARS split: the TEE
      # measures it, QEMU maps it read-only with -bios).
      postInstall = ''
        mkdir -p $fd/FV
        mv -v $out/FV/OVMF.fd $fd/FV/${fw.file}
      '';
      dontPatchELF = true;
      passthru = {
        inherit (fw) tee file;
        firmware = "${finalAttrs.finalPackage.fd}/FV/${fw.file}";
      };
    });
in
lib.mapAttrs build contents.firmware
