# services.coco-kbs: the Key Broker Service as a hardened systemd unit.
{ self }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.coco-kbs;
  toml = pkgs.formats.toml { };
  settings = lib.recursiveUpdate
    {
      listen = "${cfg.listenAddress}:${toString cfg.port}";
      state_dir = "/var/lib/coco-kbs";
      admin.public_keys = cfg.adminPublicKeys;
    }
    (lib.recursiveUpdate
      (if cfg.tls == null then { insecure_http = true; } else {
        # The key arrives through LoadCredential below, readable only by the unit.
        tls = { cert = cfg.tls.certFile; key = "/run/credentials/coco-kbs.service/tls.key"; };
      })
      cfg.settings);
  configFile = toml.generate "kbs.toml" settings;
in
{
  options.services.coco-kbs = {
    enable = lib.mkEnableOption "the Confidential Containers Key Broker Service";
    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.coco;
      defaultText = lib.literalExpression "coco.packages.\${system}.coco";
      description = "Package providing the `kbs` binary.";
    };
    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0";
      description = "Address the KBS listens on.";
    };
    port = lib.mkOption {
      type = lib.types.port;
      default = 8080;
      description = "Port the KBS listens on.";
    };
    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open {option}`port` in the firewall.";
    };
    tls = lib.mkOption {
      description = ''
        Certificate chain and key (PEM). `null` serves plain HTTP, which is only for
        a KBS behind a TLS-terminating proxy.
      '';
      default = null;
      type = lib.types.nullOr (lib.types.submodule {
        options = {
          certFile = lib.mkOption { type = lib.types.path; description = "PEM chain."; };
          keyFile = lib.mkOption {
            type = lib.types.path;
            description = "PEM key; read via systemd credentials, never copied to the store.";
          };
        };
      });
    };
    adminPublicKeys = lib.mkOption {
      type = lib.types.listOf lib.types.path;
      default = [ ];
      description = ''
        SPKI PEM public keys (P-256 or Ed25519) whose admin tokens are accepted.
        Empty keeps the admin API closed.
      '';
    };
    settings = lib.mkOption {
      type = toml.type;
      default = { };
      description = "Extra kbs.toml settings (see kbs/src/config.rs), merged last.";
    };
  };

  config = lib.mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.coco-kbs = {
      description = "Confidential Containers Key Broker Service";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/kbs --config ${configFile}";
        DynamicUser = true;
        StateDirectory = "coco-kbs";
        StateDirectoryMode = "0700";
        LoadCredential = lib.optional (cfg.tls != null) "tls.key:${cfg.tls.keyFile}";
        Restart = "on-failure";
        # Hardening: the KBS needs a socket and its state directory, nothing else.
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
        UMask = "0077";
      };
    };
  };
}
