//! The reconcile loop: fetch → validate → decide (progress, pure) → build (pure) → apply →
//! status, then the callback. Everything it creates is owned by the job; the finalizer only
//! makes deletion wait until the workers have closed their files (and the callback had its
//! chance).

use crate::apply::{self, FINALIZER};
use crate::build;
use crate::callback;
use crate::error::{Error, Result};
use crate::fetch;
use crate::metrics::Metrics;
use crate::progress;
use crate::relay;
use crate::room_events;
use crate::room_presence::{self, Presence};
use crate::settings::{Settings, backoff};
use crate::status::{self, FIELD_MANAGER};
use crate::trtc_api::TrtcClient;
use crate::validate::{self, ValidatedJob, Validation};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use roomrec_api::FileState;
use roomrec_api::crd::{Phase, RecordingJob};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, info, warn};

pub struct Context {
    pub client: Client,
    /// The TRTC API, when the operator has credentials for it.
    pub trtc: Option<TrtcClient>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    /// Consecutive failures per job uid, for a backoff that grows per object.
    failures: Mutex<HashMap<String, u32>>,
    /// Who publishes in the rooms the room event receiver has heard of.
    pub presence: Arc<Presence>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: String,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(instance),
            },
        );
        let trtc = settings.trtc_api.clone().and_then(|config| {
            TrtcClient::new(config)
                .inspect_err(|e| warn!(error = %e, "the TRTC API client cannot be built"))
                .ok()
        });
        Self {
            client,
            trtc,
            settings,
            metrics,
            recorder,
            http: callback::http_client(),
            failures: Mutex::default(),
            presence: Arc::default(),
        }
    }

    /// Shares the room event receiver's memory of who publishes.
    pub fn with_presence(mut self, presence: Arc<Presence>) -> Self {
        self.presence = presence;
        self
    }

    pub(crate) async fn event(
        &self,
        job: &RecordingJob,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &job.object_ref(&())).await {
            warn!(error = %e, "publishing an event failed");
        }
    }
}

/// Runs the controller until `shutdown` resolves (in-flight reconciles finish first).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (jobs, pods): (Api<RecordingJob>, Api<Pod>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    Controller::new(jobs, watcher::Config::default())
        .owns(
            pods,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=roomrec-operator"),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // Logged, counted and shown as an Event by error_policy already.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                // A watch that fails (RBAC, the API server away) must be visible.
                Err(e) => warn!(error = %e, "watching failed; retrying"),
            }
        })
        .await;
}

async fn reconcile(job: Arc<RecordingJob>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let span = tracing::info_span!(
        "reconcile",
        job = %format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        trace_id = %uuid::Uuid::new_v4().simple(),
    );
    let result = reconcile_job(&job, &ctx).instrument(span).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok()
        && let Some(uid) = job.uid()
    {
        ctx.failures.lock().expect("lock").remove(&uid);
    }
    result
}

fn error_policy(job: Arc<RecordingJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.step()])
        .inc();
    let uid = job.uid().unwrap_or_default();
    let n = {
        let mut failures = ctx.failures.lock().expect("lock");
        let n = failures.entry(uid).or_default();
        *n += 1;
        *n
    };
    warn!(job = %job.name_any(), error = %error, failures = n, "reconcile failed");
    let note = error.to_string();
    let reason = error.event_reason();
    tokio::spawn(async move { ctx.event(&job, true, reason, note).await });
    Action::requeue(backoff(Duration::from_secs(1), n))
}

async fn reconcile_job(cached: &RecordingJob, ctx: &Context) -> Result<Action> {
    let ns = cached.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = cached.name_any();
    let jobs: Api<RecordingJob> = Api::namespaced(ctx.client.clone(), &ns);
    // Fetch. The watch cache can lag behind our own last status write; deciding from it could
    // undo that write (or count attempts twice). One read of the current object is cheap.
    let Some(job) = jobs.get_opt(&name).await.map_err(Error::Read)? else {
        ctx.metrics.observe(cached, None);
        return Ok(Action::await_change());
    };
    let job = &job;
    // The metrics and the worker pods' labels key on it.
    job.uid().ok_or(Error::MissingField("uid"))?;
    let deleting = job.metadata.deletion_timestamp.is_some();

    if !job.finalizers().iter().any(|f| f == FINALIZER) {
        if deleting {
            ctx.metrics.observe(job, None);
            return Ok(Action::await_change());
        }
        apply::add_finalizer(&jobs, job).await?;
        return Ok(Action::await_change());
    }

    // Validate, until the job has started.
    let old = job.status.clone().unwrap_or_default();
    let terminal = old.phase.is_some_and(Phase::is_terminal);
    if !terminal && old.attempts.unwrap_or(0) == 0 && !deleting {
        let offered = validate::Capabilities {
            trtc_api: ctx.trtc.is_some(),
            room_events: ctx.settings.room_events,
        };
        match validate::validate(job, &ctx.settings, &ctx.client, offered).await? {
            Validation::Valid => {}
            Validation::FillDefaults(patch) => {
                if let Some(filled) = apply::fill_defaults(&jobs, job, patch).await? {
                    let note = format!(
                        "filled in the operator's defaults for {}",
                        filled.join(", ")
                    );
                    ctx.event(job, false, "Defaulted", note).await;
                }
                return Ok(Action::await_change());
            }
            Validation::Invalid { reason, problem } => {
                let status = status::invalid(job, reason, &problem);
                if Some(&status) != job.status.as_ref() {
                    ctx.event(job, true, reason, problem).await;
                    status::write(&jobs, &name, &status).await?;
                }
                ctx.metrics.observe(job, Some((Phase::Pending, 0)));
                // A Secret may be created, fixed or granted any time (no event tells us); a
                // spec problem needs an edit of the job, which does.
                return Ok(match reason {
                    "InvalidReference"
                    | "InvalidUserSig"
                    | "NoRoomEvents"
                    | validate::SECRETS_NOT_GRANTED => Action::requeue(Duration::from_secs(15)),
                    _ => Action::await_change(),
                });
            }
        }
    }

    if !terminal && !deleting && seed_room(job, ctx, &jobs).await? {
        return Ok(Action::await_change());
    }

    // Decide.
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let Some((job, pods)) = fetch::pods_then_job(&jobs, &pods_api, &build::selector(job), job)
        .await
        .map_err(Error::Read)?
    else {
        return Ok(Action::await_change());
    };
    let (job, old) = (&job, job.status.clone().unwrap_or_default());
    let now = Timestamp::now();
    let mut plan = progress::plan(job, &pods, &ctx.settings, now);
    tracing::debug!(
        pods = ?pods.iter().map(|p| (p.name_any(), progress::pod_state(p))).collect::<Vec<_>>(),
        files = ?old.files.iter().map(|f| (f.part, f.status)).collect::<Vec<_>>(),
        phase = ?plan.status.phase,
        create = plan.create.len(),
        delete = plan.delete.len(),
        "plan"
    );

    // Build and apply. spec.worker may change after the start, which validated it: a new worker
    // runs only what the chart allows.
    if !plan.create.is_empty()
        && let Some(problem) = validate::refused_override(
            job,
            &ctx.settings.worker_overrides,
            &ctx.settings.worker_image,
        )
    {
        return Err(Error::OverrideNotAllowed(problem));
    }
    if !plan.create.is_empty() {
        let validated = ValidatedJob::of(job).map_err(Error::MissingField)?;
        start_relays(job, &validated, &mut plan, ctx, &jobs).await?;
    }
    if !plan.create.is_empty() {
        let validated = ValidatedJob::of(job).map_err(Error::MissingField)?;
        apply::worker_rbac(&ctx.client, job).await?;
        for (person, attempt, resume) in &plan.create {
            let pod = build::pod(job, &validated, person, *attempt, resume, &ctx.settings);
            if apply::create_pod(&pods_api, &pod).await? {
                info!(pod = %pod.name_any(), user = %person.key, attempt, "worker started");
            }
        }
    }
    for pod_name in &plan.delete {
        info!(pod = %pod_name, "stopping worker");
        apply::delete_pod(&pods_api, pod_name).await?;
    }
    for (warning, reason, note) in &plan.events {
        ctx.event(job, *warning, reason, note.clone()).await;
    }
    if old.started_at.is_none() && plan.status.started_at.is_some() {
        ctx.metrics.jobs_started.inc();
        let note = format!(
            "recording {}",
            plan.status.users.clone().unwrap_or_default()
        );
        ctx.event(job, false, "Started", note).await;
    }
    ctx.metrics
        .worker_restarts
        .inc_by(u64::from(plan.replacements));

    // Status.
    let mut status = plan.status;
    let phase = status.phase.unwrap_or(Phase::Pending);
    if phase.is_terminal() && !terminal {
        ctx.metrics
            .jobs_finished
            .with_label_values(&[phase.as_str()])
            .inc();
        let stored = old
            .files
            .iter()
            .filter(|f| f.status == FileState::Succeeded);
        ctx.metrics
            .recorded_bytes
            .inc_by(stored.clone().map(|f| f.bytes).sum());
        ctx.metrics
            .recorded_seconds
            .inc_by(stored.map(|f| f.duration_seconds).sum());
    }
    ctx.metrics
        .observe(job, Some((phase, progress::running(&status) as i64)));

    stop_relays(job, &mut status, ctx, false).await?;

    // The callback, once the job has ended.
    let mut requeue = plan.requeue_after;
    if phase.is_terminal() && job.spec.callback.is_some() {
        let mut ended = job.clone();
        let mut merged = status.clone();
        merged.files = old.files.clone();
        ended.status = Some(merged);
        if let Some(next) = callback::step(&ended, &mut status, ctx, now, deleting).await {
            requeue = Some(requeue.map_or(next, |r| r.min(next)));
        }
    }
    if !status::same(&old, &status) {
        status::write(&jobs, &name, &status).await?;
    }

    if deleting {
        let overdue = job.metadata.deletion_timestamp.as_ref().is_some_and(|t| {
            now.duration_since(t.0).unsigned_abs() > ctx.settings.finalize_timeout
        });
        if phase.is_terminal() || overdue {
            if overdue && !phase.is_terminal() {
                ctx.event(
                    job,
                    true,
                    "FinalizeTimeout",
                    format!(
                        "the workers did not close their files within {} s; their checkpoints stay in the store's .roomrec-journal",
                        ctx.settings.finalize_timeout.as_secs()
                    ),
                )
                .await;
            }
            // No relay outlives its job.
            let mut status = status;
            let stopped = stop_relays(job, &mut status, ctx, true).await;
            if !status::same(&old, &status) {
                status::write(&jobs, &name, &status).await?;
            }
            stopped?;
            apply::remove_finalizer(&jobs, job).await?;
            ctx.metrics.observe(job, None);
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    Ok(match (requeue, phase.is_terminal()) {
        (Some(after), _) => Action::requeue(after.max(Duration::from_millis(200))),
        (None, true) => Action::await_change(),
        // A safety net: pod and job events normally wake us first.
        (None, false) => Action::requeue(Duration::from_secs(60)),
    })
}

/// A job that starts on publish learns who already publishes in its room from the room event
/// receiver's memory (TRTC sends no event for them): whoever the memory knows to publish and
/// the job does not is added to `status.room.people`, at the version read, so a concurrent
/// event is never overwritten. Whether it wrote (the write wakes the next reconcile).
async fn seed_room(job: &RecordingJob, ctx: &Context, jobs: &Api<RecordingJob>) -> Result<bool> {
    let Some(trtc) = job
        .spec
        .source
        .trtc
        .as_ref()
        .filter(|t| t.starts_on_publish())
    else {
        return Ok(false);
    };
    let Some(room_text) = trtc.room_text() else {
        return Ok(false);
    };
    let mut remembered = ctx.presence.publishing(trtc.sdk_app_id, &room_text);
    remembered.retain(|_, p| room_presence::wanted(trtc, &p.user_id, p.stream));
    if remembered.is_empty() {
        return Ok(false);
    }
    let mut room = job
        .status
        .as_ref()
        .and_then(|s| s.room.clone())
        .unwrap_or_default();
    if !room_presence::merge_remembered(&mut room.people, remembered) {
        return Ok(false);
    }
    match room_events::write_room(jobs, job, &room).await {
        Ok(()) => {
            info!(job = %job.name_any(), "added the room's publishers known from earlier events");
            Ok(true)
        }
        // An event was written first: the next reconcile merges again.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(true),
        Err(e) => Err(Error::Status(e)),
    }
}

/// Starts the relay of each person about to get a worker (relay: start) unless theirs still
/// runs (a replaced worker reuses it), and writes the TaskIds into the status before anything
/// else: an operator that dies now finds them there. A person whose relay cannot start gets no
/// worker: a retryable failure is tried again, a permanent one fails that person.
async fn start_relays(
    job: &RecordingJob,
    validated: &ValidatedJob,
    plan: &mut progress::Plan,
    ctx: &Context,
    jobs: &Api<RecordingJob>,
) -> Result<()> {
    if relay::started_by_roomrec(job).is_none() {
        return Ok(());
    }
    let Some(api) = &ctx.trtc else {
        return Err(Error::Relay(
            "relay: start, but the operator has no TRTC API access".into(),
        ));
    };
    let now = Timestamp::now().as_second();
    let mut started = false;
    let mut create = Vec::new();
    for (person, attempt, resume) in std::mem::take(&mut plan.create) {
        let entry = plan
            .status
            .workers
            .iter_mut()
            .find(|w| w.user_id == person.key)
            .expect("every person to start has a status entry");
        if entry.relay.as_ref().is_some_and(|r| r.stopped_at.is_none()) {
            create.push((person, attempt, resume));
            continue;
        }
        match relay::start(
            api,
            &ctx.client,
            job,
            &person,
            validated.idle_timeout_seconds,
            now,
        )
        .await
        {
            Ok(started_relay) => {
                info!(user = %person.key, task = %started_relay.task_id, agent = %started_relay.agent_user_id, "relay started");
                ctx.metrics.relays_started.inc();
                let note = format!(
                    "{}: relay {} started, agent {} in the room",
                    person.key, started_relay.task_id, started_relay.agent_user_id
                );
                ctx.event(job, false, "RelayStarted", note).await;
                entry.relay = Some(started_relay);
                started = true;
                create.push((person, attempt, resume));
            }
            Err(e) => {
                ctx.metrics.relay_failures.inc();
                // No worker was started: the attempt does not count.
                entry.attempts = attempt - 1;
                entry.message = format!("starting the relay failed: {e}");
                if e.is_retryable() {
                    plan.requeue_after = Some(
                        plan.requeue_after
                            .map_or(RELAY_RETRY, |r| r.min(RELAY_RETRY)),
                    );
                } else {
                    entry.state = roomrec_api::WorkerState::Failed;
                    entry.stop_reason = Some(roomrec_api::StopReason::Failed);
                }
                let note = format!("{}: {}", person.key, entry.message);
                ctx.event(job, true, "RelayFailed", note).await;
            }
        }
    }
    plan.create = create;
    if started {
        status::write(jobs, &job.name_any(), &plan.status).await?;
    }
    Ok(())
}

/// Wait before trying a relay again after a failure a retry may help.
const RELAY_RETRY: Duration = Duration::from_secs(5);

/// Stops the relays whose person's recording has ended (every relay with `all`), recording
/// each stop in the status.
async fn stop_relays(
    job: &RecordingJob,
    status: &mut roomrec_api::RecordingJobStatus,
    ctx: &Context,
    all: bool,
) -> Result<()> {
    let Some(trtc) = &job.spec.source.trtc else {
        return Ok(());
    };
    for worker in &mut status.workers {
        let ended = all || worker.state.is_final();
        let Some(running) = worker
            .relay
            .as_mut()
            .filter(|r| r.stopped_at.is_none() && ended)
        else {
            continue;
        };
        let Some(api) = &ctx.trtc else {
            return Err(Error::Relay(format!(
                "relay {} of {} cannot be stopped: the operator has no TRTC API access",
                running.task_id, worker.user_id
            )));
        };
        match relay::stop(api, trtc.sdk_app_id, &running.task_id).await {
            Ok(()) => {
                info!(user = %worker.user_id, task = %running.task_id, "relay stopped");
                ctx.metrics.relays_stopped.inc();
                running.stopped_at = Some(Timestamp::now().to_string());
            }
            Err(e) => {
                ctx.metrics.relay_failures.inc();
                return Err(Error::Relay(format!(
                    "stopping relay {} of {}: {e}",
                    running.task_id, worker.user_id
                )));
            }
        }
    }
    Ok(())
}
