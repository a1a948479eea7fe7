//! The reconcile's reads against the real API server: a worker applies its last status report
//! and then exits, and a decision must never see the pod ended without that report (the cause
//! of the old "the pod ended before its last report" wait). Pods here are bound to a node no
//! agent runs, so the test writes their status itself, as a kubelet would.

mod support {
    pub mod cluster;
    pub mod kubectl;

    pub use self::cluster::*;
}

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use roomrec_api::FileState;
use roomrec_api::crd::RecordingJob;
use roomrec_operator::build::CONTAINER;
use roomrec_operator::fetch::pods_then_job;
use roomrec_operator::person::{PodState, pod_state};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;

const SELECTOR: &str = "roomrec.dev/fetch-test=1";
const WORKERS: usize = 150;

/// The worker's result, as the worker writes it into its termination message.
const RESULT: &str =
    r#"{"status":"succeeded","stopReason":"source-ended","message":"","retryable":true,"parts":1}"#;

fn file(i: usize, status: &str) -> Value {
    json!({"url": format!("https://bucket.example/part{i}.mp4"), "userId": "alice",
           "status": status, "part": i, "pod": format!("worker-{i}")})
}

/// Applies `files` as one worker's field manager would (each worker owns its own entries).
async fn report(jobs: &Api<RecordingJob>, i: usize, status: &str) {
    let patch = json!({"apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
                       "status": {"files": [file(i, status)]}});
    jobs.patch_status(
        "fetched",
        &PatchParams::apply(&format!("roomrec-worker-worker-{i}")).force(),
        &Patch::Apply(patch),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_never_sees_a_worker_ended_without_the_report_it_applied_before() {
    cluster().await;
    let ns = bed().namespace("fetch").await.unwrap();
    let client = bed().client().await.unwrap();
    let jobs: Api<RecordingJob> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let job: RecordingJob = serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
        "metadata": {"name": "fetched"},
        "spec": {"source": {"url": "rtmp://media.example/live/alice"},
                 "storage": {"volume": {"claimName": "recordings"}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();

    // The decision's side: read the job, then fetch as the reconcile does, over and over.
    let writing = Arc::new(AtomicBool::new(true));
    let decider = {
        let (jobs, pods, writing) = (jobs.clone(), pods.clone(), writing.clone());
        tokio::spawn(async move {
            let (mut looks, mut ended_seen) = (0, 0);
            while writing.load(Ordering::Relaxed) {
                let read = jobs.get("fetched").await.unwrap();
                let (job, listed) = pods_then_job(&jobs, &pods, SELECTOR, &read)
                    .await
                    .unwrap()
                    .unwrap();
                looks += 1;
                let files = job.status.map(|s| s.files).unwrap_or_default();
                for pod in &listed {
                    if !matches!(
                        pod_state(pod),
                        PodState::Terminated {
                            result: Some(_),
                            ..
                        }
                    ) {
                        continue;
                    }
                    ended_seen += 1;
                    let name = pod.name_any();
                    let mine = files.iter().find(|f| f.pod.as_deref() == Some(&name));
                    assert!(
                        mine.is_some_and(|f| f.status == FileState::Succeeded),
                        "after {looks} looks: {name} ended but its last report is missing: {mine:?}"
                    );
                }
            }
            (looks, ended_seen)
        })
    };

    // The workers' side, one after another: a pod starts and reports its part recording, then
    // applies its last report, then ends (its termination message written, as kubelet does).
    for i in 0..WORKERS {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("worker-{i}"), "labels": {"roomrec.dev/fetch-test": "1"}},
            "spec": {"nodeName": "no-agent-runs-here",
                     "containers": [{"name": CONTAINER, "image": "roomrec-worker"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        report(&jobs, i, "recording").await;
        report(&jobs, i, "succeeded").await;
        let ended = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
            "name": CONTAINER, "image": "roomrec-worker", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": RESULT,
                                     "finishedAt": "2026-12-07T10:00:00Z"}}}]}});
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(ended),
        )
        .await
        .unwrap();
    }
    writing.store(false, Ordering::Relaxed);
    let (looks, ended_seen) = decider.await.unwrap();
    // The race was run, not skipped: many decisions saw ended workers.
    assert!(
        looks >= 50 && ended_seen >= WORKERS,
        "{looks} looks, {ended_seen} ended pods seen"
    );
}
