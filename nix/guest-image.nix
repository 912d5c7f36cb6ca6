# The measured guest: initrd built by the project's own `coco-image build`, launch
# measurements and reference values by `coco-image measure` (no re-implementation in
# Nix, so `nix build .#guest-image` and the Debian path compute the same way).
{ lib, runCommand, jq, pkgsStatic, workspace, guestKernel, ovmfSnp, ovmfTdx }:

let
  # Kata boots the guest with its own parameters (console, panic, nr_cpus, ...) followed
  # by the configuration's kernel_params, and the whole line is measured. So the image
  # is built with the line `coco-image kata-cmdline` composes from the Kata
  # configurations in deploy/kata/ (the ones nix/node.nix installs). One image serves
  # every RuntimeClass, so the build fails if two configurations compose differently.
  runtimeClasses = import ./runtime-classes.nix;
  kataConfigFor = rc: ../deploy/kata + "/${rc.config}";
  kataConfigs = map kataConfigFor (builtins.attrValues runtimeClasses);
  kataConfig = kataConfigFor runtimeClasses.kata-coco-snp;
  version = guestKernel.modDirVersion;

  initrd = runCommand "coco-guest-initrd" {
    nativeBuildInputs = [ workspace ];
    SOURCE_DATE_EPOCH = 0;
  } ''
    want=$(coco-image kata-cmdline --config ${kataConfig})
    for config in ${lib.concatMapStringsSep " " (c: "${c}") kataConfigs}; do
      got=$(coco-image kata-cmdline --config "$config")
      if [ "$got" != "$want" ]; then
        echo "$config: Kata would boot with '$got', not '$want'" >&2
        exit 1
      fi
    done
    # coco-image wants an unpacked kernel tree: boot/vmlinuz-R + lib/modules/R.
    mkdir -p tree/boot
    ln -s ${guestKernel}/bzImage tree/boot/vmlinuz-${version}
    ln -s ${guestKernel}/lib tree/lib
    coco-image build \
      --kernel-tree tree \
      --binary coco-agent=${workspace}/bin/coco-agent \
      --busybox ${pkgsStatic.busybox}/bin/busybox \
      --pause-bundle \
      --kata-config ${kataConfig} \
      --out $out
  '';

  image = runCommand "coco-guest-image" {
    nativeBuildInputs = [ workspace jq ];
    passthru = { inherit initrd kataConfig; kernel = guestKernel; };
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
