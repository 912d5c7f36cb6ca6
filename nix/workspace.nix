# Every Rust binary of the workspace from one Cargo.lock (all crates.io, no git
# dependencies, so no outputHashes are needed).
{ lib, rustPlatform, pkg-config, tpm2-tss, src }:

rustPlatform.buildRustPackage {
  pname = "coco";
  version = "0.1.0";
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
