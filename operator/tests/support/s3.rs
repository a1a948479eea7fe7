//! Jobs that record into the bed's S3 bucket: the Secret with its keys, and a RecordingJob of
//! a URL source whose storage is that bucket.

use super::cluster::bed;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use roomrec_api::crd::RecordingJob;
use serde_json::{Value, json};

/// The Secret `s3-keys` in `namespace`, with the bed's S3 keys.
pub async fn s3_secret(namespace: &str) {
    let secrets: Api<Secret> = Api::namespaced(bed().client().await.unwrap(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-keys"},
        "stringData": {"accessKeyId": bed().s3_access_key, "secretAccessKey": bed().s3_secret_key},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A RecordingJob `name` recording `source` as AudioVideoMp4 into the bed's bucket (keys in
/// the Secret `s3-keys`), spec fields in `extra` added or replaced.
// Used by observability.rs, e2e.rs, and through `scene` by apiserver_restart.rs and images.rs;
// chart.rs's job takes everything from the chart's defaults.
#[allow(dead_code)]
pub fn url_job(name: &str, source: &str, extra: Value) -> RecordingJob {
    let mut spec = json!({
        "source": {"url": source},
        "mode": "AudioVideoMp4",
        "storage": {"s3": {
            "endpoint": bed().s3_endpoint,
            "bucket": bed().s3_bucket,
            "region": bed().s3_region,
            "path": format!("e2e/{name}"),
            "credentialsSecret": "s3-keys",
        }},
        "idleTimeoutSeconds": 30,
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1",
        "kind": "RecordingJob",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// The S3 storage of a job made by `url_job`, to edit before it is created.
// Used by e2e.rs and observability.rs.
#[allow(dead_code)]
pub fn s3_of(job: &mut RecordingJob) -> &mut roomrec_api::crd::S3Storage {
    job.spec
        .storage
        .as_mut()
        .and_then(|s| s.s3.as_mut())
        .expect("a url_job has S3 storage")
}
