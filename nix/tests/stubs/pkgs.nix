# Package stubs for evaluating the flake offline (scripts/nix-eval.sh): every
# attribute the flake, nix/ and the NixOS modules take from nixpkgs, with the
# argument lists of the nixpkgs files at the pinned revision (flake.lock; files read
# are named beside each stub). Functions that in nixpkgs take a fixed argument set
# refuse any other argument, as nixpkgs would. Builds are never run: every
# derivation's builder is `false`, so only evaluation and instantiation are shown.
# No nixpkgs code is copied here; only names and signatures.
{ lib }:

let
  system = "x86_64-linux";

  # nixpkgs' rustc at the pinned revision (nixos-26.05: rustPackages_1_95):
  # pkgs/development/compilers/rust/1_95.nix, rustcVersion.
  rustcVersion = "1.95.0";
  # pkgs/by-name/ed/edk2/package.nix, version.
  edk2Version = "202511";

  # An argument set checked against the names a nixpkgs function declares.
  strict = what: allowed: args:
    let unexpected = lib.subtractLists allowed (builtins.attrNames args);
    in if unexpected == [ ] then args
    else throw "${what} called with unexpected argument(s) ${toString unexpected}";

  # A derivation attribute value: sets (other than derivations) as JSON, functions dropped.
  drvValue = v:
    if lib.isDerivation v || builtins.isString v || builtins.isPath v || builtins.isInt v
      || builtins.isBool v || v == null then v
    else if builtins.isList v then map drvValue v
    else if builtins.isFunction v then null
    else builtins.toJSON v;

  # stdenv.mkDerivation: attrs or `finalAttrs: attrs`; passthru and meta stay out of
  # the derivation; overrideAttrs takes a set, `prev: set` or `final: prev: set`.
  mkDerivation = fnOrAttrs:
    let
      mk = attrsFn:
        let
          final = lib.fix (self: attrsFn self // { finalPackage = pkg; });
          name = final.name or "${final.pname}-${final.version}";
          envAttrs = builtins.removeAttrs final [ "passthru" "meta" "finalPackage" "name" "env" ];
          drv = derivation ({
            inherit name system;
            builder = "/bin/false";
          } // lib.mapAttrs (_: drvValue) envAttrs // lib.mapAttrs (_: drvValue) (final.env or { }));
          pkg = drv // (final.passthru or { }) // {
            meta = final.meta or { };
            overrideAttrs = f: mk (self:
              let prev = attrsFn self;
                  step = if builtins.isFunction f then f prev else f;
              in prev // (if builtins.isFunction step then f self prev else step));
          };
        in
        pkg;
    in
    mk (if builtins.isFunction fnOrAttrs then fnOrAttrs else _: fnOrAttrs);

  package = name: extra: mkDerivation ({ pname = name; version = "0"; } // extra);

  # lib.makeOverridable-style override on a stub whose nixpkgs function ends in `...`.
  overridable = f: args: f args // { override = more: overridable f (args // more); };

  rustc = package "rustc" { version = rustcVersion; };
  cargo = package "cargo" { version = rustcVersion; };

  # pkgs/build-support/rust/build-rust-package/default.nix: `{ ... }@args` with
  # cargoLock or cargoHash/cargoDeps required.
  buildRustPackage = args:
    assert lib.assertMsg (args ? cargoLock || args ? cargoHash || args ? cargoDeps)
      "buildRustPackage: cargoLock, cargoHash or cargoDeps required";
    assert lib.assertMsg (!(args ? cargoLock) || builtins.pathExists args.cargoLock.lockFile)
      "buildRustPackage: cargoLock.lockFile does not exist";
    mkDerivation (builtins.removeAttrs args [ "cargoLock" ] // {
      cargoDeps = package "cargo-vendor-dir" { lockFile = args.cargoLock.lockFile; };
      nativeBuildInputs = (args.nativeBuildInputs or [ ]) ++ [ rustc cargo ];
    });

  # pkgs/build-support/trivial-builders/default.nix: runCommand = name: env: buildCommand.
  runCommand = name: env: buildCommand:
    mkDerivation ({ inherit name buildCommand; passAsFile = [ "buildCommand" ]; } // env);

  # pkgs/build-support/trivial-builders/default.nix: writeShellApplication's arguments.
  writeShellApplication = args0:
    let args = strict "writeShellApplication" [
      "name" "text" "runtimeInputs" "runtimeEnv" "meta" "passthru" "checkPhase"
      "excludeShellChecks" "extraShellCheckFlags" "bashOptions" "inheritPath" "derivationArgs"
    ] args0;
    in mkDerivation {
      inherit (args) name text;
      runtimeInputs = args.runtimeInputs or [ ];
      passthru = args.passthru or { };
      meta = (args.meta or { }) // { mainProgram = args.name; };
    };

  # pkgs/build-support/docker/default.nix: streamLayeredImage's arguments
  # (buildLayeredImage passes them on).
  buildLayeredImage = args0:
    let args = strict "dockerTools.buildLayeredImage" [
      "name" "tag" "fromImage" "contents" "config" "architecture" "created" "mtime"
      "uid" "gid" "uname" "gname" "maxLayers" "extraCommands" "fakeRootCommands"
      "enableFakechroot" "includeStorePaths" "includeNixDB" "passthru" "meta"
      "compressor" "layeringPipeline" "debug"
    ] args0;
    in mkDerivation ({ name = "${args.name}.tar.gz"; imageName = args.name; imageTag = args.tag or "latest"; }
      // builtins.removeAttrs args [ "name" "tag" "passthru" "meta" ]);

  # pkgs/pkgs-lib/formats.nix: toml = { }: { type; generate = name: value: drv }.
  formats.toml = settings: assert settings == { }; {
    type = with lib.types;
      let valueType = nullOr (oneOf [ bool int float str path (attrsOf valueType) (listOf valueType) ])
        // { description = "TOML value"; };
      in attrsOf valueType;
    generate = name: value: runCommand name { json = builtins.toJSON value; } "json2toml";
  };

  # pkgs/os-specific/linux/kernel/generic.nix: makeOverridable over an argument set
  # ending in `...`; structuredExtraConfig is evaluated as kernel_config.nix settings
  # (each value a lib.kernel tristate, possibly under mkForce).
  kernel = overridable (args:
    let
      tristate = n: v: (v.content or v).tristate
        or (throw "structuredExtraConfig.${n}: not a lib.kernel option");
      settings = lib.mapAttrs tristate (args.structuredExtraConfig or { });
    in package "linux" {
      version = "6.12.0";
      modDirVersion = "6.12.0";
      kernelConfig = builtins.toJSON settings;
      ignoreConfigErrors = args.ignoreConfigErrors or true;
    } // { modDirVersion = "6.12.0"; }) { };

  # pkgs/by-name/ed/edk2/package.nix: passthru.mkDerivation = projectDscPath: attrsOrFun.
  edk2 = package "edk2" { version = edk2Version; } // {
    version = edk2Version;
    mkDerivation = projectDscPath: attrsOrFun:
      assert builtins.isString projectDscPath;
      mkDerivation (finalAttrs:
        let attrs = lib.toFunction attrsOrFun finalAttrs;
        in attrs // { inherit projectDscPath; buildFlags = attrs.buildFlags or [ ]; });
  };

  multi = name: outputs: package name { inherit outputs; };

  pkgs = {
    inherit lib system formats runCommand writeShellApplication edk2;
    stdenv = { inherit mkDerivation; hostPlatform = lib.systems.elaborate system; };
    callPackage = lib.callPackageWith pkgs;
    callPackages = lib.callPackagesWith pkgs;
    # pkgs/build-support/mkshell/default.nix: `{ name ? "nix-shell", packages ? [ ],
    # inputsFrom ? [ ], buildInputs ? [ ], nativeBuildInputs ? [ ], ... }@attrs`.
    mkShell = args: mkDerivation ({ name = "nix-shell"; } // args);
    dockerTools = { inherit buildLayeredImage; };
    rustPlatform = {
      inherit buildRustPackage;
      bindgenHook = package "rust-bindgen-hook" { };
      rust = { inherit rustc cargo; };
    };
    inherit rustc cargo;
    linuxPackages_6_12 = { inherit kernel; };
    # pkgs/applications/virtualization/OVMF: outputs out, fd (FV/OVMF.fd on x86_64).
    OVMF = multi "OVMF" [ "out" "fd" ];
    # pkgs/os-specific/linux/lvm2: dmsetup is in the bin output.
    lvm2 = multi "lvm2" [ "out" "bin" "dev" "lib" "man" ];
    e2fsprogs = multi "e2fsprogs" [ "bin" "dev" "out" "man" "info" ];
    tpm2-tss = multi "tpm2-tss" [ "out" "man" "dev" ];
    pkgsStatic = { busybox = package "busybox-static" { }; };
  } // lib.genAttrs [
    # Plain packages (pkgs/by-name/<2>/<name>/package.nix or all-packages.nix).
    "acpica-tools" "bash" "cacert" "clippy" "containerd" "coreutils" "distribution" "jq"
    "kata-runtime" "kubectl" "nasm" "nix-prefetch-git" "nixfmt" "openssl" "pkg-config"
    "qemu" "runc" "rustfmt" "skopeo" "swtpm" "tpm2-tools" "umoci" "util-linux"
    "vhost-device-vsock"
  ] (n: package n { });
in
pkgs
