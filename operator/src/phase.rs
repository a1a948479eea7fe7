//! The job's phase and conditions, from its people's states: when all have ended, how the job
//! ended (Succeeded, Failed or Stopped, and why); until then, whether it records.

use crate::progress::Stopping;
use jiff::Timestamp;
use roomrec_api::crd::{FileStatus, Phase, RecordingJobStatus, WorkerStatus};
use roomrec_api::{FileState, StopReason, WorkerState};

/// When a job ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ends {
    /// Once all its people have ended (named people, a url).
    WithPeople,
    /// When the room says (the reason, once it has) or on a stop: people who stop publishing
    /// may come back (wholeRoom, startOn: publish).
    ByRoom(Option<StopReason>),
}

/// The phase while people are still recording (or waiting to), or the end once all have.
pub fn phase(
    old: &RecordingJobStatus,
    stopping: Stopping,
    workers: &[WorkerStatus],
    any_running: bool,
    ends: Ends,
) -> (Phase, Option<StopReason>, Option<String>) {
    let all_final = workers.iter().all(|w| w.state.is_final());
    let (all_ended, room_reason) = match ends {
        Ends::WithPeople => (!workers.is_empty() && all_final, None),
        Ends::ByRoom(reason) => (
            all_final && (reason.is_some() || stopping != Stopping::No),
            reason,
        ),
    };
    if let Some(phase) = old.phase.filter(|p| p.is_terminal()) {
        (phase, old.stop_reason, None)
    } else if all_ended {
        let (phase, reason, message) = outcome(stopping, workers, &old.files, room_reason);
        (phase, Some(reason), Some(message))
    } else if stopping != Stopping::No {
        (Phase::Finalizing, None, None)
    } else if any_running || old.phase == Some(Phase::Recording) {
        // Between a worker and its replacement the recording goes on.
        (Phase::Recording, None, None)
    } else {
        (Phase::Pending, None, None)
    }
}

/// The end of a job whose people have all ended.
pub fn outcome(
    stopping: Stopping,
    workers: &[WorkerStatus],
    files: &[FileStatus],
    room_reason: Option<StopReason>,
) -> (Phase, StopReason, String) {
    let failed: Vec<String> = workers
        .iter()
        .filter(|w| w.state == WorkerState::Failed)
        .map(|w| format!("{}: {}", w.user_id, w.message))
        .collect();
    let bad_files: Vec<String> = files
        .iter()
        .filter(|f| f.status != FileState::Succeeded)
        .map(|f| format!("{} is {}: {}", f.url, f.status.as_str(), f.message))
        .collect();
    let stored = files
        .iter()
        .filter(|f| f.status == FileState::Succeeded)
        .count();
    let seconds: f64 = files
        .iter()
        .filter(|f| f.status == FileState::Succeeded)
        .map(|f| f.duration_seconds)
        .sum();
    let summary = format!("{stored} file(s), {} of media", human_duration(seconds));
    if let Some(reason) = stopping.reason() {
        return (
            Phase::Stopped,
            reason,
            format!("stopped on request ({reason}); {summary}"),
        );
    }
    if !failed.is_empty() || !bad_files.is_empty() {
        let mut problems = failed;
        problems.extend(bad_files);
        return (Phase::Failed, StopReason::Failed, problems.join("; "));
    }
    if stored == 0 {
        let why = workers
            .iter()
            .map(|w| format!("{}: {}", w.user_id, w.message))
            .collect::<Vec<_>>()
            .join("; ");
        let why = if workers.is_empty() {
            "nobody published".to_string()
        } else {
            why
        };
        return (
            Phase::Failed,
            room_reason
                .or_else(|| workers.first().and_then(|w| w.stop_reason))
                .unwrap_or(StopReason::Failed),
            format!("nothing was recorded ({why})"),
        );
    }
    let reason = room_reason
        .or_else(|| workers.iter().find_map(|w| w.stop_reason))
        .unwrap_or(StopReason::SourceEnded);
    (Phase::Succeeded, reason, summary)
}

pub fn conditions(
    old: &RecordingJobStatus,
    phase: Phase,
    finished_message: Option<String>,
    workers: &[WorkerStatus],
    now: Timestamp,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let recording = workers.iter().any(|w| w.state == WorkerState::Recording);
    let waiting: Vec<String> = workers
        .iter()
        .filter(|w| w.state == WorkerState::Pending && !w.message.is_empty())
        .map(|w| format!("{}: {}", w.user_id, w.message))
        .collect();
    let mut out = vec![condition(
        old,
        "Recording",
        recording,
        if recording {
            "WorkersRunning"
        } else if phase.is_terminal() {
            "Ended"
        } else {
            "Waiting"
        },
        if waiting.is_empty() {
            format!(
                "{} of {} worker(s) recording",
                workers
                    .iter()
                    .filter(|w| w.state == WorkerState::Recording)
                    .count(),
                workers.len()
            )
        } else {
            waiting.join("; ")
        },
        now,
    )];
    let finished_message = finished_message.or_else(|| {
        old.conditions
            .iter()
            .find(|c| c.type_ == "Finished")
            .map(|c| c.message.clone())
    });
    out.push(condition(
        old,
        "Finished",
        phase.is_terminal(),
        if phase.is_terminal() {
            phase.as_str()
        } else {
            "InProgress"
        },
        if phase.is_terminal() {
            finished_message.unwrap_or_default()
        } else {
            String::new()
        },
        now,
    ));
    out
}

/// A condition whose lastTransitionTime moves only when its status does.
pub fn condition(
    old: &RecordingJobStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let status = if status { "True" } else { "False" }.to_string();
    let previous = old.conditions.iter().find(|c| c.type_ == type_);
    let since = previous
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: None,
    }
}

/// `1h2m3s`, `4m5s`, `6s`.
pub fn human_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}
