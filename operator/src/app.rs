//! The operator process: flags, the metrics/health server, leader election, the controller, and
//! a clean shutdown on SIGTERM/SIGINT (in-flight reconciles finish, the lease is released).

use crate::controller::{self, Context};
use crate::defaults::{self, JobDefaults};
use crate::http::{self, Probes};
use crate::lease::LeaseLock;
use crate::metrics::Metrics;
use crate::settings::{self, CallbackSettings, Settings, WorkerOverridePolicy};
use crate::trtc_api::{TrtcApiConfig, TrtcClient};
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{Api, Client};
use roomrec_api::crd::{Mode, Storage};
use roomrec_api::defaults as job_defaults;
use roomrec_api::trtc::tc3::Secret;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{error, info, warn};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "roomrec-operator",
    version,
    about = "Runs RecordingJobs (roomrec.dev/v1alpha1): one worker pod per recorded person, status, callbacks."
)]
pub struct Options {
    /// Worker image for jobs that do not name one.
    #[arg(
        long,
        env = "ROOMREC_WORKER_IMAGE",
        default_value = settings::WORKER_IMAGE
    )]
    pub worker_image: String,
    /// Images a job's spec.worker.image may name besides --worker-image, comma-separated:
    /// exact references or prefixes ending in * (registry.example.com/roomrec/*). Unset: none.
    #[arg(long, env = "ROOMREC_ALLOWED_WORKER_IMAGES", value_delimiter = ',')]
    pub allowed_worker_images: Vec<String>,
    /// Honour a job's spec.worker.serviceAccountName (off: such jobs are refused).
    #[arg(long, env = "ROOMREC_ALLOW_WORKER_SERVICE_ACCOUNT")]
    pub allow_worker_service_account: bool,
    /// Extra environment for every worker, KEY=VALUE (repeatable; e.g. ROOMREC_LOG=debug).
    #[arg(long = "worker-env", value_parser = parse_key_value)]
    pub worker_env: Vec<(String, String)>,
    /// Image pull Secrets of worker pods, comma-separated (each must exist in the jobs'
    /// namespaces).
    #[arg(long, env = "ROOMREC_WORKER_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub worker_image_pull_secrets: Vec<String>,
    /// Worker pods' termination grace period; workers get 10 s less to close their files.
    #[arg(long, env = "ROOMREC_WORKER_GRACE_SECONDS", default_value_t = settings::WORKER_GRACE_SECONDS)]
    pub worker_grace_seconds: u64,
    /// Port of each worker pod's /metrics (containerPort `metrics`); 0: no metrics endpoint.
    #[arg(long, env = "ROOMREC_WORKER_METRICS_PORT", default_value_t = settings::WORKER_METRICS_PORT)]
    pub worker_metrics_port: u16,
    /// Seconds between a worker's progress reports into its job while a part is open (a part's
    /// opening and end are reported at once); each is one API write, and so is the answer.
    #[arg(long, env = "ROOMREC_WORKER_REPORT_INTERVAL_SECONDS", default_value_t = roomrec_api::defaults::PROGRESS_INTERVAL_SECONDS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub worker_report_interval_seconds: u64,
    /// Worker pods per recorded person before the job fails.
    #[arg(long, env = "ROOMREC_MAX_ATTEMPTS", default_value_t = settings::MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Wait before the second and later replacements (doubling, at most 5 min).
    #[arg(long, env = "ROOMREC_RETRY_BACKOFF_SECONDS", default_value_t = settings::RETRY_BACKOFF_SECONDS)]
    pub retry_backoff_seconds: f64,
    /// Resources of worker pods whose job does not set spec.worker.resources, as JSON, e.g.
    /// {"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"memory":"512Mi"}}.
    #[arg(long, env = "ROOMREC_WORKER_RESOURCES", value_parser = parse_resources)]
    pub worker_resources: Option<ResourceRequirements>,
    /// Size limit of each worker's spool volume (checkpoints while the store is unreachable).
    #[arg(long, env = "ROOMREC_WORKER_SPOOL_LIMIT", default_value = settings::SPOOL_LIMIT)]
    pub worker_spool_limit: String,
    /// Mode of jobs that leave spec.mode out: AudioMp3, VideoMp4 or AudioVideoMp4 (or the
    /// heritage codes 00, 01, 02).
    #[arg(long, env = "ROOMREC_DEFAULT_MODE", default_value_t = job_defaults::MODE, value_parser = parse_mode)]
    pub default_mode: Mode,
    /// Idle timeout of jobs that leave spec.idleTimeoutSeconds out.
    #[arg(long, env = "ROOMREC_DEFAULT_IDLE_TIMEOUT_SECONDS", default_value_t = job_defaults::IDLE_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u32).range(5..=86400))]
    pub default_idle_timeout_seconds: u32,
    /// Storage of jobs that leave spec.storage out: the JSON of a spec.storage, e.g.
    /// {"s3":{"bucket":"recordings","endpoint":"https://s3.example.com"}}. Unset: jobs must
    /// set spec.storage.
    #[arg(long, env = "ROOMREC_DEFAULT_STORAGE", value_parser = parse_default_storage)]
    pub default_storage: Option<DefaultStorage>,
    /// Callback attempts before giving up.
    #[arg(long, env = "ROOMREC_CALLBACK_MAX_ATTEMPTS", default_value_t = settings::CALLBACK_MAX_ATTEMPTS)]
    pub callback_max_attempts: u32,
    /// Wait after the first failed callback (doubling, at most 5 min).
    #[arg(long, env = "ROOMREC_CALLBACK_BACKOFF_SECONDS", default_value_t = settings::CALLBACK_BACKOFF_SECONDS)]
    pub callback_backoff_seconds: f64,
    /// How long deleting a job waits for its workers to close their files.
    #[arg(long, env = "ROOMREC_FINALIZE_TIMEOUT_SECONDS", default_value_t = settings::FINALIZE_TIMEOUT_SECONDS)]
    pub finalize_timeout_seconds: u64,
    /// The TRTC server API's endpoint, for relays roomrec starts (`relay: start`).
    #[arg(long, env = "ROOMREC_TRTC_API_ENDPOINT", default_value = crate::trtc_api::DEFAULT_ENDPOINT)]
    pub trtc_api_endpoint: String,
    /// The TRTC API region (X-TC-Region): ap-guangzhou, ap-beijing, ap-singapore, ...
    #[arg(long, env = "ROOMREC_TRTC_REGION", default_value = "ap-guangzhou")]
    pub trtc_region: String,
    /// A directory with files secretId and secretKey: the Tencent Cloud API credentials that
    /// start and stop relays (a mounted Secret; never a flag's value). Unset: relay: start jobs
    /// are refused.
    #[arg(long, env = "ROOMREC_TRTC_CREDENTIALS_DIR")]
    pub trtc_credentials_dir: Option<std::path::PathBuf>,
    /// Serve TRTC's room event callback on this address (e.g. 0.0.0.0:8443); needs
    /// --room-events-key-file. Unset: off.
    #[arg(
        long,
        env = "ROOMREC_ROOM_EVENTS_ADDRESS",
        requires = "room_events_key_file"
    )]
    pub room_events_address: Option<SocketAddr>,
    /// A file holding the callback key set in the TRTC console (it signs every event).
    #[arg(long, env = "ROOMREC_ROOM_EVENTS_KEY_FILE")]
    pub room_events_key_file: Option<std::path::PathBuf>,
    /// Serve the heritage HTTP API (the serverless recording template's request) on this
    /// address, e.g. 0.0.0.0:8444; needs --heritage-token-file, --heritage-template and
    /// --room-events-address. Unset: off.
    #[arg(long, env = "ROOMREC_HERITAGE_ADDRESS")]
    pub heritage_address: Option<SocketAddr>,
    /// A file holding the bearer token heritage clients send (a mounted Secret's key).
    #[arg(long, env = "ROOMREC_HERITAGE_TOKEN_FILE")]
    pub heritage_token_file: Option<std::path::PathBuf>,
    /// Namespace of the RecordingJobs (and Secrets) the heritage API creates (default: the
    /// watched namespace, else the operator's own, POD_NAMESPACE).
    #[arg(long, env = "ROOMREC_HERITAGE_NAMESPACE")]
    pub heritage_namespace: Option<String>,
    /// The operator's choices for heritage jobs, as JSON, e.g. {"playDomain":
    /// "play.example.com", "relay": "existing", "storageCredentialsSecret": "cos-keys"}
    /// (docs/operations.md lists every field).
    #[arg(long, env = "ROOMREC_HERITAGE_TEMPLATE", value_parser = crate::heritage::template::parse_flag)]
    pub heritage_template: Option<crate::heritage::Template>,
    /// People a wholeRoom job records at most when it does not set wholeRoom.maxPeople; those
    /// who publish beyond it get a Warning event instead of a worker.
    #[arg(long, env = "ROOMREC_MAX_PEOPLE_PER_JOB", default_value_t = settings::MAX_PEOPLE_PER_JOB,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_people_per_job: u32,
    /// Watch one namespace only (default: all).
    #[arg(long, env = "ROOMREC_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ROOMREC_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Take a Lease before reconciling, so that only one of several replicas acts.
    #[arg(long, env = "ROOMREC_LEADER_ELECT")]
    pub leader_elect: bool,
    #[arg(long, env = "ROOMREC_LEASE_NAME", default_value = "roomrec-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, env = "ROOMREC_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// This replica's name in the Lease and in Events (default: POD_NAME or the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// json or text.
    #[arg(long, env = "ROOMREC_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// A tracing filter, e.g. info or roomrec_operator=debug.
    #[arg(long, env = "ROOMREC_LOG", default_value = "info")]
    pub log_level: String,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn parse_resources(s: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(s).map_err(|e| {
        format!("not a Kubernetes resources object as JSON ({e}): e.g. {{\"requests\":{{\"cpu\":\"100m\"}}}}")
    })
}

/// `--default-storage`; `{}` (what the chart passes for an empty value) means none.
#[derive(Clone, Debug)]
pub struct DefaultStorage(Option<Storage>);

fn parse_default_storage(s: &str) -> Result<DefaultStorage, String> {
    defaults::parse_storage(s).map(DefaultStorage)
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

impl Options {
    /// The TRTC API access, from --trtc-credentials-dir.
    pub fn trtc_api(&self) -> Result<Option<TrtcApiConfig>, StartError> {
        let Some(dir) = &self.trtc_credentials_dir else {
            return Ok(None);
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|v| v.trim().to_string())
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| StartError::TrtcCredentials(format!(
                    "--trtc-credentials-dir: {} is missing or empty: mount a Secret with keys secretId and secretKey there",
                    path.display()
                )))
        };
        let mut config = TrtcApiConfig::new(
            Secret::new(read("secretId")?),
            Secret::new(read("secretKey")?),
            &self.trtc_region,
        );
        config.endpoint = self.trtc_api_endpoint.clone();
        Ok(Some(config))
    }

    pub fn settings(&self) -> Settings {
        Settings {
            worker_resources: self.worker_resources.clone(),
            worker_image_pull_secrets: self.worker_image_pull_secrets.clone(),
            spool_limit: self.worker_spool_limit.clone(),
            defaults: JobDefaults {
                mode: self.default_mode,
                idle_timeout_seconds: self.default_idle_timeout_seconds,
                storage: self.default_storage.clone().and_then(|d| d.0),
            },
            worker_image: self.worker_image.clone(),
            worker_overrides: WorkerOverridePolicy {
                allowed_images: self
                    .allowed_worker_images
                    .iter()
                    .map(|image| image.trim().to_string())
                    .filter(|image| !image.is_empty())
                    .collect(),
                allow_service_account: self.allow_worker_service_account,
            },
            worker_env: self.worker_env.clone(),
            worker_grace: Duration::from_secs(self.worker_grace_seconds),
            worker_metrics_port: self.worker_metrics_port,
            worker_report_interval_seconds: self.worker_report_interval_seconds,
            max_attempts: self.max_attempts.max(1),
            retry_backoff: Duration::from_secs_f64(self.retry_backoff_seconds.max(0.0)),
            callback: CallbackSettings {
                max_attempts: self.callback_max_attempts.max(1),
                backoff: Duration::from_secs_f64(self.callback_backoff_seconds.max(0.0)),
                ..Default::default()
            },
            finalize_timeout: Duration::from_secs(self.finalize_timeout_seconds),
            trtc_api: None,
            room_events: self.room_events_address.is_some(),
            max_people_per_job: self.max_people_per_job,
        }
    }

    /// Unique per process unless given: two replicas on one host must not share a lease
    /// identity (each would think the lease is its own).
    fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "roomrec-operator".into());
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &id[..8])
        })
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach the Kubernetes API: {0}")]
    Kubernetes(#[source] kube::Error),
    #[error("{0}")]
    TrtcCredentials(String),
    #[error("--trtc-api-endpoint: {0}")]
    TrtcApi(#[source] crate::trtc_api::TrtcApiError),
    #[error("--room-events-key-file: {0}")]
    RoomEventsKey(String),
    #[error("--room-events-address {address}: {source}")]
    RoomEventsAddress {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Heritage(#[source] crate::heritage::HeritageError),
    #[error("--heritage-address {address}: {source}")]
    HeritageAddress {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--metrics-address {address}: {source}")]
    MetricsAddress {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until SIGTERM/SIGINT; Err only when it cannot start.
pub async fn run(options: Options) -> Result<(), StartError> {
    let mut settings = options.settings();
    settings.trtc_api = options.trtc_api()?;
    if let Some(config) = &settings.trtc_api {
        // Refuse a bad endpoint at start, not at the first relay.
        TrtcClient::new(config.clone()).map_err(StartError::TrtcApi)?;
    }
    let client = Client::try_default()
        .await
        .map_err(StartError::Kubernetes)?;
    let metrics = Arc::new(Metrics::new());
    let probes = Probes {
        metrics: metrics.clone(),
        ready: Default::default(),
    };
    let (address, server) = http::serve(options.metrics_address, probes.clone())
        .await
        .map_err(|source| StartError::MetricsAddress {
            address: options.metrics_address,
            source,
        })?;
    info!(%address, "serving /metrics, /healthz, /readyz");
    let identity = options.identity();

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("shutting down: finishing in-flight reconciles");
        let _ = shutdown_tx.send(true);
    });
    // Resolves once the flag is true; never when its sender is gone without setting it (a
    // dropped sender must not read as "stop").
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };

    let lease = options.leader_elect.then(|| {
        LeaseLock::new(
            Api::<Lease>::namespaced(client.clone(), &options.lease_namespace),
            &options.lease_name,
            &identity,
            Duration::from_secs(options.lease_seconds.max(3)),
        )
    });
    let lease = lease.map(Arc::new);
    let presence = Arc::new(crate::room_presence::Presence::default());
    if let Some(address) = options.room_events_address {
        let path = options.room_events_key_file.clone().unwrap_or_default();
        let key = std::fs::read_to_string(&path)
            .map(|k| k.trim().to_string())
            .ok()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                StartError::RoomEventsKey(format!("{} is missing or empty", path.display()))
            })?;
        let receiver = crate::room_events::Receiver::new(
            client.clone(),
            options.namespace.clone(),
            key.into_bytes(),
            metrics.clone(),
            presence.clone(),
        );
        let bound = crate::room_events::serve(address, receiver)
            .await
            .map_err(|source| StartError::RoomEventsAddress { address, source })?;
        info!(address = %bound, "serving TRTC room events");
    }
    if let Some(address) = options.heritage_address {
        let heritage = crate::heritage::Settings::new(
            options.heritage_token_file.as_deref(),
            options.heritage_template.clone(),
            options.heritage_namespace.as_deref(),
            options.namespace.as_deref(),
            &options.lease_namespace,
            options.room_events_address.is_some(),
        )
        .map_err(StartError::Heritage)?;
        let namespace = heritage.namespace.clone();
        let recordings =
            crate::heritage::Recordings::new(client.clone(), heritage.namespace, heritage.template);
        let server = crate::heritage::Server::new(recordings, heritage.token, metrics.clone());
        let bound = crate::heritage::serve(address, server)
            .await
            .map_err(|source| StartError::HeritageAddress { address, source })?;
        info!(address = %bound, %namespace, "serving the heritage HTTP API");
    }
    let ctx = Arc::new(
        Context::new(client, settings, metrics.clone(), identity.clone()).with_presence(presence),
    );
    // Lead, run the controller until the lease is lost, then wait to lead again: a replica
    // that lost its lease (an API server outage, a partition) stops acting at once and comes
    // back as a candidate, without a process restart.
    loop {
        if let Some(lease) = &lease {
            info!(lease = %options.lease_name, %identity, "waiting to lead");
            loop {
                match lease.try_acquire().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "taking the lease failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(lease.renew_interval()) => {}
                    _ = stop(shutdown_rx.clone()) => { server.abort(); return Ok(()) }
                }
            }
            info!(%identity, "leading");
        }
        metrics.leader.set(1);
        probes.ready.store(true, Ordering::Relaxed);

        let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
        let renewer = lease.clone().map(|lease| {
            let shutdown_rx = shutdown_rx.clone();
            tokio::spawn(keep_leading(lease, lost_tx, shutdown_rx))
        });
        // Shutdown, or the lease lost: either ends this term of leading.
        let term_ends = || {
            let (shutdown_rx, lost_rx) = (shutdown_rx.clone(), lost_rx.clone());
            async move {
                tokio::select! {
                    _ = stop(shutdown_rx) => {}
                    _ = stop(lost_rx) => {}
                }
            }
        };
        let trigger = term_ends();
        // Bounded: a controller asked to stop before its caches filled may not return by itself.
        let stopped = {
            let ends = term_ends();
            async move {
                ends.await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        };
        tokio::select! {
            _ = controller::run(ctx.clone(), options.namespace.clone(), trigger) => {}
            _ = stopped => warn!("the controller did not stop within 30 s; leaving it"),
        }
        probes.ready.store(false, Ordering::Relaxed);
        metrics.leader.set(0);
        if let Some(renewer) = renewer {
            let _ = renewer.await;
        }
        if *shutdown_rx.borrow() {
            break;
        }
        error!("lost the leader lease; reconciling stopped until it is taken again");
    }
    server.abort();
    info!("stopped");
    Ok(())
}

/// Renews the lease until shutdown (then releases it) or until it is lost (then says so).
async fn keep_leading(
    lease: Arc<LeaseLock>,
    lost: tokio::sync::watch::Sender<bool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease.renew_interval()) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => { lease.release().await; return }
        }
        match lease.try_acquire().await {
            Ok(true) => last_renewal = tokio::time::Instant::now(),
            Ok(false) => {
                error!("another replica took the lease");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                warn!(error = %e, "renewing the lease failed");
                // Past the lease's duration another replica may lead: stop acting now.
                if last_renewal.elapsed() > lease.renew_interval() * 3 {
                    error!("the lease expired before it could be renewed");
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}
