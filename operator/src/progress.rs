//! The pure decision: given a job, its worker pods and the time, what should exist and what
//! the status says. The controller applies the result; nothing here talks to the API server.
//!
//! Per person the history is: worker attempts 1, 2, … (pods named by attempt, so a restarted
//! operator finds the running one instead of starting a duplicate). A worker that ends on its
//! own (source ended, idle, max duration) finishes that person; one that crashes, is evicted or
//! disappears is replaced — its parts stay, the next worker continues with a new part — until
//! the attempts run out or nothing is left to record.

use crate::crd::{FileStatus, Phase, RecordingJob, RecordingJobStatus, WorkerStatus};
use crate::settings::{Settings, backoff};
use crate::worker::{self, LABEL_ATTEMPT, LABEL_PERSON, Person, Resume};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::Deserialize;
use std::time::Duration;

/// What a finished worker left in its termination message.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub stop_reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

/// A worker pod as far as the decision is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// Scheduled, starting or running (`running` once its container started).
    Active { running: bool, deleting: bool },
    Terminated {
        exit_code: i32,
        result: Option<WorkerResult>,
        /// The raw termination message when it is not the worker's JSON (e.g. the log tail).
        raw: String,
        /// When it ended (or, when the runtime did not say, when it was created).
        finished_at: Option<Timestamp>,
    },
}

pub fn pod_state(pod: &Pod) -> PodState {
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let status = pod.status.clone().unwrap_or_default();
    let terminated = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == worker::CONTAINER)
        .and_then(|c| c.state.and_then(|s| s.terminated));
    let phase = status.phase.unwrap_or_default();
    match terminated {
        Some(t) if phase == "Succeeded" || phase == "Failed" || !deleting => {
            let raw = t.message.clone().unwrap_or_default();
            PodState::Terminated {
                exit_code: t.exit_code,
                result: serde_json::from_str(raw.trim()).ok(),
                raw,
                finished_at: t.finished_at.map(|f| f.0).or(created),
            }
        }
        _ if phase == "Failed" || phase == "Succeeded" => PodState::Terminated {
            exit_code: if phase == "Succeeded" { 0 } else { 1 },
            result: None,
            raw: status.message.unwrap_or_default(),
            finished_at: created,
        },
        _ => PodState::Active {
            running: phase == "Running",
            deleting,
        },
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Worker pods to create: (person, attempt).
    pub create: Vec<(Person, u32, Resume)>,
    /// Worker pods to delete gracefully (a stop).
    pub delete: Vec<String>,
    /// The operator's part of the status (never `files`: the workers own those).
    pub status: RecordingJobStatus,
    pub requeue_after: Option<Duration>,
    /// (warning?, reason, note) for Events.
    pub events: Vec<(bool, &'static str, String)>,
    /// Replacements started now (for the restarts metric).
    pub replacements: u32,
}

/// Why a job is being stopped, if it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stopping {
    No,
    /// `spec.stop: true`.
    Requested,
    /// The RecordingJob is being deleted.
    Deleted,
}

impl Stopping {
    pub fn of(job: &RecordingJob) -> Self {
        if job.metadata.deletion_timestamp.is_some() {
            Stopping::Deleted
        } else if job.spec.stop {
            Stopping::Requested
        } else {
            Stopping::No
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Stopping::Deleted => "deleted",
            _ => "stop-requested",
        }
    }
}

const DONE: &str = "Done";
const FAILED: &str = "Failed";

pub fn plan(job: &RecordingJob, pods: &[Pod], settings: &Settings, now: Timestamp) -> Plan {
    let old = job.status.clone().unwrap_or_default();
    let stopping = Stopping::of(job);
    let people = worker::people(job);
    let mut plan = Plan::default();
    // The session every worker of the job shares: the status's start, else (a status write
    // recording it was lost) the first worker's creation, else now.
    let session_start = old
        .started_at
        .clone()
        .or_else(|| {
            pods.iter()
                .filter_map(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .min()
                .map(|t| t.to_string())
        })
        .unwrap_or_else(|| now.to_string());
    let mut workers = Vec::new();
    let mut latest_pod = old.worker_pod.clone();
    let mut any_running = false;

    for person in &people {
        let previous = old.workers.iter().find(|w| w.user_id == person.user_id);
        let mut mine: Vec<(u32, &Pod)> = pods
            .iter()
            .filter(|p| p.labels().get(LABEL_PERSON) == Some(&person.index.to_string()))
            .filter_map(|p| Some((p.labels().get(LABEL_ATTEMPT)?.parse().ok()?, p)))
            .collect();
        mine.sort_by_key(|(attempt, _)| *attempt);
        let attempts = previous
            .map(|w| w.attempts)
            .unwrap_or(0)
            .max(mine.last().map(|(a, _)| *a).unwrap_or(0));
        let mut entry = WorkerStatus {
            user_id: person.user_id.clone(),
            state: "Pending".into(),
            attempts,
            pod: previous.and_then(|w| w.pod.clone()),
            stop_reason: previous.and_then(|w| w.stop_reason.clone()),
            message: previous.map(|w| w.message.clone()).unwrap_or_default(),
        };
        // A person's end is final: it is never reopened.
        if let Some(previous) = previous.filter(|w| w.state == DONE || w.state == FAILED) {
            workers.push(previous.clone());
            continue;
        }
        let recorded = recorded_seconds(&old.files, person, people.len());
        let resume = Resume {
            session_start: session_start.clone(),
            recorded_seconds: recorded,
        };
        let latest = mine
            .iter()
            .rev()
            .find(|(a, _)| *a == attempts)
            .map(|(_, p)| *p);
        if let Some(pod) = latest {
            entry.pod = Some(pod.name_any());
        }
        // Why the last worker is gone, if it is and should be replaced.
        let ended: Option<(String, Option<Timestamp>)> = match latest.map(pod_state) {
            None if attempts == 0 => {
                if stopping != Stopping::No {
                    entry.state = DONE.into();
                    entry.stop_reason = Some(stopping.reason().into());
                    entry.message = "stopped before a worker started".into();
                    workers.push(entry);
                    continue;
                }
                None
            }
            None => Some((
                format!(
                    "worker pod {} disappeared (deleted or evicted)",
                    entry.pod.clone().unwrap_or_default()
                ),
                None,
            )),
            Some(PodState::Active { running, deleting }) => {
                any_running |= running;
                entry.state = if running { "Recording" } else { "Pending" }.into();
                if stopping != Stopping::No && !deleting {
                    plan.delete.push(latest.expect("active pod").name_any());
                }
                workers.push(entry);
                continue;
            }
            Some(PodState::Terminated {
                finished_at,
                result: Some(_),
                ..
            }) if reports_pending(&old.files, latest, finished_at, now) => {
                // The worker wrote its result, so its last status report was on its way (it
                // follows the result): wait a moment for it before judging how it ended. A
                // crashed worker wrote no result and is replaced at once.
                plan.requeue_after = Some(Duration::from_secs(1));
                entry.state = "Recording".into();
                workers.push(entry);
                continue;
            }
            Some(PodState::Terminated {
                exit_code,
                result,
                raw,
                finished_at,
            }) => {
                let parsed = result.is_some();
                // No readable result (killed, OOM, a crash before writing it): worth retrying.
                let result = result.unwrap_or(WorkerResult {
                    retryable: true,
                    ..WorkerResult::default()
                });
                // The worker's own words; a log tail only when it left no result.
                let message = if parsed {
                    result.message.clone()
                } else {
                    raw.chars().take(1000).collect()
                };
                // The worker stopped on its own (even if something failed on the way, e.g.
                // nothing arrived): the person is done; failed files show in the status.
                let natural = matches!(
                    result.stop_reason.as_str(),
                    "source-ended" | "idle-timeout" | "max-duration" | "stop-requested"
                );
                if natural {
                    entry.state = DONE.into();
                    entry.stop_reason = Some(result.stop_reason.clone());
                    entry.message = message;
                    workers.push(entry);
                    continue;
                }
                if exit_code == 2 || !result.retryable {
                    entry.state = FAILED.into();
                    entry.stop_reason = Some("failed".into());
                    entry.message = message;
                    plan.events.push((
                        true,
                        "WorkerFailed",
                        format!("{}: {}", person.user_id, entry.message),
                    ));
                    workers.push(entry);
                    continue;
                }
                let why = if message.is_empty() {
                    format!("worker exited with code {exit_code}")
                } else {
                    message
                };
                Some((why, finished_at))
            }
        };
        // No worker runs for this person: start the first, or replace the last.
        if let Some((why, _)) = &ended
            && stopping != Stopping::No
        {
            entry.state = DONE.into();
            entry.stop_reason = Some(stopping.reason().into());
            entry.message = why.clone();
            workers.push(entry);
            continue;
        }
        if let Some(max) = job.spec.max_duration_seconds
            && recorded >= f64::from(max) - 0.5
        {
            entry.state = DONE.into();
            entry.stop_reason = Some("max-duration".into());
            workers.push(entry);
            continue;
        }
        if let Some((why, _)) = &ended
            && attempts >= settings.max_attempts
        {
            entry.state = FAILED.into();
            entry.stop_reason = Some("failed".into());
            entry.message = format!("gave up after {attempts} worker runs; the last: {why}");
            plan.events.push((
                true,
                "GaveUp",
                format!("{}: {}", person.user_id, entry.message),
            ));
            workers.push(entry);
            continue;
        }
        if let Some((why, finished_at)) = &ended {
            let wait = if attempts <= 1 {
                Duration::ZERO
            } else {
                backoff(settings.retry_backoff, attempts - 1)
            };
            let since = finished_at
                .map(|f| now.duration_since(f).unsigned_abs())
                .unwrap_or(wait);
            if since < wait {
                let left = wait - since;
                plan.requeue_after = Some(plan.requeue_after.map_or(left, |r| r.min(left)));
                // A fixed time, not a countdown: the status must not change on every pass.
                let due = finished_at
                    .and_then(|f| f.checked_add(wait).ok())
                    .unwrap_or(now);
                entry.message = format!("{why}; the next worker starts at {due}");
                workers.push(entry);
                continue;
            }
            plan.events.push((
                true,
                "WorkerReplaced",
                format!(
                    "{}: attempt {} of {}: {why}",
                    person.user_id,
                    attempts + 1,
                    settings.max_attempts
                ),
            ));
            plan.replacements += 1;
            entry.message = why.clone();
        }
        let attempt = attempts + 1;
        let name = worker::pod_name(job, person, attempt);
        entry.attempts = attempt;
        entry.pod = Some(name.clone());
        entry.state = "Pending".into();
        latest_pod = Some(name);
        plan.create.push((person.clone(), attempt, resume));
        workers.push(entry);
    }

    let mut status = RecordingJobStatus {
        observed_generation: job.metadata.generation,
        worker_pod: latest_pod,
        started_at: (old.started_at.is_some() || !pods.is_empty() || !plan.create.is_empty())
            .then(|| session_start.clone()),
        attempts: Some(workers.iter().map(|w| w.attempts).sum()),
        users: Some(
            people
                .iter()
                .map(|p| p.user_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        file_count: Some(old.files.iter().filter(|f| f.status == "succeeded").count() as u32),
        recorded: Some(human_duration(
            old.files
                .iter()
                .filter(|f| f.status != "failed")
                .map(|f| f.duration_seconds)
                .sum(),
        )),
        callback: old.callback.clone(),
        ..Default::default()
    };

    let all_ended =
        !workers.is_empty() && workers.iter().all(|w| w.state == DONE || w.state == FAILED);
    let (phase, stop_reason, message) = if let Some(phase) = old.phase.filter(|p| p.is_terminal()) {
        (phase, old.stop_reason.clone(), None)
    } else if all_ended {
        let (phase, reason, message) = outcome(stopping, &workers, &old.files);
        (phase, Some(reason), Some(message))
    } else if stopping != Stopping::No {
        (Phase::Finalizing, None, None)
    } else if any_running {
        (Phase::Recording, None, None)
    } else if old.phase == Some(Phase::Recording) {
        // Between a worker and its replacement the recording goes on.
        (Phase::Recording, None, None)
    } else {
        (Phase::Pending, None, None)
    };
    status.phase = Some(phase);
    status.stop_reason = stop_reason;
    status.finished_at = if phase.is_terminal() {
        old.finished_at.clone().or_else(|| Some(now.to_string()))
    } else {
        None
    };
    status.conditions = conditions(&old, phase, message, &workers, now);
    status.workers = workers;
    plan.status = status;
    if phase.is_terminal() && old.phase != Some(phase) {
        plan.events.push((
            phase != Phase::Succeeded && phase != Phase::Stopped,
            phase.as_str(),
            plan.status
                .conditions
                .iter()
                .find(|c| c.type_ == "Finished")
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        ));
    }
    plan
}

/// How long an ended worker's files may stay `recording` before the job is judged without its
/// last report.
pub const LAST_REPORT_GRACE: Duration = Duration::from_secs(15);

/// An ended worker still has `recording` entries, and it ended less than the grace ago.
fn reports_pending(
    files: &[FileStatus],
    pod: Option<&Pod>,
    finished_at: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    let Some(name) = pod.map(|p| p.name_any()) else {
        return false;
    };
    let recent =
        finished_at.is_none_or(|f| now.duration_since(f).unsigned_abs() < LAST_REPORT_GRACE);
    recent
        && files
            .iter()
            .any(|f| f.status == "recording" && f.pod.as_deref() == Some(name.as_str()))
}

/// Media seconds already stored for `person` (every file, when one person is recorded: a URL
/// source's files carry the stream name).
fn recorded_seconds(files: &[FileStatus], person: &Person, people: usize) -> f64 {
    files
        .iter()
        .filter(|f| people == 1 || f.user_id == person.user_id)
        .filter(|f| f.status != "failed")
        .map(|f| f.duration_seconds)
        .sum()
}

/// The end of a job whose people have all ended.
fn outcome(
    stopping: Stopping,
    workers: &[WorkerStatus],
    files: &[FileStatus],
) -> (Phase, String, String) {
    let failed: Vec<String> = workers
        .iter()
        .filter(|w| w.state == FAILED)
        .map(|w| format!("{}: {}", w.user_id, w.message))
        .collect();
    let bad_files: Vec<String> = files
        .iter()
        .filter(|f| f.status != "succeeded")
        .map(|f| format!("{} is {}: {}", f.url, f.status, f.message))
        .collect();
    let stored = files.iter().filter(|f| f.status == "succeeded").count();
    let seconds: f64 = files
        .iter()
        .filter(|f| f.status == "succeeded")
        .map(|f| f.duration_seconds)
        .sum();
    let summary = format!("{stored} file(s), {} of media", human_duration(seconds));
    if stopping != Stopping::No {
        return (
            Phase::Stopped,
            stopping.reason().into(),
            format!("stopped on request ({}); {summary}", stopping.reason()),
        );
    }
    if !failed.is_empty() || !bad_files.is_empty() {
        let mut problems = failed;
        problems.extend(bad_files);
        return (Phase::Failed, "failed".into(), problems.join("; "));
    }
    if stored == 0 {
        let why = workers
            .iter()
            .map(|w| format!("{}: {}", w.user_id, w.message))
            .collect::<Vec<_>>()
            .join("; ");
        return (
            Phase::Failed,
            workers
                .first()
                .and_then(|w| w.stop_reason.clone())
                .unwrap_or_else(|| "failed".into()),
            format!("nothing was recorded ({why})"),
        );
    }
    let reason = workers
        .iter()
        .filter_map(|w| w.stop_reason.clone())
        .next()
        .unwrap_or_else(|| "source-ended".into());
    (Phase::Succeeded, reason, summary)
}

fn conditions(
    old: &RecordingJobStatus,
    phase: Phase,
    finished_message: Option<String>,
    workers: &[WorkerStatus],
    now: Timestamp,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let recording = workers.iter().any(|w| w.state == "Recording");
    let waiting: Vec<String> = workers
        .iter()
        .filter(|w| w.state == "Pending" && !w.message.is_empty())
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
                workers.iter().filter(|w| w.state == "Recording").count(),
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
