//! Guest-side container image management for Confidential Containers.
//!
//! The guest pulls the image itself: [`pull::ImagePuller`] resolves the
//! manifest, enforces the image policy, downloads layers in parallel
//! into a content-addressed store (verifying size, digest and the ocicrypt
//! HMAC while streaming), then decrypts, decompresses, checks the diff_id
//! and unpacks each layer into a staging rootfs that only becomes visible
//! when everything verified.

pub mod cli;
pub mod cosign;
pub mod digest;
pub mod encrypt;
pub mod error;
pub mod keybroker;
pub mod ocicrypt;
pub mod policy;
pub mod pull;
pub mod registry;
pub mod settings;
pub mod store;
pub mod unpack;

pub use error::{Error, Result};
pub use keybroker::KeyBroker;
pub use pull::{ImagePuller, PullOptions, PulledImage};
