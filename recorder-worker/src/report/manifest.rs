//! The result of a recording: a manifest (JSON, for the operator and scripts), a human summary.

use crate::config::RecordConfig;
use crate::shared::format::{human_bytes, human_seconds};
use crate::shared::part::PartRecord;
use roomrec_api::{FileState, StopReason};
use serde::Serialize;
use std::time::Duration;

/// Why a recording failed, and whether running it again could help.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    /// false: the same configuration fails the same way (credentials refused, no bucket, a
    /// missing track, an unreadable file).
    pub retryable: bool,
}

/// Built from a message or from a typed error: the manifest keeps only its text, and whether
/// to retry is the caller's to say.
impl Failure {
    pub fn retryable(reason: impl std::fmt::Display) -> Self {
        Self {
            message: reason.to_string(),
            retryable: true,
        }
    }

    pub fn permanent(reason: impl std::fmt::Display) -> Self {
        Self {
            message: reason.to_string(),
            retryable: false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    /// succeeded: every part stored; failed: nothing recorded or a part failed.
    pub status: FileState,
    pub message: String,
    pub stop_reason: StopReason,
    pub source: String,
    pub user_id: String,
    pub mode: String,
    pub mode_code: String,
    pub storage: String,
    pub started_at: String,
    pub ended_at: String,
    pub elapsed_seconds: f64,
    pub bytes: u64,
    pub duration_seconds: f64,
    pub parts: Vec<PartRecord>,
    /// Whether another run could succeed (not in the JSON: the termination message and the
    /// exit code carry it).
    #[serde(skip)]
    pub retryable: bool,
}

impl Manifest {
    pub fn new(
        config: &RecordConfig,
        started_at: String,
        stop_reason: StopReason,
        failure: Option<Failure>,
        parts: Vec<PartRecord>,
        elapsed: Duration,
    ) -> Self {
        let failed_parts: Vec<&PartRecord> = parts
            .iter()
            .filter(|p| p.status == FileState::Failed)
            .collect();
        let retryable = failure.as_ref().is_none_or(|f| f.retryable);
        let message = if let Some(f) = failure {
            f.message
        } else if let Some(p) = failed_parts.first() {
            format!("part {} failed: {}", p.part, p.message)
        } else if parts.is_empty() {
            match stop_reason {
                StopReason::IdleTimeout => format!(
                    "no media arrived within the idle timeout ({} s): the stream never started or stalled",
                    config.idle_timeout.as_secs()
                ),
                _ => "nothing was recorded".into(),
            }
        } else {
            String::new()
        };
        let status = if message.is_empty() {
            FileState::Succeeded
        } else {
            FileState::Failed
        };
        Self {
            version: 1,
            status,
            message,
            stop_reason,
            source: crate::source::input::redact(&config.source.url()),
            user_id: config.source.user_id(),
            mode: config.mode.to_string(),
            mode_code: config.mode.code().into(),
            storage: config.storage.describe(),
            started_at,
            ended_at: crate::shared::format::now_rfc3339(),
            elapsed_seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            bytes: parts.iter().map(|p| p.bytes).sum(),
            duration_seconds: (parts.iter().map(|p| p.duration_seconds).sum::<f64>() * 1000.0)
                .round()
                / 1000.0,
            parts,
            retryable,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.status == FileState::Succeeded
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} — {} of {} from {} ({}), stopped: {:?}\n",
            if self.succeeded() {
                "recorded"
            } else {
                "FAILED"
            },
            human_seconds(self.duration_seconds),
            self.mode,
            self.source,
            human_bytes(self.bytes),
            self.stop_reason,
        );
        if !self.message.is_empty() {
            out.push_str(&format!("  {}\n", self.message));
        }
        for p in &self.parts {
            out.push_str(&format!(
                "  part {:>4}  {:<9} {:>9}  {:>10}  {}{}\n",
                p.part,
                format!("{:?}", p.status).to_lowercase(),
                human_seconds(p.duration_seconds),
                human_bytes(p.bytes),
                p.url,
                if p.message.is_empty() {
                    String::new()
                } else {
                    format!("\n             {}", p.message)
                },
            ));
        }
        out
    }
}
