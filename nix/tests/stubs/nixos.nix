# lib.nixosSystem stand-in (nixpkgs flake.nix → nixos/lib/eval-config.nix, whose
# arguments are checked below) evaluating modules with the real module system
# (lib.evalModules) and declarations, with the nixpkgs option types, of the NixOS
# options our modules set: nixos/modules/misc/assertions.nix,
# system/boot/systemd.nix (+ lib/systemd-unit-options.nix), system/etc/etc.nix,
# services/networking/firewall.nix, virtualisation/containerd.nix,
# services/cluster/kubernetes/addon-manager.nix, misc/version.nix,
# virtualisation/container-config.nix (boot.isContainer). Like NixOS, failed
# assertions abort `system.build.toplevel`.
{ lib, pkgs }:

args0:
let
  args = builtins.removeAttrs args0 [ "system" "modules" "specialArgs" "lib" "pkgs" "extraModules" "check" "prefix" ];
  _ = assert args == { } || throw "nixosSystem: unexpected argument(s) ${toString (builtins.attrNames args)}"; null;

  inherit (lib) mkOption types;
  # lib/systemd-unit-options.nix: unitOption accepts primitives or lists of them.
  primitive = types.oneOf [ types.bool types.int types.str types.path ];
  unitOption = types.either primitive (types.listOf primitive);

  serviceOptions = { name, ... }: {
    options = {
      description = mkOption { type = types.str; default = ""; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      after = mkOption { type = types.listOf types.str; default = [ ]; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; };
      path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; };
      environment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
    };
  };

  etcOptions = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      target = mkOption { type = types.str; default = name; };
      text = mkOption { type = types.nullOr types.lines; default = null; };
      source = mkOption { type = types.path; };
      mode = mkOption { type = types.str; default = "symlink"; };
    };
  };

  stubOptions = { config, ... }: {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; internal = true; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; internal = true; default = [ ]; };
      boot.isContainer = mkOption { type = types.bool; default = false; };
      system.stateVersion = mkOption { type = types.str; };
      system.build = mkOption { type = types.submoduleWith { modules = [{ freeformType = types.lazyAttrsOf types.unspecified; }]; }; default = { }; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      systemd.services = mkOption { type = types.attrsOf (types.submodule serviceOptions); default = { }; };
      environment.etc = mkOption { type = types.attrsOf (types.submodule etcOptions); default = { }; };
      virtualisation.containerd = {
        enable = mkOption { type = types.bool; default = false; };
        settings = mkOption { type = (pkgs.formats.toml { }).type; default = { }; };
      };
      services.kubernetes.addonManager.bootstrapAddons = mkOption { type = types.attrsOf types.attrs; default = { }; };
    };
    # virtualisation/containerd.nix writes a version-2 configuration with the CRI
    # plugin under its version-2 name.
    config.virtualisation.containerd.settings = lib.mkIf config.virtualisation.containerd.enable {
      version = 2;
      plugins."io.containerd.grpc.v1.cri".cni.bin_dir = lib.mkOptionDefault "/stub/cni-plugins/bin";
    };
    config.system.build.toplevel =
      let failed = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
      in if failed != [ ] then throw "Failed assertions:\n- ${lib.concatStringsSep "\n- " failed}"
      else pkgs.runCommand "nixos-system-test" {
        units = builtins.toJSON config.systemd.services;
        etc = lib.mapAttrsToList (n: e: "${n}=${e.source}") config.environment.etc;
        containerd = (pkgs.formats.toml { }).generate "containerd.toml" config.virtualisation.containerd.settings;
        addons = builtins.toJSON config.services.kubernetes.addonManager.bootstrapAddons;
      } "";
  };

  eval = lib.evalModules {
    modules = [ stubOptions { _module.args.pkgs = pkgs; } ] ++ args0.modules;
    specialArgs = args0.specialArgs or { };
  };
in
builtins.seq _ eval // { inherit pkgs; }
