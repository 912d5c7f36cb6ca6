//! The guest attestation-agent process: serves TEE evidence, KBS tokens, KBS
//! resources and the ocicrypt `attestation-agent` keyprovider over ttrpc.
//!
//! It lives in its own crate because the keyprovider needs `image-mgmt`
//! (annotation format), which itself depends on `attester`.

pub mod protocols;
pub mod service;

/// Socket the agent serves on unless told otherwise; `coco-agent
/// --attester-socket` has the same default.
pub const DEFAULT_SOCKET: &str =
    "/run/confidential-containers/attestation-agent/attestation-agent.sock";
