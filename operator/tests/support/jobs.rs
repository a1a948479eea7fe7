//! RecordingJobs as the tests watch them: waiting for a phase (with the job, the operator's log
//! and the workers' logs when it does not come) or for a file that grows, their status, files
//! and worker pods.

use super::cluster::bed;
use super::logs::{OperatorLog, worker_logs};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use roomrec_api::crd::RecordingJob;
use roomrec_testbed::wait_until;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub async fn jobs(namespace: &str) -> Api<RecordingJob> {
    Api::namespaced(bed().client().await.unwrap(), namespace)
}

/// Waits until the job's phase is one of `phases`; panics with the job and operator log.
pub async fn wait_phase(
    api: &Api<RecordingJob>,
    name: &str,
    phases: &[&str],
    timeout: Duration,
    op: &impl OperatorLog,
) -> RecordingJob {
    let found = Arc::new(Mutex::new(None));
    let result = wait_until(timeout, || {
        let found = found.clone();
        async move {
            let Ok(job) = api.get(name).await else {
                return false;
            };
            let phase = job
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map(|p| p.as_str())
                .unwrap_or("");
            let done = phases.contains(&phase);
            *found.lock().unwrap() = Some(job);
            done
        }
    })
    .await;
    let job = found.lock().unwrap().clone();
    if result.is_err() {
        panic!(
            "job {name} did not reach {phases:?} in {timeout:?}: {}\n--- operator log ---\n{}\n{}",
            serde_json::to_string_pretty(&job.as_ref().map(|j| j.status.clone())).unwrap(),
            op.log_text(),
            worker_logs(
                job.as_ref()
                    .and_then(|j| j.metadata.namespace.as_deref())
                    .unwrap_or("-")
            )
        );
    }
    job.unwrap()
}

/// Waits until the job has ended and asserts it ended as `phase`.
pub async fn ended_as(
    api: &Api<RecordingJob>,
    name: &str,
    phase: &str,
    timeout: Duration,
    op: &impl OperatorLog,
) -> RecordingJob {
    let job = wait_phase(api, name, &["Succeeded", "Failed", "Stopped"], timeout, op).await;
    let ended = job
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| p.as_str());
    assert_eq!(ended, Some(phase), "{}", status_json(&job));
    job
}

pub fn status_json(job: &RecordingJob) -> Value {
    serde_json::to_value(&job.status).unwrap()
}

// Every binary but observability.rs, which reads no file list.
#[allow(dead_code)]
pub fn files(job: &RecordingJob) -> Vec<roomrec_api::crd::FileStatus> {
    job.status.clone().unwrap_or_default().files
}

/// Worker pods of a job (by its uid label).
// Used by apiserver_restart.rs, e2e.rs, observability.rs and trtc_relay.rs.
#[allow(dead_code)]
pub async fn worker_pods(namespace: &str, job: &RecordingJob) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(bed().client().await.unwrap(), namespace);
    pods.list(
        &kube::api::ListParams::default()
            .labels(&format!("roomrec.dev/job-uid={}", job.uid().unwrap())),
    )
    .await
    .unwrap()
    .items
}

/// Waits until the job's status lists a `recording` file with bytes and at least
/// `min_seconds` of media; returns the job as it was then.
// Used by apiserver_restart.rs, e2e.rs, images.rs and trtc_relay.rs.
#[allow(dead_code)]
pub async fn wait_recording_bytes(
    api: &Api<RecordingJob>,
    name: &str,
    min_seconds: f64,
    op: &impl OperatorLog,
) -> RecordingJob {
    let last = std::sync::Mutex::new(None);
    let ok = wait_until(Duration::from_secs(60), || async {
        let Ok(job) = api.get(name).await else {
            return false;
        };
        let recording = files(&job).iter().any(|f| {
            f.status.as_str() == "recording" && f.bytes > 0 && f.duration_seconds >= min_seconds
        });
        *last.lock().unwrap() = Some(job);
        recording
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(
        ok.is_ok(),
        "no growing file in the status: {}\n{}",
        serde_json::to_string(&last.map(|j| j.status)).unwrap(),
        op.log_text()
    );
    last.unwrap()
}

/// Waits until the job is held before it starts: condition `Valid=False` with `reason` and a
/// message holding each of `fragments`; then asserts it is `Pending` with no worker pod.
// Used by e2e.rs.
#[allow(dead_code)]
pub async fn wait_held(
    api: &Api<RecordingJob>,
    name: &str,
    reason: &str,
    fragments: &[&str],
    op: &impl OperatorLog,
) -> RecordingJob {
    let last = Mutex::new(None);
    let held = wait_until(Duration::from_secs(30), || async {
        let Ok(job) = api.get(name).await else {
            return false;
        };
        let valid = job
            .status
            .clone()
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Valid");
        *last.lock().unwrap() = Some(job);
        valid.is_some_and(|c| {
            c.status == "False"
                && c.reason == reason
                && fragments.iter().all(|f| c.message.contains(f))
        })
    })
    .await;
    let job = last.into_inner().unwrap();
    assert!(
        held.is_ok(),
        "expected {name} held with {reason} {fragments:?}: {:?}\n{}",
        job.as_ref().map(|j| &j.status),
        op.log_text()
    );
    let job = job.unwrap();
    assert_eq!(
        job.status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| p.as_str()),
        Some("Pending")
    );
    let ns = job.namespace().unwrap();
    assert!(
        worker_pods(&ns, &job).await.is_empty(),
        "a held job started a worker"
    );
    job
}
