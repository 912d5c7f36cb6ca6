//! `coco-policy`: generates a pod's workload policy. The agent's shipped rules
//! (agent/policies/confidential.rego) plus a `policy_data` object pinning each
//! container's image digest, process, mounts and allowed execs
//! (docs/WORKLOAD-POLICY.md), wrapped in the pod's initdata with the KBS settings
//! and written back into the manifest as the initdata annotation.

pub mod env_rules;
pub mod error;
pub mod generate;
pub mod image;
pub mod initdata;
pub mod manifest;
pub mod mounts;
pub mod output;
pub mod policy;
pub mod process;

pub use error::{Error, Result};
pub use generate::{generate, Generated, Options, PodPolicy};
