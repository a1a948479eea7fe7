//! The operator's one error type: a variant per failing step. Each names its metric label and
//! Event reason, so a failure is counted, shown on the object and logged the same way.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading from the API server failed: {0}")]
    Read(#[source] kube::Error),
    #[error("creating or updating {what} failed: {source}")]
    Apply {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {what} failed: {source}")]
    Delete {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    #[error("the finalizer failed: {0}")]
    Finalizer(String),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("a TRTC relay: {0}")]
    Relay(String),
    /// A started job's `spec.worker` now asks for what the chart does not allow: no new worker
    /// runs until the job or the chart changes.
    #[error("{0}")]
    OverrideNotAllowed(String),
}

/// Every value `Error::step` returns (metric series exist from the start).
pub const STEPS: [&str; 8] = [
    "read",
    "apply",
    "delete",
    "status",
    "finalizer",
    "invalid-object",
    "relay",
    "worker-override",
];

impl Error {
    /// A bounded label for `roomrec_reconcile_errors_total{step}` and the Event reason.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Read(_) => "read",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Status(_) => "status",
            Error::Finalizer(_) => "finalizer",
            Error::MissingField(_) => "invalid-object",
            Error::Relay(_) => "relay",
            Error::OverrideNotAllowed(_) => "worker-override",
        }
    }

    pub fn event_reason(&self) -> &'static str {
        match self {
            Error::Read(_) => "ReadFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::Status(_) => "StatusFailed",
            Error::Finalizer(_) => "FinalizerFailed",
            Error::MissingField(_) => "InvalidObject",
            Error::Relay(_) => "RelayFailed",
            Error::OverrideNotAllowed(_) => crate::validate::OVERRIDE_NOT_ALLOWED,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
