//! Messages and ttrpc services generated at build time from `protos/`.
#![allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    non_camel_case_types,
    non_snake_case,
    unused_imports,
    unused_mut,
    nonstandard_style,
    dead_code,
    unused_results
)]

pub mod attestation_agent {
    include!(concat!(env!("OUT_DIR"), "/protocols/attestation_agent.rs"));
}
pub mod attestation_agent_ttrpc {
    include!(concat!(
        env!("OUT_DIR"),
        "/protocols/attestation_agent_ttrpc.rs"
    ));
}
pub mod keyprovider {
    include!(concat!(env!("OUT_DIR"), "/protocols/keyprovider.rs"));
}
pub mod keyprovider_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/protocols/keyprovider_ttrpc.rs"));
}
