//! The pod's termination message: the worker's result (`roomrec_api::WorkerResult`).
//!
//! The operator reads it back, so it learns how the worker ended without reading its logs.

use crate::report::manifest::Manifest;
use roomrec_api::worker_result::{WorkerResult, truncate};
use std::path::Path;

/// The result of a recording that ran.
pub fn from_manifest(manifest: &Manifest) -> WorkerResult {
    WorkerResult {
        status: manifest.status,
        stop_reason: manifest.stop_reason,
        message: truncate(&manifest.message),
        retryable: manifest.retryable,
        parts: manifest.parts.len(),
        bytes: manifest.bytes,
        duration_seconds: manifest.duration_seconds,
    }
}

/// Failing to write it must not change the outcome: logged, not returned.
pub fn write(result: &WorkerResult, path: &Path) {
    if let Err(e) = std::fs::write(path, result.to_json()) {
        tracing::warn!(path = %path.display(), "cannot write the termination message: {e}");
    }
}
