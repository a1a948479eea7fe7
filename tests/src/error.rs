//! The test bed's one error type: a variant per component that can fail to start or answer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{binary} not found: {hint}")]
    MissingBinary { binary: String, hint: String },

    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} did not become ready within {seconds} s; the end of its log ({log}):\n{tail}")]
    NotReady {
        what: String,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },

    #[error("{what} exited early with {status}; the end of its log ({log}):\n{tail}")]
    ExitedEarly {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{what} failed: {message}")]
    Command { what: String, message: String },

    #[error("file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(String),

    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),

    #[error("attached test bed: {0}")]
    Attach(String),

    #[error("pod network: {0}")]
    Network(#[from] crate::node_agent::network::NetworkError),
}

pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

/// Wraps an io::Error with the path it concerns.
pub(crate) fn file_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let path = path.into();
    move |source| TestbedError::File { path, source }
}

/// The last `max_lines` lines of a log file, at most `max_bytes` of them (cut at a character
/// boundary); empty when the file is gone.
pub(crate) fn log_tail(path: &std::path::Path, max_lines: usize, max_bytes: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(max_lines)..].join("\n");
    let start = tail.len().saturating_sub(max_bytes);
    let start = (start..=tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    tail[start..].to_string()
}
