//! The control plane goes away mid-recording: kube-apiserver is stopped and started again while
//! a worker records. The operator's watches and the worker's status reports resume, no second
//! worker is started, and the job completes with its files. A bed of its own (restarting the
//! shared one would disturb the other tests).

/// The parts of `tests/support/` these tests use, and those they build on (each file says
/// what it holds).
mod support {
    pub mod cluster;
    pub mod jobs;
    pub mod kubectl;
    pub mod logs;
    pub mod operator_process;
    pub mod s3;
    pub mod scene;
    pub mod stored_files;

    pub use self::{cluster::*, jobs::*, scene::*, stored_files::*};
}

use roomrec_testbed::{BedInfo, TestBed};
use serde_json::json;
use std::time::Duration;
use support::*;

/// Makes every helper use `info` (a bed the test started itself, e.g. to restart its parts).
fn use_bed(info: BedInfo) {
    OWN_BED
        .set(info)
        .expect("use_bed is called once, before any other helper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_an_api_server_restart() {
    let mut testbed = TestBed::start().await.unwrap();
    use_bed(testbed.info.clone());
    let Scene {
        ns,
        op,
        api,
        publisher: _publisher,
    } = scene("apirestart", "through", json!({"maxDurationSeconds": 25})).await;
    wait_recording_bytes(&api, "through", 1.0, &op).await;

    testbed.control_plane.restart_apiserver().await.unwrap();

    let api = jobs(&ns).await;
    let job = ended_as(&api, "through", "Succeeded", Duration::from_secs(120), &op).await;
    let status = job.status.clone().unwrap();
    assert_eq!(status.attempts, Some(1), "{}", status_json(&job));
    assert_eq!(worker_pods(&ns, &job).await.len(), 1);
    let total = assert_files_play(&job, &["h264", "aac"]);
    assert!((total - 25.0).abs() < 1.5, "recorded {total} s of 25");
    drop(op);
    drop(testbed);
}
