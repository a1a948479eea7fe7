//! A recording in progress: a namespace with the bed's S3 keys, an operator for it, a live
//! stream and a RecordingJob recording it.

use super::cluster::{bed, cluster, publish};
use super::jobs::jobs;
use super::operator_process::Operator;
use super::s3::{s3_secret, url_job};
use kube::api::{Api, PostParams};
use roomrec_api::crd::RecordingJob;
use roomrec_testbed::media::Publisher;
use serde_json::Value;

/// A namespace with the bed's S3 keys, an operator for it, a live stream, and a RecordingJob
/// `name` recording that stream into the bucket (spec fields in `extra`).
pub struct Scene {
    // Read by apiserver_restart.rs and e2e.rs; images.rs needs only the job and the operator.
    #[allow(dead_code)]
    pub ns: String,
    pub op: Operator,
    pub api: Api<RecordingJob>,
    // Held so the stream lives as long as the scene; images.rs never takes it out.
    #[allow(dead_code)]
    pub publisher: Publisher,
}

pub async fn scene(prefix: &str, name: &str, extra: Value) -> Scene {
    scene_with(prefix, name, extra, |_| {}).await
}

/// As `scene`, with a last change to the job before it is created.
pub async fn scene_with(
    prefix: &str,
    name: &str,
    extra: Value,
    edit: impl FnOnce(&mut RecordingJob),
) -> Scene {
    cluster().await;
    let ns = bed().namespace(prefix).await.unwrap();
    s3_secret(&ns).await;
    let op = Operator::start(&ns, &[]).await;
    let key = format!("{prefix}-{ns}");
    let publisher = publish(&key, None).await;
    let api = jobs(&ns).await;
    let mut job = url_job(name, &bed().rtmp_url(&key), extra);
    edit(&mut job);
    api.create(&PostParams::default(), &job).await.unwrap();
    Scene {
        ns,
        op,
        api,
        publisher,
    }
}
