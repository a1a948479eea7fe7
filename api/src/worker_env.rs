//! The worker's environment: what the operator tells a worker pod, as one typed struct with
//! the variables' names. The operator renders it into the pod (`WorkerEnv::vars`); the worker
//! reads the same names as its flags' environment variables (`roomrec-worker record`), so a
//! variable cannot be renamed on one side only.

use crate::mode::Mode;
use crate::relay::{RelayStream, StreamIdForm};

/// The variables' names. Each is also a flag of `roomrec-worker record`.
pub mod var {
    pub const SOURCE: &str = "ROOMREC_SOURCE";
    pub const TRTC_SDK_APP_ID: &str = "ROOMREC_TRTC_SDK_APP_ID";
    pub const TRTC_ROOM_ID: &str = "ROOMREC_TRTC_ROOM_ID";
    pub const TRTC_STR_ROOM_ID: &str = "ROOMREC_TRTC_STR_ROOM_ID";
    pub const TRTC_USER_ID: &str = "ROOMREC_TRTC_USER_ID";
    pub const TRTC_PLAY_DOMAIN: &str = "ROOMREC_TRTC_PLAY_DOMAIN";
    pub const TRTC_PROTOCOL: &str = "ROOMREC_TRTC_PROTOCOL";
    pub const TRTC_STREAM: &str = "ROOMREC_TRTC_STREAM";
    pub const TRTC_STREAM_ID: &str = "ROOMREC_TRTC_STREAM_ID";
    pub const TRTC_LEGACY_BIZID: &str = "ROOMREC_TRTC_LEGACY_BIZID";
    pub const MODE: &str = "ROOMREC_MODE";
    pub const STORAGE: &str = "ROOMREC_STORAGE";
    pub const REGION: &str = "ROOMREC_REGION";
    pub const ENDPOINT: &str = "ROOMREC_ENDPOINT";
    pub const S3_VIRTUAL_HOST: &str = "ROOMREC_S3_VIRTUAL_HOST";
    pub const CREDENTIALS_DIR: &str = "ROOMREC_CREDENTIALS_DIR";
    pub const RESOLVE: &str = "ROOMREC_RESOLVE";
    pub const KEY_TEMPLATE: &str = "ROOMREC_KEY_TEMPLATE";
    pub const SESSION_START: &str = "ROOMREC_SESSION_START";
    pub const SEGMENT_SECONDS: &str = "ROOMREC_SEGMENT_SECONDS";
    pub const SEGMENT_SIZE: &str = "ROOMREC_SEGMENT_SIZE";
    pub const IDLE_TIMEOUT_SECONDS: &str = "ROOMREC_IDLE_TIMEOUT_SECONDS";
    pub const RECONNECT_GRACE_SECONDS: &str = "ROOMREC_RECONNECT_GRACE_SECONDS";
    pub const STALL_SECONDS: &str = "ROOMREC_STALL_SECONDS";
    pub const MAX_DURATION_SECONDS: &str = "ROOMREC_MAX_DURATION_SECONDS";
    pub const STOP_FILE: &str = "ROOMREC_STOP_FILE";
    pub const SHUTDOWN_TIMEOUT_SECONDS: &str = "ROOMREC_SHUTDOWN_TIMEOUT_SECONDS";
    pub const CHECKPOINT_SECONDS: &str = "ROOMREC_CHECKPOINT_SECONDS";
    pub const SPOOL_MEMORY: &str = "ROOMREC_SPOOL_MEMORY";
    pub const SPOOL_DIR: &str = "ROOMREC_SPOOL_DIR";
    pub const SPOOL_MAX: &str = "ROOMREC_SPOOL_MAX";
    pub const EXPECTED_BITRATE: &str = "ROOMREC_EXPECTED_BITRATE";
    pub const STORE_REQUEST_TIMEOUT_SECONDS: &str = "ROOMREC_STORE_REQUEST_TIMEOUT_SECONDS";
    pub const FASTSTART: &str = "ROOMREC_FASTSTART";
    pub const SCRATCH_DIR: &str = "ROOMREC_SCRATCH_DIR";
    pub const MANIFEST: &str = "ROOMREC_MANIFEST";
    pub const LOG_FORMAT: &str = "ROOMREC_LOG_FORMAT";
    pub const FFMPEG: &str = "ROOMREC_FFMPEG";
    pub const FFPROBE: &str = "ROOMREC_FFPROBE";
    pub const REPORT_JOB: &str = "ROOMREC_REPORT_JOB";
    pub const REPORT_INTERVAL_SECONDS: &str = "ROOMREC_REPORT_INTERVAL_SECONDS";
    pub const POD_NAME: &str = "ROOMREC_POD_NAME";
    pub const TERMINATION_MESSAGE: &str = "ROOMREC_TERMINATION_MESSAGE";
    pub const METRICS_ADDRESS: &str = "ROOMREC_METRICS_ADDRESS";
    pub const METRICS_LINGER_SECONDS: &str = "ROOMREC_METRICS_LINGER_SECONDS";
    /// The log filter (e.g. `debug`), read by the worker itself.
    pub const LOG: &str = "ROOMREC_LOG";
}

/// What to record.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerSource {
    /// Any URL ffmpeg reads.
    Url(String),
    /// A person on a TRTC relay.
    Relay(RelayStream),
}

/// Where the files go, as the worker's `--storage` family of flags.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageTarget {
    /// `cos://BUCKET/PREFIX`, `s3://BUCKET/PREFIX` or `file:///DIR`.
    pub url: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub virtual_host: bool,
    /// A mounted Secret with the store's keys.
    pub credentials_dir: Option<String>,
}

/// Everything the operator decides for one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEnv {
    pub source: WorkerSource,
    pub mode: Mode,
    pub storage: StorageTarget,
    pub idle_timeout_seconds: u32,
    /// What is left of the person's maximum duration.
    pub max_duration_seconds: Option<u64>,
    pub segment_seconds: Option<u32>,
    pub segment_size: Option<u64>,
    /// Set: classic MP4 files, remuxed in this directory.
    pub faststart_scratch_dir: Option<String>,
    /// The session start every worker of the job shares (RFC 3339).
    pub session_start: String,
    pub spool_dir: String,
    pub shutdown_timeout_seconds: u64,
    /// `NAMESPACE/NAME` of the RecordingJob whose status.files the worker writes.
    pub report_job: String,
    /// Seconds between progress reports while a part is open.
    pub report_interval_seconds: u64,
    pub termination_message: String,
    pub metrics_address: Option<String>,
}

/// A variable's value: text, or a field of the pod itself (the downward API).
#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    Text(String),
    PodField(&'static str),
}

impl WorkerEnv {
    /// The pod's environment, in a stable order.
    pub fn vars(&self) -> Vec<(&'static str, EnvValue)> {
        let mut out: Vec<(&'static str, EnvValue)> = Vec::new();
        let mut set = |name: &'static str, value: String| out.push((name, EnvValue::Text(value)));
        set(var::MODE, self.mode.code().into());
        match &self.source {
            WorkerSource::Url(url) => set(var::SOURCE, url.clone()),
            WorkerSource::Relay(relay) => {
                set(var::TRTC_SDK_APP_ID, relay.sdk_app_id.to_string());
                match (relay.room_id, &relay.str_room_id) {
                    (Some(room), _) => set(var::TRTC_ROOM_ID, room.to_string()),
                    (None, Some(room)) => set(var::TRTC_STR_ROOM_ID, room.clone()),
                    (None, None) => {}
                }
                set(var::TRTC_USER_ID, relay.user_id.clone());
                set(var::TRTC_PLAY_DOMAIN, relay.play_domain.clone());
                set(var::TRTC_PROTOCOL, relay.protocol.as_str().into());
                set(var::TRTC_STREAM, relay.stream.as_str().into());
                match &relay.stream_id {
                    StreamIdForm::Standard => {}
                    StreamIdForm::Legacy { bizid } => {
                        set(var::TRTC_LEGACY_BIZID, bizid.to_string())
                    }
                    StreamIdForm::Explicit(id) => set(var::TRTC_STREAM_ID, id.clone()),
                }
            }
        }
        let storage = &self.storage;
        set(var::STORAGE, storage.url.clone());
        if let Some(region) = &storage.region {
            set(var::REGION, region.clone());
        }
        if let Some(endpoint) = &storage.endpoint {
            set(var::ENDPOINT, endpoint.clone());
        }
        if storage.virtual_host {
            set(var::S3_VIRTUAL_HOST, "true".into());
        }
        if let Some(dir) = &storage.credentials_dir {
            set(var::CREDENTIALS_DIR, dir.clone());
        }
        set(
            var::IDLE_TIMEOUT_SECONDS,
            self.idle_timeout_seconds.to_string(),
        );
        if let Some(max) = self.max_duration_seconds {
            set(var::MAX_DURATION_SECONDS, max.to_string());
        }
        if let Some(seconds) = self.segment_seconds {
            set(var::SEGMENT_SECONDS, seconds.to_string());
        }
        if let Some(bytes) = self.segment_size {
            set(var::SEGMENT_SIZE, bytes.to_string());
        }
        if let Some(dir) = &self.faststart_scratch_dir {
            set(var::FASTSTART, "true".into());
            set(var::SCRATCH_DIR, dir.clone());
        }
        set(var::SESSION_START, self.session_start.clone());
        set(var::SPOOL_DIR, self.spool_dir.clone());
        set(
            var::SHUTDOWN_TIMEOUT_SECONDS,
            self.shutdown_timeout_seconds.to_string(),
        );
        // A pod's worker logs JSON lines and writes its manifest to its log.
        set(var::LOG_FORMAT, "json".into());
        set(var::MANIFEST, "-".into());
        set(var::REPORT_JOB, self.report_job.clone());
        set(
            var::REPORT_INTERVAL_SECONDS,
            self.report_interval_seconds.to_string(),
        );
        out.push((var::POD_NAME, EnvValue::PodField("metadata.name")));
        out.push((
            var::TERMINATION_MESSAGE,
            EnvValue::Text(self.termination_message.clone()),
        ));
        if let Some(address) = &self.metrics_address {
            out.push((var::METRICS_ADDRESS, EnvValue::Text(address.clone())));
        }
        out
    }
}
