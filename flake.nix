{
  description = "Confidential Containers appliance: KBS, guest agent, measured guest image";

  # nixos-26.05: rustc 1.95.0, the workspace's rust-version (README, "Nix and
  # Kubernetes", names the locked revision and where that was read).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      lib = nixpkgs.lib;

      # RuntimeClass names and Kata handlers; deploy/, nix/node.nix and the README
      # must agree (checked by deploy-tests/tests/names.rs).
      runtimeClasses = import ./nix/runtime-classes.nix;

      workspace = pkgs.callPackage ./nix/workspace.nix { src = self; };
      guestKernel = pkgs.callPackage ./nix/guest-kernel.nix { };
      ovmf = pkgs.callPackages ./nix/ovmf.nix { };
      guest = pkgs.callPackage ./nix/guest-image.nix {
        inherit workspace guestKernel ovmf;
      };
    in
    {
      packages.${system} = {
        default = workspace;
        coco = workspace;
        guest-kernel = guestKernel;
        ovmf-snp = ovmf.AmdSev;
        ovmf-tdx = ovmf.IntelTdx;
        guest-initrd = guest.initrd;
        guest-image = guest.image;
        kbs-image = pkgs.callPackage ./nix/kbs-image.nix { inherit workspace; };
      };

      apps.${system} = {
        kbs = {
          type = "app";
          program = "${pkgs.callPackage ./nix/kbs-app.nix {
            inherit workspace;
            guestImage = guest.image;
          }}/bin/coco-kbs-preloaded";
        };
        demo = {
          type = "app";
          program = "${pkgs.writeShellApplication {
            name = "coco-demo";
            # The VM demo: QEMU + vsock backend + vTPM, a registry, image tools; the
            # guest image is the flake's own (no Debian kernel download).
            runtimeInputs = with pkgs; [
              workspace qemu swtpm skopeo umoci distribution
            ];
            text = ''
              export COCO_BIN_DIR=${workspace}/bin
              export COCO_GUEST_IMAGE=${guest.image}
              export COCO_OVMF=${pkgs.OVMF.fd}/FV/OVMF.fd
              export COCO_DOCKER_REGISTRY=${pkgs.distribution}/bin/registry
              export COCO_BUSYBOX=${pkgs.pkgsStatic.busybox}/bin/busybox
              export COCO_VHOST_DEVICE_VSOCK=${pkgs.vhost-device-vsock}/bin/vhost-device-vsock
              exec ${pkgs.bash}/bin/bash ${./scripts/demo.sh} "$@"
            '';
          }}/bin/coco-demo";
        };
      };

      checks.${system} = import ./nix/checks.nix {
        inherit pkgs workspace;
        guestImage = guest.image;
        src = self;
      } // {
        # Both NixOS modules in one configuration (nix/tests/modules.nix).
        nixos-modules = (lib.nixosSystem {
          inherit system;
          modules = [ self.nixosModules.kbs self.nixosModules.node ./nix/tests/modules.nix ];
        }).config.system.build.toplevel;
      };

      nixosModules = {
        kbs = import ./nix/kbs-module.nix { inherit self; };
        node = import ./nix/node.nix { inherit self runtimeClasses; };
      };

      devShells.${system}.default = pkgs.mkShell {
        inputsFrom = [ workspace ];
        packages = with pkgs; [
          cargo
          rustc
          clippy
          rustfmt
          pkg-config
          tpm2-tss
          swtpm
          tpm2-tools
          skopeo
          umoci
          runc
          distribution
          qemu
          openssl
          kubectl
          nix-prefetch-git
        ];
      };

      formatter.${system} = pkgs.nixfmt;
    };
}
