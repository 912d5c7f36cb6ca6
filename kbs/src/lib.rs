//! Key Broker Service and Attestation Service.

pub mod verifier;
