//! The decision for one recorded person: given their worker pods, their earlier status and the
//! time, what their state is and whether a worker should start, stop or be waited for.
//!
//! Per person the history is: worker attempts 1, 2, … (pods named by attempt, so a restarted
//! operator finds the running one instead of starting a duplicate). A worker that ends on its
//! own (source ended, idle, max duration) finishes that person; one that crashes, is evicted or
//! disappears is replaced — its parts stay, the next worker continues with a new part — until
//! the attempts run out or nothing is left to record.

use crate::build::{self, LABEL_ATTEMPT, LABEL_PERSON, Person, Resume};
use crate::progress::{Event, Stopping};
use crate::settings::{Settings, backoff};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use roomrec_api::crd::{FileStatus, RoomStatus, WorkerStatus};
use roomrec_api::{FileState, StopReason, WorkerResult, WorkerState};
use std::time::Duration;

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
        .find(|c| c.name == build::CONTAINER)
        .and_then(|c| c.state.and_then(|s| s.terminated));
    let phase = status.phase.unwrap_or_default();
    match terminated {
        Some(t) if phase == "Succeeded" || phase == "Failed" || !deleting => {
            let raw = t.message.clone().unwrap_or_default();
            PodState::Terminated {
                exit_code: t.exit_code,
                result: WorkerResult::parse(&raw),
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

/// What the job's decision needs to know about everyone.
pub struct Context<'a> {
    pub stopping: Stopping,
    pub settings: &'a Settings,
    pub now: Timestamp,
    /// The files reported so far.
    pub files: &'a [FileStatus],
    /// How many people the job records (with one, every file is theirs).
    pub people: usize,
    pub session_start: &'a str,
    pub max_duration_seconds: Option<u32>,
    /// What TRTC's room events said (room dismissed, agents gone, who publishes).
    pub room: Option<&'a RoomStatus>,
    /// People start when they publish and stop when they stop (wholeRoom, startOn: publish).
    pub on_publish: bool,
    /// An event-driven job's own end (the room idle, its maximum duration): everyone stops.
    pub job_end: Option<StopReason>,
}

/// A person's recording that ended this way is reopened when they publish again.
fn reopens(reason: Option<StopReason>) -> bool {
    matches!(
        reason,
        Some(StopReason::Left | StopReason::SourceEnded | StopReason::IdleTimeout)
    )
}

/// Why the room ended this person's recording, if it did: the room dismissed, or their relay's
/// agent gone (removed by RemoveUser, or left at MaxIdleTime: no anchor published). An exit
/// from before the current relay started belongs to an earlier relay and is ignored.
pub fn room_end(room: Option<&RoomStatus>, previous: Option<&WorkerStatus>) -> Option<StopReason> {
    let room = room?;
    if room.dismissed_at.is_some() {
        return Some(StopReason::RoomDismissed);
    }
    // A relay roomrec stopped itself ends with its agent's exit too: that says nothing new.
    let relay = previous?
        .relay
        .as_ref()
        .filter(|r| r.stopped_at.is_none())?;
    let exit = room.agent_exits.get(&relay.agent_user_id)?;
    let after_start = match (
        exit.at.parse::<Timestamp>(),
        relay.started_at.parse::<Timestamp>(),
    ) {
        (Ok(at), Ok(started)) => at >= started,
        _ => true,
    };
    after_start.then_some(if exit.reason == REMOVED_BY_REMOVE_USER {
        StopReason::Removed
    } else {
        StopReason::RoomIdle
    })
}

/// TRTC's exit reason for a user removed by RemoveUser.
const REMOVED_BY_REMOVE_USER: u32 = 3;

/// How long a removal waits for the room's dismissal that may have caused it (EventTs has
/// one-second resolution; TRTC sends the 102 right after the 104s).
pub const DISMISSAL_WAIT: Duration = Duration::from_secs(3);

/// The person's relay agent was removed less than [`DISMISSAL_WAIT`] ago.
fn removed_moments_ago(
    room: Option<&RoomStatus>,
    previous: Option<&WorkerStatus>,
    now: Timestamp,
) -> bool {
    let exit = previous
        .and_then(|w| w.relay.as_ref())
        .and_then(|relay| room?.agent_exits.get(&relay.agent_user_id));
    exit.and_then(|e| e.at.parse::<Timestamp>().ok())
        .is_some_and(|at| now.duration_since(at).unsigned_abs() < DISMISSAL_WAIT)
}

/// The decision for one person.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub entry: WorkerStatus,
    /// Start this attempt.
    pub create: Option<(u32, Resume)>,
    /// Stop this worker pod gracefully.
    pub delete: Option<String>,
    pub requeue_after: Option<Duration>,
    pub events: Vec<Event>,
    /// The worker started now replaces one that ended early.
    pub replacement: bool,
    /// A worker of theirs runs.
    pub running: bool,
}

impl Decision {
    fn settled(entry: WorkerStatus) -> Self {
        Self {
            entry,
            ..Self::default()
        }
    }
}

pub fn decide(
    person: &Person,
    previous: Option<&WorkerStatus>,
    pods: &[Pod],
    ctx: &Context,
) -> Decision {
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
    // What the room's events say of this person, for a job that follows them.
    let presence = ctx
        .on_publish
        .then(|| ctx.room.and_then(|r| r.people.get(&person.key)));
    // A stop of the job, or the room's end of this person's recording.
    let job_stop = ctx
        .stopping
        .reason()
        .or(ctx.job_end)
        .or_else(|| room_end(ctx.room, previous));
    // A person's end is final, except that someone who stopped publishing and publishes again
    // (a later session) is recorded again: a new worker, a new part.
    if let Some(previous) = previous.filter(|w| w.state.is_final()) {
        let returned = presence.flatten().filter(|p| {
            p.publishing
                && p.session > previous.session.unwrap_or(0)
                && reopens(previous.stop_reason)
                && job_stop.is_none()
        });
        let Some(returned) = returned else {
            return Decision::settled(previous.clone());
        };
        let attempt = attempts + 1;
        let entry = WorkerStatus {
            state: WorkerState::Pending,
            attempts: attempt,
            stop_reason: None,
            message: format!("publishing again (session {})", returned.session),
            session: Some(returned.session),
            ..previous.clone()
        };
        return Decision {
            entry,
            create: Some((
                attempt,
                Resume {
                    session_start: ctx.session_start.to_string(),
                    recorded_seconds: recorded_seconds(ctx.files, person, ctx.people),
                },
            )),
            ..Decision::default()
        };
    }
    let mut entry = WorkerStatus {
        user_id: person.key.clone(),
        state: WorkerState::Pending,
        attempts,
        pod: previous.and_then(|w| w.pod.clone()),
        stop_reason: previous.and_then(|w| w.stop_reason),
        message: previous.map(|w| w.message.clone()).unwrap_or_default(),
        relay: previous.and_then(|w| w.relay.clone()),
        session: previous.and_then(|w| w.session),
    };
    // Someone the job follows who has not published yet waits for it; someone who stopped
    // publishing has their files closed.
    let stopping = match presence {
        Some(None) if attempts == 0 && job_stop.is_none() => {
            entry.message = format!("waiting for {} to publish (room events)", person.key);
            return Decision::settled(entry);
        }
        Some(Some(p)) if !p.publishing => {
            entry.session = entry.session.or(Some(p.session));
            job_stop.or(Some(StopReason::Left))
        }
        _ => job_stop,
    };
    let done = |mut entry: WorkerStatus, reason: StopReason, message: Option<String>| {
        entry.state = WorkerState::Done;
        entry.stop_reason = Some(reason);
        if let Some(message) = message {
            entry.message = message;
        }
        Decision::settled(entry)
    };
    let recorded = recorded_seconds(ctx.files, person, ctx.people);
    let latest = mine
        .iter()
        .rev()
        .find(|(a, _)| *a == attempts)
        .map(|(_, p)| *p);
    if let Some(pod) = latest {
        entry.pod = Some(pod.name_any());
    }
    // DismissRoom puts everyone out (104, reason 3) before the room's end (102) arrives: a
    // worker ended by a removal waits a moment for a dismissal that may follow, so that a
    // dismissed room's files say so rather than "removed".
    if stopping == Some(StopReason::Removed)
        && !matches!(latest.map(pod_state), Some(PodState::Active { .. }))
        && removed_moments_ago(ctx.room, previous, ctx.now)
    {
        entry.state = previous.map_or(WorkerState::Pending, |w| w.state);
        return Decision {
            entry,
            requeue_after: Some(Duration::from_secs(1)),
            ..Decision::default()
        };
    }
    // Why the last worker is gone, if it is and should be replaced.
    let ended: Option<(String, Option<Timestamp>)> = match latest.map(pod_state) {
        None if attempts == 0 => {
            if let Some(reason) = stopping {
                let why = match reason {
                    StopReason::Left => "stopped publishing before a worker started",
                    _ => "stopped before a worker started",
                };
                return done(entry, reason, Some(why.into()));
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
            entry.state = if running {
                WorkerState::Recording
            } else {
                WorkerState::Pending
            };
            let delete =
                (stopping.is_some() && !deleting).then(|| latest.expect("active pod").name_any());
            return Decision {
                entry,
                delete,
                running,
                ..Decision::default()
            };
        }
        Some(PodState::Terminated {
            exit_code,
            result,
            raw,
            finished_at,
        }) => {
            // The worker's own words; a log tail only when it left no result.
            let message = match &result {
                Some(r) => r.message.clone(),
                None => raw.chars().take(1000).collect(),
            };
            let nothing_recorded = result.as_ref().is_some_and(|r| r.parts == 0);
            // No readable result (killed, OOM, a crash before writing it): worth retrying.
            let (stop_reason, retryable) = result
                .map(|r| (Some(r.stop_reason), r.retryable))
                .unwrap_or((None, true));
            // The worker stopped on its own (even if something failed on the way, e.g.
            // nothing arrived): the person is done; failed files show in the status.
            if let Some(reason) = stop_reason.filter(|r| r.is_natural()) {
                // Asked to stop (a stop, the room, the person gone): that is why it ended.
                let reason = stopping.unwrap_or(reason);
                let message = match (&entry.relay, reason, nothing_recorded) {
                    // A relay that started but whose stream never arrived: the push domain may
                    // have refused its push (TRTC does not say), or the person never published.
                    (Some(_), StopReason::IdleTimeout, true) => format!(
                        "{message}; no media came through the relay: check that {} publishes, \
                         and spec.source.trtc.pushDomain and pushKeySecret (a push domain that \
                         refuses the relay's push looks the same from here)",
                        person.key
                    ),
                    _ => message,
                };
                return done(entry, reason, Some(message));
            }
            if exit_code == 2 || !retryable {
                entry.state = WorkerState::Failed;
                entry.stop_reason = Some(StopReason::Failed);
                entry.message = message;
                let note = format!("{}: {}", person.key, entry.message);
                return Decision {
                    entry,
                    events: vec![(true, "WorkerFailed", note)],
                    ..Decision::default()
                };
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
    if let (Some((why, _)), Some(reason)) = (&ended, stopping) {
        return done(entry, reason, Some(why.clone()));
    }
    if let Some(max) = ctx.max_duration_seconds
        && recorded >= f64::from(max) - 0.5
    {
        return done(entry, StopReason::MaxDuration, None);
    }
    let mut decision = Decision::default();
    if let Some((why, finished_at)) = &ended {
        let settings = ctx.settings;
        if attempts >= settings.max_attempts {
            entry.state = WorkerState::Failed;
            entry.stop_reason = Some(StopReason::Failed);
            entry.message = format!("gave up after {attempts} worker runs; the last: {why}");
            let note = format!("{}: {}", person.key, entry.message);
            return Decision {
                entry,
                events: vec![(true, "GaveUp", note)],
                ..Decision::default()
            };
        }
        let wait = if attempts <= 1 {
            Duration::ZERO
        } else {
            backoff(settings.retry_backoff, attempts - 1)
        };
        let since = finished_at
            .map(|f| ctx.now.duration_since(f).unsigned_abs())
            .unwrap_or(wait);
        if since < wait {
            // A fixed time, not a countdown: the status must not change on every pass.
            let due = finished_at
                .and_then(|f| f.checked_add(wait).ok())
                .unwrap_or(ctx.now);
            entry.message = format!("{why}; the next worker starts at {due}");
            return Decision {
                entry,
                requeue_after: Some(wait - since),
                ..Decision::default()
            };
        }
        decision.events.push((
            true,
            "WorkerReplaced",
            format!(
                "{}: attempt {} of {}: {why}",
                person.key,
                attempts + 1,
                settings.max_attempts
            ),
        ));
        decision.replacement = true;
        entry.message = why.clone();
    }
    let attempt = attempts + 1;
    entry.attempts = attempt;
    entry.state = WorkerState::Pending;
    if let Some(Some(p)) = presence {
        entry.session = Some(p.session);
    }
    decision.create = Some((
        attempt,
        Resume {
            session_start: ctx.session_start.to_string(),
            recorded_seconds: recorded,
        },
    ));
    decision.entry = entry;
    decision
}

/// An ended worker still has `recording` entries, and it ended less than the grace ago.
/// Media seconds already stored for `person` (every file, when one person is recorded: a URL
/// source's files carry the stream name).
fn recorded_seconds(files: &[FileStatus], person: &Person, people: usize) -> f64 {
    files
        .iter()
        .filter(|f| people == 1 || f.user_id == person.user_id)
        .filter(|f| f.status != FileState::Failed)
        .map(|f| f.duration_seconds)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomrec_api::crd::{AgentExit, RelayStatus};
    use roomrec_api::relay::StreamKind;

    fn with_relay(agent: &str, started_at: &str) -> WorkerStatus {
        WorkerStatus {
            user_id: "alice".into(),
            relay: Some(RelayStatus {
                task_id: "task-1".into(),
                agent_user_id: agent.into(),
                started_at: started_at.into(),
                stopped_at: None,
            }),
            ..WorkerStatus::default()
        }
    }

    fn exit(agent: &str, reason: u32, at: &str) -> RoomStatus {
        RoomStatus {
            dismissed_at: None,
            agent_exits: [(
                agent.to_string(),
                AgentExit {
                    reason,
                    at: at.into(),
                },
            )]
            .into(),
            people: Default::default(),
        }
    }

    #[test]
    fn the_room_ends_a_recording_by_dismissal_removal_or_idleness_of_its_own_relay() {
        let worker = with_relay("recorder-1", "2026-12-07T10:00:00Z");
        assert_eq!(room_end(None, Some(&worker)), None);
        let removed = exit("recorder-1", 3, "2026-12-07T10:05:00Z");
        assert_eq!(
            room_end(Some(&removed), Some(&worker)),
            Some(StopReason::Removed)
        );
        let idle = exit("recorder-1", 2, "2026-12-07T10:05:00Z");
        assert_eq!(
            room_end(Some(&idle), Some(&worker)),
            Some(StopReason::RoomIdle)
        );
        // Another agent's exit, or an exit from before this relay started (an earlier relay
        // ended by the new one's start), ends nothing.
        let other = exit("recorder-1_2", 3, "2026-12-07T10:05:00Z");
        assert_eq!(room_end(Some(&other), Some(&worker)), None);
        let stale = exit("recorder-1", 5, "2026-12-07T09:59:59Z");
        assert_eq!(room_end(Some(&stale), Some(&worker)), None);
        // A dismissed room ends everyone, relay or not, and wins over an exit.
        let mut dismissed = removed.clone();
        dismissed.dismissed_at = Some("2026-12-07T10:05:01Z".into());
        assert_eq!(
            room_end(Some(&dismissed), Some(&worker)),
            Some(StopReason::RoomDismissed)
        );
        assert_eq!(
            room_end(Some(&dismissed), None),
            Some(StopReason::RoomDismissed)
        );
    }

    #[test]
    fn a_removal_waits_a_moment_for_the_dismissal_that_may_have_caused_it() {
        let settings = Settings::default();
        let person = Person::named(0, "alice".into(), StreamKind::Main);
        let mut previous = with_relay("recorder-1", "2026-12-07T10:00:00Z");
        previous.attempts = 1;
        previous.state = WorkerState::Recording;
        let decide_at = |room: &RoomStatus, now: &str| {
            let ctx = Context {
                stopping: Stopping::No,
                settings: &settings,
                now: now.parse().unwrap(),
                files: &[],
                people: 1,
                session_start: "20261207T100000Z",
                max_duration_seconds: None,
                room: Some(room),
                on_publish: false,
                job_end: None,
            };
            // The worker pod is gone: it ended when the removal deleted it.
            decide(&person, Some(&previous), &[], &ctx)
        };
        let removed = exit("recorder-1", 3, "2026-12-07T10:05:00Z");
        let held = decide_at(&removed, "2026-12-07T10:05:01Z");
        assert_eq!(held.entry.state, WorkerState::Recording);
        assert_eq!(held.requeue_after, Some(Duration::from_secs(1)));
        let mut dismissed = removed.clone();
        dismissed.dismissed_at = Some("2026-12-07T10:05:00Z".into());
        let ended = decide_at(&dismissed, "2026-12-07T10:05:01Z");
        assert_eq!(ended.entry.stop_reason, Some(StopReason::RoomDismissed));
        let ended = decide_at(&removed, "2026-12-07T10:05:04Z");
        assert_eq!(ended.entry.state, WorkerState::Done);
        assert_eq!(ended.entry.stop_reason, Some(StopReason::Removed));
    }
}
