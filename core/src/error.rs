//! Every failure a request can meet, with the status and the exact text the v2 API returns;
//! and the failures a shell reports to the engine ([`EtcdCallError`], [`StateIoError`]): the
//! core does no IO, so these carry the IO error's text, and their `Display` is the text the
//! shells log.

use std::time::Duration;

/// A request that cannot be answered with data. The `Display` text is the response body (the
/// original's texts, typos included, where clients may match on them).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The caller is neither local nor a super app's container.
    #[error("authorize failed, super required")]
    SuperRequired,
    /// `/v2/procwatcher` without `appname`.
    #[error("appname required")]
    AppnameRequired,
    /// The caller may not see the requested app.
    #[error("authorize failed, no permission")]
    NoPermission,
    /// `appname=*` from a caller whose IP belongs to no known container.
    #[error("authorize failed, can not confirm the app by request ip")]
    CannotConfirmApp,
    /// `/appname` for an IP that belongs to no known container (the original's spelling).
    #[error("unkown address {0}")]
    UnknownAddress(String),
    /// `/v2/localspecquery` with neither `nodeip` nor `-ip`, or `/appname` for an empty address
    /// (`ip=:80`).
    #[error("empty key")]
    EmptyKey,
    /// The webrouter/streamrouter rule: too many selected pods have no IP (spec §2.4.5).
    #[error("over half of the containers lost their IPs")]
    DeadContainers,
    /// `?watch=1` on `/v2/localspecquery`.
    #[error("/localspecquery do not support watch action")]
    WatchNotSupported,
    /// A parameter value that cannot be understood (new: the original guessed).
    #[error("invalid value for parameter {name}: {value:?}")]
    InvalidParameter {
        /// The parameter name.
        name: &'static str,
        /// The value received.
        value: String,
    },
    /// `diff=1` on a view whose body is a JSON array (new).
    #[error("diff=1 needs a view whose body is a JSON object; {0} returns an array (use rev=1)")]
    DiffNotSupported(&'static str),
    /// A `Last-Event-ID` that is not a revision on a `rev=1` stream (new).
    #[error(
        "invalid Last-Event-ID {0:?}: a rev=1 stream resumes from an etcd revision (a number)"
    )]
    InvalidLastEventId(String),
    /// The first etcd snapshot has not been applied yet (new: the original served empty data).
    #[error("lainlet is starting: the cluster state has not been loaded from etcd yet")]
    NotReady,
}

impl ApiError {
    /// The HTTP status of a GET that fails this way.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::SuperRequired
            | ApiError::AppnameRequired
            | ApiError::NoPermission
            | ApiError::CannotConfirmApp
            | ApiError::InvalidParameter { .. }
            | ApiError::DiffNotSupported(_)
            | ApiError::InvalidLastEventId(_) => 400,
            ApiError::UnknownAddress(_) | ApiError::EmptyKey | ApiError::DeadContainers => 500,
            ApiError::WatchNotSupported => 400,
            ApiError::NotReady => 503,
        }
    }
}

/// Why a call to etcd failed, as a shell reports it: to [`crate::Engine::handle_etcd_failure`]
/// (the connection, the snapshot read or the watch) and as the answer of a check
/// ([`crate::Engine::handle_quorum_check`], [`crate::Engine::handle_history_proof`],
/// [`crate::Engine::handle_key_listing`], [`crate::Engine::handle_backfill`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdCallError {
    /// No answer came within the call's time limit (the limit).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call failed: the connection was refused, reset or closed, TLS or authentication
    /// failed, etcd answered with an error, or its answer did not decode. The text is the
    /// client's error with its causes (`{:#}` of an `anyhow::Error`).
    #[error("{0}")]
    Failed(String),
}

impl From<String> for EtcdCallError {
    /// A failure described by the client's text ([`EtcdCallError::Failed`]).
    fn from(reason: String) -> Self {
        EtcdCallError::Failed(reason)
    }
}

impl From<&str> for EtcdCallError {
    /// A failure described by the client's text ([`EtcdCallError::Failed`]).
    fn from(reason: &str) -> Self {
        EtcdCallError::Failed(reason.to_owned())
    }
}

/// Why a shell could not read or write the state file
/// ([`crate::Engine::handle_state_file_error`], [`crate::Engine::handle_state_saved`]). A
/// missing file is no error (etcd is read in full).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateIoError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file's path, as the shell shows it.
        path: String,
        /// The file system's error.
        reason: String,
    },
    /// The state could not be written (the temporary file, its sync or the rename).
    #[error("{path}: {reason}")]
    Write {
        /// The file's path, as the shell shows it.
        path: String,
        /// The file system's error.
        reason: String,
    },
}
