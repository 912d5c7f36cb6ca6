# The measured guest: initrd built by the project's own `coco-image build`, launch
# measurements and reference values by `coco-image measure` (no re-implementation in
# Nix, so `nix build .#guest-image` and the Debian path compute the same way). What
# goes in is deploy/guest-image.toml, the list the Debian path (tests/vm) builds from.
{ lib, runCommand, jq, pkgsStatic, runc, lvm2, e2fsprogs, tpm2-tss, cacert
, workspace, guestKernel, ovmf }:

let
  contents = builtins.fromTOML (builtins.readFile ../deploy/guest-image.toml);

  # Each tool the list names, from its nixpkgs package (an unmapped name fails
  # evaluation rather than leaving the guest without it).
  toolPaths = {
    runc = "${runc}/bin/runc";
    dmsetup = "${lib.getBin lvm2}/bin/dmsetup";
    "mkfs.ext4" = "${lib.getBin e2fsprogs}/bin/mkfs.ext4";
  };
  libraryPaths = {
    # The TCTI is dlopened by soname from tss2-tctildr's own directory (its RUNPATH),
    # so it goes to the same store path in the guest.
    "libtss2-tcti-device.so.0" = "${lib.getLib tpm2-tss}/lib/libtss2-tcti-device.so.0";
  };
  pick = what: table: name:
    table.${name} or (throw "deploy/guest-image.toml: no Nix package for the ${what} ${name}");
  binaryArgs =
    map (n: "--binary ${n}=${pick "binary" toolPaths n}") contents.binaries
    ++ map (n: let p = pick "library" libraryPaths n; in "--binary ${p}=${p}") contents.dlopen_libraries;

  agentConfig = builtins.toFile "coco-agent-config.toml" contents.agent_config;

  # Kata boots the guest with its own parameters (console, panic, nr_cpus, ...) followed
  # by the configuration's kernel_params, and the whole line is measured. So the image
  # is built with the line `coco-image kata-cmdline` composes from the Kata
  # configuration guest-image.toml names (one of those nix/node.nix installs). One
  # image serves every RuntimeClass, so the build fails if two configurations compose
  # differently.
  runtimeClasses = import ./runtime-classes.nix;
  kataConfigFor = file: ../deploy/kata + "/${file}";
  kataConfigs = map (rc: kataConfigFor rc.config) (builtins.attrValues runtimeClasses);
  kataConfig = kataConfigFor contents.measure.kata_config;
  # The launch the reference values are for: Kata's machine type and guest RAM.
  kataQemu = (builtins.fromTOML (builtins.readFile kataConfig)).hypervisor.qemu;
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
      --binary /init=${workspace}/bin/${contents.init} \
      ${lib.concatStringsSep " \\\n  " binaryArgs} \
      --file ${contents.ca_bundle}=${cacert}/etc/ssl/certs/ca-bundle.crt \
      --file /etc/coco-agent/config.toml=${agentConfig} \
      ${lib.optionalString contents.busybox "--busybox ${pkgsStatic.busybox}/bin/busybox"} \
      ${lib.optionalString contents.pause_bundle "--pause-bundle"} \
      --kata-config ${kataConfig} \
      --out $out
  '';

  firmware = tee: (lib.findFirst (f: f.tee == tee)
    (throw "deploy/guest-image.toml: no ${tee} firmware")
    (builtins.filter lib.isDerivation (builtins.attrValues ovmf)));
  snp = firmware "snp";
  tdx = firmware "tdx";

  image = runCommand "coco-guest-image" {
    nativeBuildInputs = [ workspace jq ];
    passthru = { inherit initrd kataConfig contents; kernel = guestKernel; };
  } ''
    mkdir -p $out
    cp -r ${initrd}/. $out/
    chmod -R u+w $out
    ln -s ${snp.firmware} $out/${snp.file}
    ln -s ${tdx.firmware} $out/${tdx.file}
    coco-image measure --image $out \
      --snp-ovmf ${snp.firmware} \
      --vcpus ${lib.concatMapStringsSep "," toString contents.measure.vcpus} \
      --tdx-ovmf ${tdx.firmware} \
      ${lib.optionalString contents.measure.tpm "--tpm"} \
      --machine ${kataQemu.machine_type} --ram-mib ${toString kataQemu.default_memory} \
      --out $out/reference-values.json
    jq -e 'length > 0' $out/reference-values.json > /dev/null
  '';
in
{ inherit initrd image; }
