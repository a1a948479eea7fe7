//! The reconcile loop: fetch → validate → build (progress::plan, pure) → apply → status, then
//! the callback. Everything it creates is owned by the job; the finalizer only makes deletion
//! wait until the workers have closed their files (and the callback had its chance).

use crate::callback;
use crate::crd::{CallbackStatus, Phase, RecordingJob, RecordingJobStatus};
use crate::defaults::Defaulting;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::progress;
use crate::settings::{Settings, backoff};
use crate::worker;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, info, warn};

pub const FIELD_MANAGER: &str = "roomrec-operator";
pub const FINALIZER: &str = "roomrec.dev/finalize";

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    /// Consecutive failures per job uid, for a backoff that grows per object.
    failures: Mutex<HashMap<String, u32>>,
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
        Self {
            client,
            settings,
            metrics,
            recorder,
            http: reqwest::Client::new(),
            failures: Mutex::default(),
        }
    }

    async fn event(&self, job: &RecordingJob, warning: bool, reason: &str, note: String) {
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
    // The watch cache can lag behind our own last status write; deciding from it could undo
    // that write (or count attempts twice). One read of the current object is cheap.
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
        let patch = json!({"metadata": {"finalizers": [FINALIZER]}});
        jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Apply {
                what: format!("the finalizer of {name}"),
                source,
            })?;
        return Ok(Action::await_change());
    }

    let old = job.status.clone().unwrap_or_default();
    let terminal = old.phase.is_some_and(Phase::is_terminal);
    if !terminal && old.attempts.unwrap_or(0) == 0 && !deleting {
        match ctx.settings.defaults.apply_to(&job.spec) {
            Defaulting::Complete => {}
            Defaulting::Patch(patch) => {
                fill_defaults(&jobs, job, patch, ctx).await?;
                return Ok(Action::await_change());
            }
            Defaulting::Impossible(problem) => {
                let status = invalid_status(job, &problem);
                if Some(&status) != job.status.as_ref() {
                    ctx.event(job, true, "InvalidSpec", problem).await;
                    write_status(&jobs, &name, &status).await?;
                }
                ctx.metrics.observe(job, Some((Phase::Pending, 0)));
                return Ok(Action::await_change());
            }
        }
        // Validate what the schema cannot: referenced Secrets exist with their keys.
        if let Err(problem) = check_references(job, ctx).await? {
            let status = invalid_status(job, &problem);
            if Some(&status) != job.status.as_ref() {
                ctx.event(job, true, "InvalidReference", problem).await;
                write_status(&jobs, &name, &status).await?;
            }
            ctx.metrics.observe(job, Some((Phase::Pending, 0)));
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    }

    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&worker::selector(job)))
        .await
        .map_err(Error::Read)?
        .items;
    let now = Timestamp::now();
    let plan = progress::plan(job, &pods, &ctx.settings, now);
    tracing::debug!(
        pods = ?pods.iter().map(|p| (p.name_any(), progress::pod_state(p))).collect::<Vec<_>>(),
        files = ?job.status.iter().flat_map(|s| &s.files).map(|f| (f.part, f.status.as_str())).collect::<Vec<_>>(),
        phase = ?plan.status.phase,
        create = plan.create.len(),
        delete = plan.delete.len(),
        "plan"
    );

    if !plan.create.is_empty() {
        apply_worker_rbac(job, ctx).await?;
    }
    for (person, attempt, resume) in &plan.create {
        let pod = worker::pod(job, person, *attempt, resume, &ctx.settings);
        let pod_name = pod.name_any();
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => info!(pod = %pod_name, user = %person.user_id, attempt, "worker started"),
            // Created by an earlier pass whose status write did not land: it is ours.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                return Err(Error::Apply {
                    what: format!("worker pod {pod_name}"),
                    source,
                });
            }
        }
    }
    for pod_name in &plan.delete {
        info!(pod = %pod_name, "stopping worker");
        match pods_api.delete(pod_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Delete {
                    what: format!("worker pod {pod_name}"),
                    source,
                });
            }
        }
    }
    for (warning, reason, note) in &plan.events {
        ctx.event(job, *warning, reason, note.clone()).await;
    }
    if old.started_at.is_none() && plan.status.started_at.is_some() {
        ctx.metrics.jobs_started.inc();
        ctx.event(
            job,
            false,
            "Started",
            format!(
                "recording {}",
                plan.status.users.clone().unwrap_or_default()
            ),
        )
        .await;
    }
    ctx.metrics
        .worker_restarts
        .inc_by(u64::from(plan.replacements));

    let mut status = plan.status;
    let phase = status.phase.unwrap_or(Phase::Pending);
    let became_terminal = phase.is_terminal() && !terminal;
    if became_terminal {
        ctx.metrics
            .jobs_finished
            .with_label_values(&[phase.as_str()])
            .inc();
        let stored = old.files.iter().filter(|f| f.status == "succeeded");
        ctx.metrics
            .recorded_bytes
            .inc_by(stored.clone().map(|f| f.bytes).sum());
        ctx.metrics
            .recorded_seconds
            .inc_by(stored.map(|f| f.duration_seconds).sum());
    }
    let running = status
        .workers
        .iter()
        .filter(|w| w.state == "Recording")
        .count() as i64;
    ctx.metrics.observe(job, Some((phase, running)));

    // The callback, once the job has ended.
    let mut requeue = plan.requeue_after;
    if phase.is_terminal() && job.spec.callback.is_some() {
        let mut ended = job.clone();
        let mut merged = status.clone();
        merged.files = old.files.clone();
        ended.status = Some(merged);
        if let Some(next) = callback_step(&ended, &mut status, ctx, now, deleting).await {
            requeue = Some(requeue.map_or(next, |r| r.min(next)));
        }
    }
    if !same_status(&old, &status) {
        write_status(&jobs, &name, &status).await?;
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
            remove_finalizer(&jobs, job).await?;
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

/// Delivers the callback when it is due; returns when to try again.
async fn callback_step(
    ended: &RecordingJob,
    status: &mut RecordingJobStatus,
    ctx: &Context,
    now: Timestamp,
    deleting: bool,
) -> Option<Duration> {
    let settings = &ctx.settings.callback;
    let mut state = status.callback.clone().unwrap_or_default();
    if state.delivered_at.is_some() || state.gave_up {
        return None;
    }
    if let Some(last) = state
        .last_attempt_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
    {
        let due = backoff(settings.backoff, state.attempts);
        let since = now.duration_since(last).unsigned_abs();
        // A job being deleted gets one more try now: there is no later.
        if since < due && !deleting {
            return Some(due - since);
        }
    }
    let phase = status.phase.unwrap_or(Phase::Failed);
    let key = match signing_key(ended, ctx).await {
        Ok(key) => key,
        Err(problem) => {
            state.attempts += 1;
            state.last_attempt_at = Some(now.to_string());
            state.last_error = Some(problem.clone());
            ctx.metrics.callback_failures.inc();
            ctx.event(ended, true, "CallbackFailed", problem).await;
            state.gave_up = state.attempts >= settings.max_attempts;
            status.callback = Some(state.clone());
            return (!state.gave_up).then(|| backoff(settings.backoff, state.attempts));
        }
    };
    let result = callback::deliver(&ctx.http, ended, phase, key.as_deref(), settings.timeout).await;
    state.attempts += 1;
    state.last_attempt_at = Some(Timestamp::now().to_string());
    let next = match result {
        Ok(()) => {
            ctx.metrics.callback_deliveries.inc();
            state.delivered_at = Some(Timestamp::now().to_string());
            state.last_error = None;
            ctx.event(
                ended,
                false,
                "CallbackDelivered",
                format!("after {} attempt(s)", state.attempts),
            )
            .await;
            None
        }
        Err(problem) => {
            ctx.metrics.callback_failures.inc();
            state.gave_up = state.attempts >= settings.max_attempts;
            let note = if state.gave_up {
                format!("gave up after {} attempts: {problem}", state.attempts)
            } else {
                problem.clone()
            };
            ctx.event(ended, true, "CallbackFailed", note).await;
            state.last_error = Some(problem);
            (!state.gave_up).then(|| backoff(settings.backoff, state.attempts))
        }
    };
    status.callback = Some(CallbackStatus { ..state });
    next
}

async fn signing_key(job: &RecordingJob, ctx: &Context) -> Result<Option<Vec<u8>>, String> {
    let Some(reference) = job
        .spec
        .callback
        .as_ref()
        .and_then(|c| c.signing_secret.clone())
    else {
        return Ok(None);
    };
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let secret = secrets
        .get_opt(&reference.name)
        .await
        .map_err(|e| format!("reading Secret {} failed: {e}", reference.name))?
        .ok_or_else(|| {
            format!(
                "Secret {} (spec.callback.signingSecret) not found: create it with key {}",
                reference.name, reference.key
            )
        })?;
    secret
        .data
        .and_then(|d| d.get(&reference.key).map(|v| v.0.clone()))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "Secret {} (spec.callback.signingSecret) has no key {}",
                reference.name, reference.key
            )
        })
}

/// Every Secret the job names must exist with the keys the worker or the callback reads.
/// Ok(Err(problem)) names the field and the fix.
async fn check_references(job: &RecordingJob, ctx: &Context) -> Result<Result<(), String>> {
    let ns = job.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut wanted: Vec<(String, String, Vec<Vec<&str>>)> = Vec::new();
    let storage = job.spec.storage.clone().unwrap_or_default();
    if let Some(name) = storage
        .cos
        .as_ref()
        .and_then(|c| c.credentials_secret.clone())
    {
        wanted.push((
            "spec.storage.cos.credentialsSecret".into(),
            name,
            vec![
                vec!["secretId", "secretKey"],
                vec!["accessKeyId", "secretAccessKey"],
            ],
        ));
    }
    if let Some(name) = storage
        .s3
        .as_ref()
        .and_then(|c| c.credentials_secret.clone())
    {
        wanted.push((
            "spec.storage.s3.credentialsSecret".into(),
            name,
            vec![
                vec!["accessKeyId", "secretAccessKey"],
                vec!["secretId", "secretKey"],
            ],
        ));
    }
    let mut keyed: Vec<(&str, Option<&crate::crd::SecretKeyRef>)> = vec![(
        "spec.callback.signingSecret",
        job.spec
            .callback
            .as_ref()
            .and_then(|c| c.signing_secret.as_ref()),
    )];
    if let Some(trtc) = &job.spec.source.trtc {
        keyed.push((
            "spec.source.trtc.userSigSecret",
            trtc.user_sig_secret.as_ref(),
        ));
        keyed.push((
            "spec.source.trtc.secretKeySecret",
            trtc.secret_key_secret.as_ref(),
        ));
    }
    for (field, reference) in keyed {
        if let Some(r) = reference {
            wanted.push((field.into(), r.name.clone(), vec![vec![r.key.as_str()]]));
        }
    }
    for (field, name, key_sets) in wanted {
        let Some(secret) = secrets.get_opt(&name).await.map_err(Error::Read)? else {
            return Ok(Err(format!(
                "Secret {name} ({field}) not found in namespace {ns}: create it with key(s) {}",
                key_sets[0].join(" and ")
            )));
        };
        let data = secret.data.unwrap_or_default();
        if !key_sets
            .iter()
            .any(|keys| keys.iter().all(|k| data.contains_key(*k)))
        {
            return Ok(Err(format!(
                "Secret {name} ({field}) lacks key(s) {}: add them",
                key_sets[0].join(" and ")
            )));
        }
    }
    Ok(Ok(()))
}

fn invalid_status(job: &RecordingJob, problem: &str) -> RecordingJobStatus {
    let old = job.status.clone().unwrap_or_default();
    let mut conditions: Vec<_> = old
        .conditions
        .iter()
        .filter(|c| c.type_ != "Valid")
        .cloned()
        .collect();
    conditions.push(progress::condition(
        &old,
        "Valid",
        false,
        "InvalidReference",
        problem.into(),
        Timestamp::now(),
    ));
    RecordingJobStatus {
        phase: Some(Phase::Pending),
        observed_generation: job.metadata.generation,
        conditions,
        users: Some(
            worker::people(job)
                .iter()
                .map(|p| p.user_id.clone())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ..Default::default()
    }
}

/// The status without the workers' `files`, as the operator writes it.
fn same_status(old: &RecordingJobStatus, new: &RecordingJobStatus) -> bool {
    let mut old = old.clone();
    old.files.clear();
    &old == new
}

async fn write_status(
    jobs: &Api<RecordingJob>,
    name: &str,
    status: &RecordingJobStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": "roomrec.dev/v1alpha1",
        "kind": "RecordingJob",
        "status": status,
    });
    jobs.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

/// Writes the operator's defaults into the spec (a merge patch, compare-and-swap on the
/// resourceVersion so a concurrent user edit is never overwritten).
async fn fill_defaults(
    jobs: &Api<RecordingJob>,
    job: &RecordingJob,
    mut patch: serde_json::Value,
    ctx: &Context,
) -> Result<()> {
    let name = job.name_any();
    let filled: Vec<String> = patch["spec"]
        .as_object()
        .map(|spec| spec.keys().map(|k| format!("spec.{k}")).collect())
        .unwrap_or_default();
    patch["metadata"] = json!({ "resourceVersion": job.resource_version() });
    match jobs
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            let note = format!(
                "filled in the operator's defaults for {}",
                filled.join(", ")
            );
            ctx.event(job, false, "Defaulted", note).await;
            Ok(())
        }
        // Changed meanwhile: the next reconcile sees the new version.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Apply {
            what: format!("the defaults of {name}"),
            source,
        }),
    }
}

async fn remove_finalizer(jobs: &Api<RecordingJob>, job: &RecordingJob) -> Result<()> {
    let kept: Vec<&String> = job
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    // The resourceVersion makes this a compare-and-swap: other finalizers added meanwhile survive.
    let patch = json!({"metadata": {
        "finalizers": kept,
        "resourceVersion": job.resource_version(),
    }});
    match jobs
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Finalizer(e.to_string())),
    }
}

/// The worker's ServiceAccount (unless the job brings one), and a Role + RoleBinding that let
/// it patch this job's status and nothing else.
async fn apply_worker_rbac(job: &RecordingJob, ctx: &Context) -> Result<()> {
    let ns = job.namespace().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Some(sa) = worker::service_account(job) {
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(ctx.client.clone(), &ns);
        apply(&api, &sa, &params).await?;
    }
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(ctx.client.clone(), &ns);
    apply(&roles, &worker::role(job), &params).await?;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(ctx.client.clone(), &ns);
    apply(&bindings, &worker::role_binding(job), &params).await?;
    Ok(())
}

async fn apply<K>(api: &Api<K>, object: &K, params: &PatchParams) -> Result<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut value = serde_json::to_value(object).expect("objects serialize");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, params, &Patch::Apply(&value))
        .await
        .map_err(|source| Error::Apply {
            what: format!("{} {name}", K::kind(&())),
            source,
        })?;
    Ok(())
}
