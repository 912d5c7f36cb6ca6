# The measured guest: initrd built by the project's own `coco-image build`, launch
# measurements and reference values by `coco-image measure` (no re-implementation in
# Nix, so `nix build .#guest-image` and the Debian path compute the same way).
{ lib, runCommand, jq, pkgsStatic, workspace, guestKernel, ovmfSnp, ovmfTdx }:

let
  # Shared with the Kata configuration in nix/node.nix and deploy/kata/.
  cmdline = "console=hvc0 panic=-1 quiet agent.log=info";
  version = guestKernel.modDirVersion;

  initrd = runCommand "coco-guest-initrd" {
    nativeBuildInputs = [ workspace ];
    SOURCE_DATE_EPOCH = 0;
  } ''
    # coco-image wants an unpacked kernel tree: boot/vmlinuz-R + lib/modules/R.
    mkdir -p tree/boot
    ln -s ${guestKernel}/bzImage tree/boot/vmlinuz-${version}
    ln -s ${guestKernel}/lib tree/lib
    coco-image build \
      --kernel-tree tree \
      --binary coco-agent=${workspace}/bin/coco-agent \
      --busybox ${pkgsStatic.busybox}/bin/busybox \
      --pause-bundle \
      --cmdline ${lib.escapeShellArg cmdline} \
      --out $out
  '';

  image = runCommand "coco-guest-image" {
    nativeBuildInputs = [ workspace jq ];
    passthru = { inherit cmdline initrd; kernel = guestKernel; };
  } ''
    mkdir -p $out
    cp -r ${initrd}/. $out/
    chmod -R u+w $out
    ln -s ${ovmfSnp.fd}/FV/AMDSEV.fd $out/OVMF-AmdSev.fd
    ln -s ${ovmfTdx.fd}/FV/INTELTDX.fd $out/OVMF-IntelTdx.fd
    coco-image measure --image $out \
      --snp-ovmf ${ovmfSnp.fd}/FV/AMDSEV.fd --vcpus 1,2,4 \
      --tdx-ovmf ${ovmfTdx.fd}/FV/INTELTDX.fd --tpm --machine q35 \
      --out $out/reference-values.json
    jq -e 'length > 0' $out/reference-values.json > /dev/null
  '';
in
{ inherit initrd image; }
