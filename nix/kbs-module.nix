# services.coco-kbs: the Key Broker Service as a hardened systemd unit.
{ self }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.coco-kbs;
  toml = pkgs.formats.toml { };

  # Secrets are named by runtime path and handed to the unit with LoadCredential:
  # a string outside the store, never a Nix path (which would be copied into the
  # world-readable store when the configuration is built).
  runtimePath = lib.types.addCheck lib.types.str
    (p: lib.hasPrefix "/" p && !lib.hasPrefix "${builtins.storeDir}/" p) // {
      description = "absolute path outside the Nix store, read when the service starts";
    };
  credentialsDir = "/run/credentials/coco-kbs.service";
  # credential name → runtime path of its source.
  credentials = lib.optionalAttrs (cfg.tls != null) {
    "tls.crt" = cfg.tls.certFile;
    "tls.key" = cfg.tls.keyFile;
  } // lib.optionalAttrs (cfg.tokenSigningKeyFile != null) {
    "token-signing.key" = cfg.tokenSigningKeyFile;
  };

  settings = lib.recursiveUpdate
    ({
      listen = "${cfg.listenAddress}:${toString cfg.port}";
      state_dir = "/var/lib/coco-kbs";
      admin.public_keys = cfg.adminPublicKeys;
    }
    // (if cfg.tls == null then { insecure_http = true; } else {
      tls = { cert = "${credentialsDir}/tls.crt"; key = "${credentialsDir}/tls.key"; };
    })
    // lib.optionalAttrs (cfg.tokenSigningKeyFile != null) {
      token.signing_key = "${credentialsDir}/token-signing.key";
    })
    cfg.settings;
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
        Certificate chain and key (PEM), read at service start through systemd
        credentials. `null` serves plain HTTP, which is only for a KBS behind a
        TLS-terminating proxy.
      '';
      default = null;
      type = lib.types.nullOr (lib.types.submodule {
        options = {
          certFile = lib.mkOption {
            type = runtimePath;
            example = "/var/lib/acme/kbs.example.org/fullchain.pem";
            description = "PEM chain (runtime path).";
          };
          keyFile = lib.mkOption {
            type = runtimePath;
            example = "/run/keys/coco-kbs-tls.key";
            description = "PEM private key (runtime path; never copied to the store).";
          };
        };
      });
    };
    tokenSigningKeyFile = lib.mkOption {
      type = lib.types.nullOr runtimePath;
      default = null;
      example = "/run/keys/coco-kbs-token.key";
      description = ''
        PKCS#8 PEM P-256 key signing attestation tokens (runtime path). `null`: the
        KBS generates one in its state directory.
      '';
    };
    adminPublicKeys = lib.mkOption {
      type = lib.types.listOf lib.types.path;
      default = [ ];
      description = ''
        SPKI PEM public keys (P-256 or Ed25519) whose admin tokens are accepted.
        Empty keeps the admin API closed.
      '';
    };
    configFile = lib.mkOption {
      type = lib.types.package;
      readOnly = true;
      internal = true;
      default = configFile;
      description = "The generated kbs.toml (for tests and inspection).";
    };
    settings = lib.mkOption {
      type = toml.type;
      default = { };
      description = ''
        Extra kbs.toml settings (see kbs/src/config.rs), merged last. Key paths
        (`tls`, `token.signing_key`) are set by the options above, not here.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(cfg.settings ? tls) && !((cfg.settings.token or { }) ? signing_key);
        message = "services.coco-kbs.settings must not name key files; use tls and tokenSigningKeyFile.";
      }
    ];

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
        LoadCredential = lib.mapAttrsToList (name: path: "${name}:${path}") credentials;
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
