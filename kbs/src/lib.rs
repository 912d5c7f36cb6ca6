//! Key Broker Service and Attestation Service.
//!
//! The KBS speaks Trustee's RCAR protocol (`/kbs/v0/auth`, `/attest`,
//! `/resource`) and its admin API; see `docs/ARCHITECTURE.md`.

pub mod admin;
pub mod attestation;
pub mod config;
pub mod error;
pub mod local;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod rcar;
pub mod server;
pub mod session;
pub mod storage;
pub mod token;
pub mod verifier;
