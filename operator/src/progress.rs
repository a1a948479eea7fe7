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

pub use crate::person::{PodState, pod_state};
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
    let on_publish = job
        .spec
        .source
        .trtc
        .as_ref()
        .is_some_and(|t| t.starts_on_publish());
    // A whole room's people: those who published, in order, up to the limit; the rest are
    // named once in a Warning and in status.notRecorded.
    let (people, not_recorded, beyond_events) = match &job.spec.source.trtc {
        Some(trtc) if trtc.whole_room.is_some() => {
            let (people, beyond) = build::room_people(job, settings.max_people_per_job);
            let new: Vec<String> = beyond
                .iter()
                .filter(|k| !old.not_recorded.contains(k))
                .cloned()
                .collect();
            let events: Vec<Event> = (!new.is_empty())
                .then(|| {
                    (
                        true,
                        "TooManyPeople",
                        format!(
                            "not recording {}: the job records at most {} people (spec.source.trtc.wholeRoom.maxPeople, else the operator's --max-people-per-job)",
                            new.join(", "),
                            people.len()
                        ),
                    )
                })
                .into_iter()
                .collect();
            (people, beyond, events)
        }
        _ => (build::people(job), Vec::new(), Vec::new()),
    };
    let (job_end, job_end_due) = if on_publish {
        job_end(job, &old, now)
    } else {
        (None, None)
    };
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
        on_publish,
        job_end,
    };
    let mut plan = Plan {
        requeue_after: job_end_due,
        events: beyond_events,
        ..Plan::default()
    };
    let mut workers = Vec::new();
    let mut latest_pod = old.worker_pod.clone();
    let mut any_running = false;
    for person in &people {
        let previous = old.workers.iter().find(|w| w.user_id == person.key);
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
    status.not_recorded = not_recorded;
    let ends = if on_publish {
        phase::Ends::ByRoom(job_end.or_else(|| person::room_end(old.room.as_ref(), None)))
    } else {
        phase::Ends::WithPeople
    };
    let (phase, stop_reason, message) = phase::phase(&old, stopping, &workers, any_running, ends);
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

/// An event-driven job's own end, and when to look again if it has not come: nobody it
/// follows has published for the idle timeout (since the last one stopped, or since the job
/// was created), or (wholeRoom) maxDurationSeconds have passed since it was created.
fn job_end(
    job: &RecordingJob,
    old: &RecordingJobStatus,
    now: Timestamp,
) -> (Option<StopReason>, Option<Duration>) {
    let created = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let people = old
        .room
        .as_ref()
        .map(|r| r.people.values().collect::<Vec<_>>())
        .unwrap_or_default();
    let mut due: Vec<(Timestamp, StopReason)> = Vec::new();
    if !people.iter().any(|p| p.publishing) {
        let last = people
            .iter()
            .filter_map(|p| p.stopped_at.as_deref()?.parse::<Timestamp>().ok())
            .chain([created])
            .max()
            .unwrap_or(created);
        let idle = job.spec.idle_timeout_seconds.unwrap_or(0);
        if let Ok(at) = last.checked_add(Duration::from_secs(u64::from(idle))) {
            due.push((at, StopReason::RoomIdle));
        }
    }
    let whole_room = job
        .spec
        .source
        .trtc
        .as_ref()
        .is_some_and(|t| t.whole_room.is_some());
    if let Some(max) = job.spec.max_duration_seconds.filter(|_| whole_room)
        && let Ok(at) = created.checked_add(Duration::from_secs(u64::from(max)))
    {
        due.push((at, StopReason::MaxDuration));
    }
    due.sort_by_key(|(at, _)| *at);
    match due.first() {
        Some((at, reason)) if *at <= now => (Some(*reason), None),
        Some((at, _)) => (
            None,
            Some(now.duration_until(*at).unsigned_abs() + Duration::from_millis(100)),
        ),
        None => (None, None),
    }
}

/// The recorded people, comma-separated (for `kubectl get`).
pub fn users(people: &[Person]) -> String {
    people
        .iter()
        .map(|p| p.key.as_str())
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
