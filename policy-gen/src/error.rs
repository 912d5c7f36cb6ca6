//! Why a policy could not be generated. Every refusal names the workload,
//! container or image it is about, so the pod owner can fix the manifest.

/// A refusal or failure of the generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("invalid setting: {0}")]
    Settings(String),
    #[error("{workload}: {reason}")]
    Pod { workload: String, reason: String },
    #[error("{workload}, container {container:?}: {reason}")]
    Container {
        workload: String,
        container: String,
        reason: String,
    },
    #[error("image {image:?}: {reason}")]
    Image { image: String, reason: String },
    #[error("image {image:?}: {source}")]
    Registry {
        image: String,
        #[source]
        source: image_mgmt::Error,
    },
    #[error("initdata: {0}")]
    Initdata(#[from] coco_jose::initdata::InitdataError),
    #[error("agent rules: {0}")]
    Rules(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what was being done to an I/O error.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
