//! The words the operator and the workers share in the status, the termination message and
//! the callback: a person's state, a file's state, why a recording stopped. Serialised to the
//! same strings the CRD has always documented.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A recorded person's state (`status.workers[].state`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WorkerState {
    /// No worker records yet (starting, or waiting before a replacement).
    #[default]
    Pending,
    Recording,
    /// The person's recording ended; final.
    Done,
    /// The person's recording failed; final.
    Failed,
}

impl WorkerState {
    /// Done and Failed are never reopened.
    pub fn is_final(self) -> bool {
        matches!(self, WorkerState::Done | WorkerState::Failed)
    }
}

/// A file's (part's) state (`status.files[].status`, the manifest's and the termination
/// message's `status`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Still being written.
    Recording,
    Succeeded,
    Failed,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Recording => "recording",
            FileState::Succeeded => "succeeded",
            FileState::Failed => "failed",
        }
    }
}

/// Why a person's recording, or the job, ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The source ended (a live source: it did not return within the reconnect grace).
    SourceEnded,
    /// No media for the idle timeout (or the source never started).
    IdleTimeout,
    /// The maximum duration was recorded.
    MaxDuration,
    /// The worker was told to stop by a signal (SIGTERM, SIGINT).
    Signal,
    /// `spec.stop`, or the worker's stop file.
    StopRequested,
    /// The RecordingJob was deleted.
    Deleted,
    /// TRTC: the recording identity (the relay's agent) was removed from the room
    /// (RemoveUser / RemoveUserByStrRoomId).
    Removed,
    /// TRTC: no anchor published in the room for the idle time; the relay's agent left.
    RoomIdle,
    /// TRTC: the room was dismissed (DismissRoom, or it ended).
    RoomDismissed,
    /// TRTC, recording on room events: the person stopped publishing or left the room (their
    /// files are closed; publishing again starts a new part).
    Left,
    Failed,
}

impl StopReason {
    /// The worker stopped on its own terms, not because it broke: the person is done, and a
    /// replacement would record nothing more.
    pub fn is_natural(self) -> bool {
        matches!(
            self,
            StopReason::SourceEnded
                | StopReason::IdleTimeout
                | StopReason::MaxDuration
                | StopReason::StopRequested
                | StopReason::Removed
                | StopReason::RoomIdle
                | StopReason::RoomDismissed
                | StopReason::Left
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::SourceEnded => "source-ended",
            StopReason::IdleTimeout => "idle-timeout",
            StopReason::MaxDuration => "max-duration",
            StopReason::Signal => "signal",
            StopReason::StopRequested => "stop-requested",
            StopReason::Deleted => "deleted",
            StopReason::Removed => "removed",
            StopReason::RoomIdle => "room-idle",
            StopReason::RoomDismissed => "room-dismissed",
            StopReason::Left => "left",
            StopReason::Failed => "failed",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_words_are_the_documented_strings() {
        assert_eq!(json!(WorkerState::Done), "Done");
        assert_eq!(json!(FileState::Succeeded), "succeeded");
        for state in [
            FileState::Recording,
            FileState::Succeeded,
            FileState::Failed,
        ] {
            assert_eq!(json!(state), state.as_str());
        }
        for reason in [
            StopReason::SourceEnded,
            StopReason::IdleTimeout,
            StopReason::MaxDuration,
            StopReason::Signal,
            StopReason::StopRequested,
            StopReason::Deleted,
            StopReason::Removed,
            StopReason::RoomIdle,
            StopReason::RoomDismissed,
            StopReason::Left,
            StopReason::Failed,
        ] {
            assert_eq!(json!(reason), reason.as_str());
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(StopReason::IdleTimeout.as_str(), "idle-timeout");
    }
}
