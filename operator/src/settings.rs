//! The operator's own configuration (flags of `roomrec-operator`), shared by the build and the
//! controller.

use crate::defaults::JobDefaults;
use k8s_openapi::api::core::v1::ResourceRequirements;
use std::time::Duration;

// The operator's own defaults, shared by its flags and `Settings::default()`.
pub const WORKER_IMAGE: &str = "ghcr.io/roomrec/roomrec-worker:latest";
pub const WORKER_GRACE_SECONDS: u64 = 40;
pub const WORKER_METRICS_PORT: u16 = 9090;
pub const MAX_ATTEMPTS: u32 = 10;
pub const RETRY_BACKOFF_SECONDS: f64 = 5.0;
pub const SPOOL_LIMIT: &str = "2Gi";
pub const CALLBACK_MAX_ATTEMPTS: u32 = 10;
pub const CALLBACK_BACKOFF_SECONDS: f64 = 2.0;
pub const FINALIZE_TIMEOUT_SECONDS: u64 = 120;
/// People a wholeRoom job records at most unless it says (TRTC's own cloud recording: 25
/// anchors per task).
pub const MAX_PEOPLE_PER_JOB: u32 = 25;

#[derive(Clone, Debug)]
pub struct Settings {
    /// The worker image when a job does not name one.
    pub worker_image: String,
    /// Which of a job's `spec.worker` image and ServiceAccount the operator honours.
    pub worker_overrides: WorkerOverridePolicy,
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
    /// Seconds between a worker's progress reports while a part is open (chart
    /// worker.progressIntervalSeconds).
    pub worker_report_interval_seconds: u64,
    /// Worker pods per recorded person before the job fails.
    pub max_attempts: u32,
    /// Wait before the n-th replacement: 0 for the first, then this, doubling, at most 5 min.
    pub retry_backoff: Duration,
    pub callback: CallbackSettings,
    /// How long deletion waits for workers to close their files.
    pub finalize_timeout: Duration,
    /// Filled into jobs that leave mode, idle timeout or storage out.
    pub defaults: JobDefaults,
    /// Access to the TRTC server API, for relays roomrec starts; None: `relay: start` jobs are
    /// refused with the fix.
    pub trtc_api: Option<crate::trtc_api::TrtcApiConfig>,
    /// The operator serves TRTC's room events: jobs may start on publish (wholeRoom,
    /// startOn: publish).
    pub room_events: bool,
    /// People a wholeRoom job records at most when it does not say (wholeRoom.maxPeople).
    pub max_people_per_job: u32,
}

/// The chart's `worker.overrides`: a job may choose its workers' image or ServiceAccount only
/// where these allow it, since either lets whoever creates the job decide what runs in the
/// namespace, or as whom.
#[derive(Clone, Debug, Default)]
pub struct WorkerOverridePolicy {
    /// Images `spec.worker.image` may name besides the operator's own: exact references, or
    /// prefixes ending in `*`. Empty: none.
    pub allowed_images: Vec<String>,
    /// `spec.worker.serviceAccountName` is honoured.
    pub allow_service_account: bool,
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
            worker_image: WORKER_IMAGE.into(),
            worker_overrides: WorkerOverridePolicy::default(),
            worker_resources: None,
            worker_image_pull_secrets: Vec::new(),
            worker_env: Vec::new(),
            worker_grace: Duration::from_secs(WORKER_GRACE_SECONDS),
            spool_limit: SPOOL_LIMIT.into(),
            worker_metrics_port: WORKER_METRICS_PORT,
            worker_report_interval_seconds: roomrec_api::defaults::PROGRESS_INTERVAL_SECONDS,
            max_attempts: MAX_ATTEMPTS,
            retry_backoff: Duration::from_secs_f64(RETRY_BACKOFF_SECONDS),
            callback: CallbackSettings::default(),
            finalize_timeout: Duration::from_secs(FINALIZE_TIMEOUT_SECONDS),
            defaults: JobDefaults::default(),
            trtc_api: None,
            room_events: false,
            max_people_per_job: MAX_PEOPLE_PER_JOB,
        }
    }
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            max_attempts: CALLBACK_MAX_ATTEMPTS,
            backoff: Duration::from_secs_f64(CALLBACK_BACKOFF_SECONDS),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `base × 2^(n-1)`, at most five minutes.
pub fn backoff(base: Duration, n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(300))
}
