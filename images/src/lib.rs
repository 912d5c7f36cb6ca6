//! `coco-image`: builds the measured guest image bit-for-bit reproducibly and computes
//! its launch measurements as KBS reference values.
//!
//! * [`builder`]: initrd assembly (binaries + their shared libraries, kernel modules,
//!   busybox, the pause bundle, `/init`), reproducible [`cpio`] + gzip, manifest.
//! * [`kernel`]: Debian's cloud kernel package, cached, with `modules.dep`.
//! * [`measure`]: SEV-SNP launch digest, TDX MRTD/RTMR1/RTMR2, vTPM PCR 4/9.
//! * [`initdata`]: the initdata disk format (writer for the host, reader for the guest).
//! * [`kata`]: the kernel command line Kata boots with, composed from its configuration.
//! * [`contents`]: what goes into the guest image (`deploy/guest-image.toml`, shared with Nix).

pub mod builder;
pub mod contents;
pub mod cpio;
pub mod elf;
pub mod initdata;
pub mod kata;
pub mod kernel;
pub mod measure;
pub mod pause;

pub use builder::{BuildError, Built, Compression, ImageSpec, Manifest};
