//! Every failure a request can meet, with the status and the exact text the v2 API returns.

/// A request that cannot be answered with data. The `Display` text is the response body (the
/// original's texts, typos included, where clients may match on them).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
