# Every Rust binary of the workspace from one Cargo.lock (all crates.io, no git
# dependencies, so no outputHashes are needed).
{ lib, rustPlatform, pkg-config, tpm2-tss, src }:

let
  workspaceToml = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).workspace.package;
  msrv = workspaceToml.rust-version;
  rustc = rustPlatform.rust.rustc;
in
# Cargo.toml's rust-version is the newest any locked crate declares
# (deploy-tests/tests/msrv.rs); an older nixpkgs toolchain would fail deep in the
# build, so evaluation stops here with the reason.
assert lib.assertMsg (lib.versionAtLeast rustc.version msrv)
  "nixpkgs' rustc ${rustc.version} is older than the workspace's rust-version ${msrv}: update the nixpkgs input";
rustPlatform.buildRustPackage {
  pname = "coco";
  inherit (workspaceToml) version;
  src = lib.cleanSourceWith {
    inherit src;
    filter = path: type:
      let base = baseNameOf path; in
      !(lib.hasSuffix ".nix" base || base == "flake.lock" || base == "target");
  };
  cargoLock.lockFile = ../Cargo.lock;

  # tss-esapi-sys generates its bindings with bindgen.
  nativeBuildInputs = [ pkg-config rustPlatform.bindgenHook ];
  buildInputs = [ tpm2-tss ];

  # Unit and integration tests need swtpm, runc, a registry and QEMU: they run in
  # the flake's checks, not in the package build.
  doCheck = false;

  meta = {
    description = "Confidential Containers KBS, attester, guest agent and image tools";
    license = lib.licenses.asl20;
    platforms = [ "x86_64-linux" ];
    mainProgram = "kbs";
  };
}
