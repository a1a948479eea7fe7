//! The COS stand-in for the examples' bucket: a test double (Tencent COS cannot run here) that
//! checks every request's COS signature against the examples' key pair (or a test's own) and
//! stores into the bed's S3 server.

use super::cluster::bed;
use roomrec_testbed::cos::{CosStandIn, CosStandInConfig};

/// The examples' bucket (`class-1250000000`) behind a COS stand-in, and the stand-in's port
/// (workers reach `class-1250000000.localhost` there through `ROOMREC_RESOLVE`).
pub async fn examples_cos() -> (CosStandIn, String) {
    cos_with_keys("AKIDEXAMPLEEXAMPLEEXAMPLE", "example-secret-key").await
}

/// As `examples_cos`, accepting only the keys `secret_id` and `secret_key`.
pub async fn cos_with_keys(secret_id: &str, secret_key: &str) -> (CosStandIn, String) {
    let buckets = bed().s3_bucket_dir.parent().unwrap();
    std::fs::create_dir_all(buckets.join("class-1250000000")).unwrap();
    let cos = CosStandIn::start(CosStandInConfig {
        secret_id: secret_id.into(),
        secret_key: secret_key.into(),
        upstream_endpoint: bed().s3_endpoint.clone(),
        upstream_access_key: bed().s3_access_key.clone(),
        upstream_secret_key: bed().s3_secret_key.clone(),
        upstream_region: bed().s3_region.clone(),
        require_signed_host: false,
    })
    .await
    .unwrap();
    let port = cos.endpoint().rsplit(':').next().unwrap().to_string();
    (cos, port)
}
