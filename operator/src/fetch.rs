//! Fetch: what a decision reads, in an order that cannot miss a worker's last report.
//!
//! A worker applies its last status report and only then exits, so the API server records the
//! report before the pod's end. A job read *before* the pods were listed may predate that
//! report while the list already shows the pod ended; deciding from that pair judges the worker
//! without its last report (its files missing or still `recording`). So when a listed pod has
//! ended while the job does not show its files closed, the job is read once more: that read
//! follows the pod's end, and so the report. (Reads without a resourceVersion are quorum reads:
//! they see every write that completed before them.)

use crate::person::{PodState, pod_state};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use roomrec_api::FileState;
use roomrec_api::crd::RecordingJob;

/// The job's pods (by `selector`), then the job as it is after them: `job` itself, or read
/// again when a pod ended after it was read. None: the job is gone.
pub async fn pods_then_job(
    jobs: &Api<RecordingJob>,
    pods: &Api<Pod>,
    selector: &str,
    job: &RecordingJob,
) -> Result<Option<(RecordingJob, Vec<Pod>)>, kube::Error> {
    let listed = pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items;
    if !ended_before_its_report(job, &listed) {
        return Ok(Some((job.clone(), listed)));
    }
    Ok(jobs
        .get_opt(&job.name_any())
        .await?
        .filter(|fresh| fresh.uid() == job.uid())
        .map(|fresh| (fresh, listed)))
}

/// A pod that wrote its result (so it ended on its own terms, after its last report) while the
/// job shows fewer of its files than the result counts, or one of them still `recording`.
pub fn ended_before_its_report(job: &RecordingJob, pods: &[Pod]) -> bool {
    let files = job.status.as_ref().map(|s| &s.files[..]).unwrap_or(&[]);
    pods.iter().any(|pod| {
        let PodState::Terminated {
            result: Some(result),
            ..
        } = pod_state(pod)
        else {
            return false;
        };
        let name = pod.name_any();
        let mine: Vec<_> = files
            .iter()
            .filter(|f| f.pod.as_deref() == Some(name.as_str()))
            .collect();
        mine.len() < result.parts || mine.iter().any(|f| f.status == FileState::Recording)
    })
}
