//! The operator's own configuration (flags of `roomrec-operator`), shared by the build and the
//! controller.

use crate::defaults::JobDefaults;
use k8s_openapi::api::core::v1::ResourceRequirements;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    /// The worker image when a job does not name one.
    pub worker_image: String,
    /// Worker resources when a job does not set them.
    pub worker_resources: Option<ResourceRequirements>,
    /// Image pull Secrets of every worker pod.
    pub worker_image_pull_secrets: Vec<String>,
    /// Extra environment for every worker (e.g. ROOMREC_RESOLVE or ROOMREC_LOG).
    pub worker_env: Vec<(String, String)>,
    /// The worker pods' termination grace period; the worker gets 10 s less to close its files.
    pub worker_grace: Duration,
    /// The scratch volume (emptyDir) that holds checkpoints while the store is unreachable.
    pub spool_limit: String,
    /// Port of each worker's /metrics (containerPort `metrics`); 0: no metrics endpoint.
    pub worker_metrics_port: u16,
    /// Worker pods per recorded person before the job fails.
    pub max_attempts: u32,
    /// Wait before the n-th replacement: 0 for the first, then this, doubling, at most 5 min.
    pub retry_backoff: Duration,
    pub callback: CallbackSettings,
    /// How long deletion waits for workers to close their files.
    pub finalize_timeout: Duration,
    /// Filled into jobs that leave mode, idle timeout or storage out.
    pub defaults: JobDefaults,
}

#[derive(Clone, Debug)]
pub struct CallbackSettings {
    pub max_attempts: u32,
    /// Wait after the first failure, doubling, at most 5 min.
    pub backoff: Duration,
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            worker_image: "ghcr.io/roomrec/roomrec-worker:latest".into(),
            worker_resources: None,
            worker_image_pull_secrets: Vec::new(),
            worker_env: Vec::new(),
            worker_grace: Duration::from_secs(40),
            spool_limit: "2Gi".into(),
            worker_metrics_port: 9090,
            max_attempts: 10,
            retry_backoff: Duration::from_secs(5),
            callback: CallbackSettings::default(),
            finalize_timeout: Duration::from_secs(120),
            defaults: JobDefaults::default(),
        }
    }
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `base × 2^(n-1)`, at most five minutes.
pub fn backoff(base: Duration, n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(300))
}
