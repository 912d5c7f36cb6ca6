//! Messages and ttrpc services generated at build time from `protos/` (Kata-compatible).
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

pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/protocols/agent.rs"));
}
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/protocols/agent_ttrpc.rs"));
}
pub mod csi {
    include!(concat!(env!("OUT_DIR"), "/protocols/csi.rs"));
}
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/protocols/health.rs"));
}
pub mod health_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/protocols/health_ttrpc.rs"));
}
pub mod oci {
    include!(concat!(env!("OUT_DIR"), "/protocols/oci.rs"));
}
pub mod types {
    include!(concat!(env!("OUT_DIR"), "/protocols/types.rs"));
}
