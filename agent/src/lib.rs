//! `coco-agent`: the guest agent of a confidential VM.
//!
//! It speaks Kata Containers' agent API (ttrpc services `grpc.AgentService` and
//! `grpc.Health`) so that an unmodified Kata shim can drive it, and it restricts that API
//! with a Rego policy because the host that calls it is not trusted.

pub mod attestation;
pub mod canonical;
pub mod cgroups;
pub mod config;
pub mod copyfile;
pub mod guest_pull;
pub mod host;
pub mod image;
pub mod init;
pub mod initdata;
pub mod netlink;
pub mod policy;
pub mod process;
pub mod protocols;
pub mod reaper;
pub mod requests;
pub mod rpc;
pub mod runtime;
pub mod server;
pub mod spec;
pub mod storage;
pub mod switchroot;
