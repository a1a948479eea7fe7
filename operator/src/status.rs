//! Status: the operator's part of a RecordingJob's status, written by server-side apply with the
//! operator's own field manager (the workers own `status.files`).

use crate::build;
use crate::error::{Error, Result};
use crate::phase;
use crate::progress;
use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use roomrec_api::crd::{Phase, RecordingJob, RecordingJobStatus};
use serde_json::json;

pub const FIELD_MANAGER: &str = "roomrec-operator";

/// A job that cannot start: Pending, with `Valid=False` naming the problem.
pub fn invalid(job: &RecordingJob, reason: &str, problem: &str) -> RecordingJobStatus {
    let old = job.status.clone().unwrap_or_default();
    let mut conditions: Vec<_> = old
        .conditions
        .iter()
        .filter(|c| c.type_ != "Valid")
        .cloned()
        .collect();
    conditions.push(phase::condition(
        &old,
        "Valid",
        false,
        reason,
        problem.into(),
        Timestamp::now(),
    ));
    RecordingJobStatus {
        phase: Some(Phase::Pending),
        mode: job.spec.mode,
        observed_generation: job.metadata.generation,
        conditions,
        users: Some(progress::users(&build::people(job))),
        ..Default::default()
    }
}

/// The status without the workers' `files` and the room events' `room`, as the reconcile
/// writes it (those have writers of their own).
pub fn same(old: &RecordingJobStatus, new: &RecordingJobStatus) -> bool {
    let mut old = old.clone();
    old.files.clear();
    old.room = None;
    &old == new
}

pub async fn write(
    jobs: &Api<RecordingJob>,
    name: &str,
    status: &RecordingJobStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": format!("{}/{}", roomrec_api::GROUP, roomrec_api::VERSION),
        "kind": roomrec_api::KIND,
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
