//! The errors of this crate.

/// A request that cannot become a view query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `Podgroup` was called without `Appname`. The text is the original's, typo included
    /// (spec §5); return it to the caller as the gRPC status message.
    #[error("appname reequired")]
    AppnameRequired,
}

/// JSON that does not have the shape of the view (or of `/debug`) it was given as.
///
/// lainlet's own renderer never produces such JSON; the error exists so that no input can make
/// the mapping panic.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The bytes are not JSON, or the JSON does not have the expected structure.
    #[error("{view}: unexpected JSON: {source}")]
    Json {
        /// The HTTP path of the view (or `/debug`).
        view: &'static str,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },
    /// A value inside well-formed JSON cannot be converted.
    #[error("{view}: {reason}")]
    Value {
        /// The HTTP path of the view (or `/debug`).
        view: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
}
