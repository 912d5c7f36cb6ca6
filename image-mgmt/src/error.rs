//! Error type of the image library.

use std::io;

/// Everything that can make a pull, a decryption or an unpack fail.
///
/// Security failures have their own variants so callers (and tests) can tell a
/// hostile image from a network problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("registry error: {0}")]
    Registry(String),
    #[error("invalid manifest or config: {0}")]
    Manifest(String),
    #[error("no manifest for platform {0} in the image index")]
    NoPlatform(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer {digest} is {size} bytes, over the configured limit of {limit}")]
    LayerTooLarge {
        digest: String,
        size: u64,
        limit: u64,
    },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("decryption failed: {0}")]
    Decrypt(String),
    #[error(
        "HMAC of encrypted layer {0} does not match: the layer or its annotations were altered"
    )]
    BadHmac(String),
    #[error("no key can decrypt layer {0}")]
    NoKey(String),
    #[error("key broker: {0}")]
    KeyBroker(String),
    #[error("unsafe tar entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("invalid tar stream: {0}")]
    Tar(String),
    #[error("image rejected by the image policy: {0}")]
    PolicyDenied(String),
    #[error("invalid image policy: {0}")]
    Policy(String),
    #[error("invalid key material: {0}")]
    Key(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a human context to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io {
            context: context(),
            source: e.into(),
        })
    }
}

impl From<oci_client::errors::OciDistributionError> for Error {
    fn from(e: oci_client::errors::OciDistributionError) -> Self {
        Error::Registry(e.to_string())
    }
}
