//! Progress: the pure decision. Given a job, its worker pods and the time, what should exist and
//! what the status says — each person decided on their own (`person.rs`), then the job's phase
//! and conditions (`phase.rs`). The controller applies the result; nothing here talks to the
//! API server.

use crate::build::{self, Person, Resume};
use crate::person::{self, Decision};
use crate::phase;
use crate::settings::Settings;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use roomrec_api::crd::{Phase, RecordingJob, RecordingJobStatus};
use roomrec_api::{FileState, StopReason, WorkerState};
use std::time::Duration;

pub use crate::person::{LAST_REPORT_GRACE, PodState, pod_state};
pub use crate::phase::human_duration;

/// An Event to publish: (warning?, reason, note).
pub type Event = (bool, &'static str, String);

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Worker pods to create: (person, attempt).
    pub create: Vec<(Person, u32, Resume)>,
    /// Worker pods to delete gracefully (a stop).
    pub delete: Vec<String>,
    /// The operator's part of the status (never `files`: the workers own those).
    pub status: RecordingJobStatus,
    pub requeue_after: Option<Duration>,
    pub events: Vec<Event>,
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

    /// The stop reason a stop gives, when there is one.
    pub fn reason(self) -> Option<StopReason> {
        match self {
            Stopping::No => None,
            Stopping::Requested => Some(StopReason::StopRequested),
            Stopping::Deleted => Some(StopReason::Deleted),
        }
    }
}

pub fn plan(job: &RecordingJob, pods: &[Pod], settings: &Settings, now: Timestamp) -> Plan {
    let old = job.status.clone().unwrap_or_default();
    let stopping = Stopping::of(job);
    let people = build::people(job);
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
    let ctx = person::Context {
        stopping,
        settings,
        now,
        files: &old.files,
        people: people.len(),
        session_start: &session_start,
        max_duration_seconds: job.spec.max_duration_seconds,
        room: old.room.as_ref(),
    };
    let mut plan = Plan::default();
    let mut workers = Vec::new();
    let mut latest_pod = old.worker_pod.clone();
    let mut any_running = false;
    for person in &people {
        let previous = old.workers.iter().find(|w| w.user_id == person.user_id);
        let Decision {
            mut entry,
            create,
            delete,
            requeue_after,
            events,
            replacement,
            running,
        } = person::decide(person, previous, pods, &ctx);
        if let Some((attempt, resume)) = create {
            let name = build::pod_name(job, person, attempt);
            entry.pod = Some(name.clone());
            latest_pod = Some(name);
            plan.create.push((person.clone(), attempt, resume));
        }
        plan.delete.extend(delete);
        if let Some(after) = requeue_after {
            plan.requeue_after = Some(plan.requeue_after.map_or(after, |r| r.min(after)));
        }
        plan.events.extend(events);
        plan.replacements += u32::from(replacement);
        any_running |= running;
        workers.push(entry);
    }

    let mut status = RecordingJobStatus {
        observed_generation: job.metadata.generation,
        mode: job.spec.mode,
        worker_pod: latest_pod,
        started_at: (old.started_at.is_some() || !pods.is_empty() || !plan.create.is_empty())
            .then(|| session_start.clone()),
        attempts: Some(workers.iter().map(|w| w.attempts).sum()),
        users: Some(users(&people)),
        file_count: Some(
            old.files
                .iter()
                .filter(|f| f.status == FileState::Succeeded)
                .count() as u32,
        ),
        recorded: Some(human_duration(
            old.files
                .iter()
                .filter(|f| f.status != FileState::Failed)
                .map(|f| f.duration_seconds)
                .sum(),
        )),
        callback: old.callback.clone(),
        ..Default::default()
    };
    let (phase, stop_reason, message) = phase::phase(&old, stopping, &workers, any_running);
    status.phase = Some(phase);
    status.stop_reason = stop_reason;
    status.finished_at = if phase.is_terminal() {
        old.finished_at.clone().or_else(|| Some(now.to_string()))
    } else {
        None
    };
    status.conditions = phase::conditions(&old, phase, message, &workers, now);
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

/// The recorded people, comma-separated (for `kubectl get`).
pub fn users(people: &[Person]) -> String {
    people
        .iter()
        .map(|p| p.user_id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Workers that record now.
pub fn running(status: &RecordingJobStatus) -> usize {
    status
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Recording)
        .count()
}
