//! The command line: `roomrec-worker record …`'s flags → `RecordConfig`.
//!
//! Each flag is also readable from a `ROOMREC_*` environment variable, which is how the
//! operator configures a worker pod. Every mistake names the flag and how to fix it, and exits
//! with code 2.

use crate::config::RecordConfig;
use crate::report::job::{JobRef, JobRefError};
use crate::source::ffmpeg::Tools;
use crate::source::input::Source;
use crate::store::keys::{DEFAULT_TEMPLATE, KeyTemplate, KeyTemplateError};
use crate::store::spool::SpoolLimits;
use crate::store::storage::{RetryPolicy, StorageConfig, StorageError, load_credentials};
use clap::{Args, Parser, Subcommand, ValueEnum};
use roomrec_api::Mode;
use roomrec_api::defaults;
use roomrec_api::relay::{PlayProtocol, RelayStream, StreamIdForm, StreamKind};
use roomrec_api::worker_env::var;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "roomrec-worker",
    version,
    about = "Record a live stream into object storage as MP3 or MP4.",
    long_about = "Record a live stream into object storage as MP3 or MP4.\n\n\
        The recording streams straight into the store (no local file, no disk limit) and is \
        checkpointed every few seconds, so even a killed worker loses at most a few seconds; \
        the next run rebuilds what the previous one left.",
    after_help = "Examples:\n  \
        roomrec-worker record --source rtmp://127.0.0.1/live/cam --mode 02 --storage file:///tmp/rec\n  \
        AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… roomrec-worker record --source https://cdn/live/x.flv \\\n      \
        --mode AudioMp3 --storage s3://recordings/class-7 --endpoint http://127.0.0.1:9000\n  \
        COS_SECRET_ID=… COS_SECRET_KEY=… roomrec-worker record --trtc-sdk-app-id 1400000000 --trtc-room-id 43474 \\\n      \
        --trtc-user-id alice --trtc-play-domain play.example.com --mode 02 --storage cos://class-1250000000/trtc --region ap-shanghai"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes, for `record --help` (and main's documentation says the same).
pub const EXIT_CODES: &str = "Exit codes:
  0  recorded: every part stored
  1  failed, and running again may help (the store unreachable, the stream never
     started, a part not stored)
  2  bad usage: a flag or variable is wrong
  3  failed, and running again cannot help: the store refused the credentials, the
     bucket does not exist, the source lacks the track the mode needs, or a file
     source cannot be read";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Record one stream until it ends, goes idle, reaches --max-duration, or is stopped.
    #[command(after_help = EXIT_CODES)]
    Record(Box<RecordArgs>),
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// What to record: any URL ffmpeg reads (rtmp://, rtmps://, srt://, rtsp://, http(s) FLV or
    /// HLS, a local file). For a TRTC room member use the --trtc-* flags instead.
    #[arg(long, env = var::SOURCE, help_heading = "Source")]
    pub source: Option<String>,

    /// TRTC application id (SdkAppId).
    #[arg(long, env = var::TRTC_SDK_APP_ID, help_heading = "TRTC source")]
    pub trtc_sdk_app_id: Option<u64>,
    /// Numeric room id; wins over --trtc-str-room-id when both are given.
    #[arg(long, env = var::TRTC_ROOM_ID, help_heading = "TRTC source")]
    pub trtc_room_id: Option<u64>,
    /// String room id.
    #[arg(long, env = var::TRTC_STR_ROOM_ID, help_heading = "TRTC source")]
    pub trtc_str_room_id: Option<String>,
    /// The room member to record.
    #[arg(long, env = var::TRTC_USER_ID, help_heading = "TRTC source")]
    pub trtc_user_id: Option<String>,
    /// Playback domain of the application's relay to CDN.
    #[arg(long, env = var::TRTC_PLAY_DOMAIN, help_heading = "TRTC source")]
    pub trtc_play_domain: Option<String>,
    /// rtmp, flv (HTTP-FLV) or hls.
    #[arg(
        long,
        env = var::TRTC_PROTOCOL,
        default_value = "rtmp",
        help_heading = "TRTC source"
    )]
    pub trtc_protocol: PlayProtocol,
    /// main: camera and microphone; aux: screen share.
    #[arg(
        long,
        env = var::TRTC_STREAM,
        default_value = "main",
        help_heading = "TRTC source"
    )]
    pub trtc_stream: StreamKind,
    /// A stream id the client set itself (instead of the relay's naming convention).
    #[arg(long, env = var::TRTC_STREAM_ID, help_heading = "TRTC source")]
    pub trtc_stream_id: Option<String>,
    /// For applications created before 2020-01-09: the bizid of the legacy MD5 stream id.
    #[arg(long, env = var::TRTC_LEGACY_BIZID, help_heading = "TRTC source")]
    pub trtc_legacy_bizid: Option<u64>,

    /// 00 or AudioMp3: MP3 audio. 01 or VideoMp4: MP4, video only. 02 or AudioVideoMp4: MP4.
    // No value parser of ours: clap reads it through `Mode`'s `FromStr` (the shared crate's),
    // which also accepts the names; a wrapper here only passed its error along.
    #[arg(long, env = var::MODE, default_value_t = defaults::MODE)]
    pub mode: Mode,

    /// Where files go: file:///DIR, cos://BUCKET-APPID/PREFIX or s3://BUCKET/PREFIX.
    /// Credentials: --credentials-dir, or COS_SECRET_ID/COS_SECRET_KEY (TENCENTCLOUD_SECRET_*)
    /// for COS and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for S3 in the environment.
    #[arg(long, env = var::STORAGE, help_heading = "Storage")]
    pub storage: Option<String>,
    /// Region of the bucket (required for COS, e.g. ap-shanghai).
    #[arg(long, env = var::REGION, help_heading = "Storage")]
    pub region: Option<String>,
    /// Service endpoint, for S3-compatible stores or a private COS endpoint.
    #[arg(long, env = var::ENDPOINT, help_heading = "Storage")]
    pub endpoint: Option<String>,
    /// Use virtual-hosted S3 URLs (bucket.host) instead of path-style.
    #[arg(long, env = var::S3_VIRTUAL_HOST, help_heading = "Storage")]
    pub s3_virtual_host: bool,
    /// A directory with files secretId (or accessKeyId) and secretKey (or secretAccessKey), and
    /// optionally sessionToken: a mounted Kubernetes Secret.
    #[arg(long, env = var::CREDENTIALS_DIR, help_heading = "Storage")]
    pub credentials_dir: Option<PathBuf>,
    /// Resolve HOST to ADDR:PORT for storage requests (like curl --resolve), e.g. for a test
    /// server or a private endpoint without DNS. Repeatable.
    #[arg(
        long = "resolve",
        env = var::RESOLVE,
        value_delimiter = ',',
        value_name = "HOST=ADDR:PORT",
        help_heading = "Storage"
    )]
    pub resolve: Vec<String>,
    /// Object key under the prefix: {stream} {user} {start} {part} {ext} {mode}.
    #[arg(long, env = var::KEY_TEMPLATE, default_value = DEFAULT_TEMPLATE, help_heading = "Storage")]
    pub key_template: String,
    /// The session's start, for {start} in keys (RFC 3339; default: now). A restarted worker
    /// given the same start continues with the next free part number.
    #[arg(long, env = var::SESSION_START, help_heading = "Storage")]
    pub session_start: Option<String>,

    /// Start a new part after this many seconds.
    #[arg(
        long,
        env = var::SEGMENT_SECONDS,
        help_heading = "Parts and stopping"
    )]
    pub segment_seconds: Option<u64>,
    /// Start a new part before a part exceeds this size (bytes; k, M, G suffixes: 2G).
    #[arg(long, env = var::SEGMENT_SIZE, value_parser = parse_size, help_heading = "Parts and stopping")]
    pub segment_size: Option<u64>,
    /// Stop after this long without media (also: a stream that never starts).
    #[arg(
        long,
        env = var::IDLE_TIMEOUT_SECONDS,
        default_value_t = u64::from(defaults::IDLE_TIMEOUT_SECONDS),
        help_heading = "Parts and stopping"
    )]
    pub idle_timeout: u64,
    /// A live stream that drops and returns within this many seconds continues as a new part
    /// (default: the idle timeout; 0 ends the recording at the first drop).
    #[arg(
        long,
        env = var::RECONNECT_GRACE_SECONDS,
        help_heading = "Parts and stopping"
    )]
    pub reconnect_grace: Option<u64>,
    /// A connection that delivers no media for this long counts as dropped and is reopened (a
    /// return after it is a new part). Not for HLS: ffmpeg's HLS client waits for its playlist
    /// to grow, and --reconnect-grace ends the wait.
    #[arg(
        long,
        env = var::STALL_SECONDS,
        default_value_t = 10,
        help_heading = "Parts and stopping"
    )]
    pub stall_seconds: u64,
    /// Stop once this many seconds of media are recorded.
    #[arg(
        long,
        env = var::MAX_DURATION_SECONDS,
        help_heading = "Parts and stopping"
    )]
    pub max_duration: Option<u64>,
    /// Stop gracefully when this file appears.
    #[arg(long, env = var::STOP_FILE, help_heading = "Parts and stopping")]
    pub stop_file: Option<PathBuf>,
    /// After SIGTERM/SIGINT or another stop, finish uploading within this many seconds.
    #[arg(
        long,
        env = var::SHUTDOWN_TIMEOUT_SECONDS,
        default_value_t = 25,
        help_heading = "Parts and stopping"
    )]
    pub shutdown_timeout: u64,

    /// Checkpoint interval: the most a killed worker can lose, in seconds (plus one fragment).
    #[arg(
        long,
        env = var::CHECKPOINT_SECONDS,
        default_value_t = 2,
        help_heading = "Durability"
    )]
    pub checkpoint_seconds: u64,
    /// Recorded data held in memory while the store is slow or unreachable; beyond it,
    /// checkpoints go to --spool-dir.
    #[arg(long, env = var::SPOOL_MEMORY, default_value = "32M", value_parser = parse_size, help_heading = "Durability")]
    pub spool_memory: u64,
    /// Scratch directory for checkpoints the store has not taken yet (an emptyDir or a volume);
    /// what is left there is uploaded by the next run with the same directory.
    #[arg(long, env = var::SPOOL_DIR, help_heading = "Durability")]
    pub spool_dir: Option<PathBuf>,
    /// Most recorded data that may wait for an unreachable store (memory and disk) before the
    /// recording fails.
    #[arg(long, env = var::SPOOL_MAX, default_value = "1G", value_parser = parse_size, help_heading = "Durability")]
    pub spool_max: u64,
    /// Expected bitrate (bits/s, k/M suffixes). It only sizes upload chunks (at least 5 MiB;
    /// the worker holds about one in memory, two with COS) so that a 24-hour part fits the
    /// 10,000-part limit of multipart uploads; a part that reaches the limit continues as a
    /// new part.
    #[arg(long, env = var::EXPECTED_BITRATE, default_value = "4M", value_parser = parse_size, help_heading = "Durability")]
    pub expected_bitrate: u64,
    /// The most one request to the store may take (answer and body) before it is abandoned and
    /// retried: a store or gateway that hangs costs this long, not the recording.
    #[arg(
        long,
        env = var::STORE_REQUEST_TIMEOUT_SECONDS,
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600),
        help_heading = "Durability"
    )]
    pub store_request_timeout: u64,

    /// MP4 modes (01, 02): store every part as a classic MP4 (moov first, not fragmented), for
    /// players and editors that need one. The part still streams into the store as fragmented
    /// MP4 with its checkpoints (a killed worker loses no more); a copy goes to --scratch-dir,
    /// and when the part ends ffmpeg remuxes it (-c copy -movflags +faststart) and the classic
    /// file replaces the fragmented object under the same key once it is whole. Disk: up to
    /// twice the largest part, at its end (the copy and the remuxed file); bound it with
    /// --segment-seconds or --segment-size. When the scratch directory is too small or the
    /// remux fails, the part stays fragmented MP4 and its manifest message says why. After
    /// SIGTERM/SIGINT the copy must be stored within the shutdown timeout.
    #[arg(long, env = var::FASTSTART, help_heading = "Output")]
    pub faststart: bool,
    /// Where --faststart keeps each part's copy while it is recorded (default: --spool-dir if
    /// set, else the system temp directory).
    #[arg(
        long,
        env = var::SCRATCH_DIR,
        value_name = "DIR",
        help_heading = "Output"
    )]
    pub scratch_dir: Option<PathBuf>,
    /// Write the JSON manifest here ("-" for stdout).
    #[arg(
        long,
        env = var::MANIFEST,
        default_value = "-",
        help_heading = "Output"
    )]
    pub manifest: String,
    /// Progress and logs: auto (a progress line on a terminal, JSON lines otherwise), text, json.
    #[arg(
        long,
        env = var::LOG_FORMAT,
        value_enum,
        default_value = "auto",
        help_heading = "Output"
    )]
    pub log_format: LogFormat,
    #[arg(
        long,
        env = var::FFMPEG,
        default_value = "ffmpeg",
        help_heading = "Output"
    )]
    pub ffmpeg: PathBuf,
    #[arg(
        long,
        env = var::FFPROBE,
        default_value = "ffprobe",
        help_heading = "Output"
    )]
    pub ffprobe: PathBuf,

    /// A RecordingJob whose status.files receives this worker's files, as they are recorded
    /// (Kubernetes credentials: the pod's service account, or KUBECONFIG).
    #[arg(
        long,
        env = var::REPORT_JOB,
        value_name = "NAMESPACE/NAME",
        help_heading = "Reporting"
    )]
    pub report_job: Option<String>,
    /// This worker's name (its pod's), in the status field manager and each file's pod
    /// (default: the hostname).
    #[arg(
        long,
        env = var::POD_NAME,
        value_name = "NAME",
        help_heading = "Reporting"
    )]
    pub report_name: Option<String>,
    /// Seconds between progress reports into the RecordingJob while a part is open (a part's
    /// opening and end are reported at once). Each report is one write to the API server.
    #[arg(
        long,
        env = var::REPORT_INTERVAL_SECONDS,
        default_value_t = roomrec_api::defaults::PROGRESS_INTERVAL_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..=3600),
        help_heading = "Reporting"
    )]
    pub report_interval: u64,
    /// After the run, write a short JSON result here (the pod's terminationMessagePath).
    #[arg(
        long,
        env = var::TERMINATION_MESSAGE,
        value_name = "PATH",
        help_heading = "Reporting"
    )]
    pub termination_message: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics while recording (default: off).
    #[arg(
        long,
        env = var::METRICS_ADDRESS,
        value_name = "ADDR:PORT",
        help_heading = "Reporting"
    )]
    pub metrics_address: Option<SocketAddr>,
    /// Keep serving /metrics this many seconds after the recording ended (a SIGTERM ends the
    /// wait), so that a last scrape sees the final counts.
    #[arg(
        long,
        env = var::METRICS_LINGER_SECONDS,
        default_value_t = 0,
        help_heading = "Reporting"
    )]
    pub metrics_linger: u64,
}

/// Where the worker reports, besides the manifest.
#[derive(Debug, Clone)]
pub struct Reporting {
    pub job: Option<JobRef>,
    /// The pod name.
    pub name: String,
    /// Between progress reports while a part is open.
    pub interval: Duration,
    pub termination_message: Option<PathBuf>,
    pub metrics_address: Option<SocketAddr>,
    pub metrics_linger: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// `1500`, `64k`, `8M`, `2G` (powers of 1024 for sizes; bitrates read the same way). A clap
/// value parser: clap takes any error type, and puts the flag's name before its message.
pub fn parse_size(s: &str) -> Result<u64, UsageError> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| UsageError::NotASize(s.to_string()))?;
    let factor = match unit.to_ascii_lowercase().trim_end_matches(['b', 'i']) {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(UsageError::UnknownUnit(s.to_string())),
    };
    Ok(n * factor)
}

/// A pod's hostname is its name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "roomrec-worker".into())
}

/// A usage error: names the flag and the fix; main exits with code 2 on any of them.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("--report-job: {0}")]
    ReportJob(#[from] JobRefError),
    #[error("--report-name is empty: pass the pod's name (or leave it out for the hostname)")]
    EmptyReportName,
    #[error("give either --source or the --trtc-* flags, not both")]
    SourceAndTrtc,
    #[error("--source is empty: pass the stream URL, e.g. --source rtmp://host/live/key")]
    EmptySource,
    #[error(
        "nothing to record: pass --source URL, or --trtc-sdk-app-id, --trtc-room-id, --trtc-user-id and --trtc-play-domain"
    )]
    NothingToRecord,
    #[error("a TRTC source needs {flag} (e.g. {flag} {example})")]
    TrtcNeeds {
        flag: &'static str,
        example: &'static str,
    },
    #[error("a TRTC source needs --trtc-room-id or --trtc-str-room-id")]
    TrtcNeedsRoom,
    #[error("give --trtc-stream-id or --trtc-legacy-bizid, not both")]
    StreamIdAndBizid,
    #[error("--storage is required: file:///DIR, cos://BUCKET-APPID/PREFIX or s3://BUCKET/PREFIX")]
    NoStorage,
    #[error("--storage: {0}")]
    Storage(#[source] StorageError),
    #[error("--credentials-dir or the store's key variables: {0}")]
    Credentials(#[source] StorageError),
    #[error("--resolve {0:?}: use HOST=ADDR:PORT")]
    ResolveForm(String),
    #[error("--resolve {entry:?}: {addr:?} is not ADDR:PORT")]
    ResolveAddr {
        entry: String,
        addr: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("--key-template: {0}")]
    KeyTemplate(#[from] KeyTemplateError),
    #[error("--session-start {value:?}: {source}; use RFC 3339, e.g. 2025-11-24T16:00:00Z")]
    SessionStart {
        value: String,
        #[source]
        source: jiff::Error,
    },
    /// A number outside what the flag allows: `{flag} must be {allowed}`.
    #[error("{flag} must be {allowed}")]
    OutOfRange {
        flag: &'static str,
        allowed: &'static str,
    },
    #[error(
        "--faststart (ROOMREC_FASTSTART) makes classic MP4 files, but --mode 00 (AudioMp3) records MP3: leave --faststart out, or record MP4 with --mode 01 (VideoMp4) or 02 (AudioVideoMp4)"
    )]
    FaststartWithMp3,
    #[error("{0:?} is not a size: use a number with an optional k, M or G suffix")]
    NotASize(String),
    #[error("{0:?} has an unknown unit: use k, M or G")]
    UnknownUnit(String),
}

impl RecordArgs {
    pub fn reporting(&self) -> Result<Reporting, UsageError> {
        let job = match &self.report_job {
            Some(s) => Some(JobRef::parse(s.trim())?),
            None => None,
        };
        let name = match &self.report_name {
            Some(n) if n.trim().is_empty() => return Err(UsageError::EmptyReportName),
            Some(n) => n.trim().to_string(),
            None => hostname(),
        };
        Ok(Reporting {
            job,
            name,
            interval: Duration::from_secs(self.report_interval),
            termination_message: self.termination_message.clone(),
            metrics_address: self.metrics_address,
            metrics_linger: Duration::from_secs(self.metrics_linger),
        })
    }

    pub fn into_config(self) -> Result<RecordConfig, UsageError> {
        let trtc_given = self.trtc_sdk_app_id.is_some()
            || self.trtc_user_id.is_some()
            || self.trtc_play_domain.is_some();
        let source = match (&self.source, trtc_given) {
            (Some(_), true) => return Err(UsageError::SourceAndTrtc),
            (Some(url), false) => {
                if url.trim().is_empty() {
                    return Err(UsageError::EmptySource);
                }
                Source::Url(url.clone())
            }
            (None, true) => {
                let need = |flag, example| UsageError::TrtcNeeds { flag, example };
                let sdk_app_id = self
                    .trtc_sdk_app_id
                    .ok_or_else(|| need("--trtc-sdk-app-id", "1400000000"))?;
                if self.trtc_room_id.is_none() && self.trtc_str_room_id.is_none() {
                    return Err(UsageError::TrtcNeedsRoom);
                }
                let user_id = self
                    .trtc_user_id
                    .clone()
                    .ok_or_else(|| need("--trtc-user-id", "alice"))?;
                let play_domain = self
                    .trtc_play_domain
                    .clone()
                    .ok_or_else(|| need("--trtc-play-domain", "play.example.com"))?;
                let stream_id = match (&self.trtc_stream_id, self.trtc_legacy_bizid) {
                    (Some(_), Some(_)) => return Err(UsageError::StreamIdAndBizid),
                    (Some(id), None) => StreamIdForm::Explicit(id.clone()),
                    (None, Some(bizid)) => StreamIdForm::Legacy { bizid },
                    (None, None) => StreamIdForm::Standard,
                };
                Source::Trtc(RelayStream {
                    sdk_app_id,
                    room_id: self.trtc_room_id,
                    str_room_id: self.trtc_str_room_id.clone(),
                    user_id,
                    stream: self.trtc_stream,
                    stream_id,
                    play_domain,
                    protocol: self.trtc_protocol,
                })
            }
            (None, false) => return Err(UsageError::NothingToRecord),
        };

        let storage_url = self.storage.ok_or(UsageError::NoStorage)?;
        let mut storage = StorageConfig::parse(&storage_url, self.region.as_deref())
            .map_err(UsageError::Storage)?;
        if let crate::store::storage::StorageKind::S3 { virtual_host, .. } = &mut storage.kind {
            *virtual_host = self.s3_virtual_host;
        }
        storage.endpoint = self.endpoint;
        storage.credentials = load_credentials(&storage.kind, self.credentials_dir.as_deref())
            .map_err(UsageError::Credentials)?;
        for entry in &self.resolve {
            let (host, addr) = entry
                .split_once('=')
                .ok_or_else(|| UsageError::ResolveForm(entry.clone()))?;
            let addr = addr.parse().map_err(|source| UsageError::ResolveAddr {
                entry: entry.clone(),
                addr: addr.to_string(),
                source,
            })?;
            storage.resolve.push((host.to_string(), addr));
        }

        let key_template = KeyTemplate::parse(&self.key_template)?;
        let session_start = match &self.session_start {
            Some(s) => s
                .parse::<jiff::Timestamp>()
                .map_err(|source| UsageError::SessionStart {
                    value: s.clone(),
                    source,
                })?,
            None => jiff::Timestamp::now(),
        };
        let out_of_range = |flag, allowed| Err(UsageError::OutOfRange { flag, allowed });
        if self.idle_timeout == 0 {
            return out_of_range("--idle-timeout", "at least 1 second");
        }
        if self.checkpoint_seconds == 0 || self.checkpoint_seconds > 60 {
            return out_of_range("--checkpoint-seconds", "between 1 and 60");
        }
        if self.segment_seconds == Some(0) {
            return out_of_range("--segment-seconds", "at least 1");
        }
        if self.max_duration == Some(0) {
            return out_of_range("--max-duration", "at least 1 second");
        }
        if let Some(size) = self.segment_size
            && size < 1 << 20
        {
            return out_of_range("--segment-size", "at least 1M");
        }
        let faststart = match (self.faststart, self.mode) {
            (false, _) => None,
            (true, Mode::AudioMp3) => return Err(UsageError::FaststartWithMp3),
            (true, _) => Some(
                self.scratch_dir
                    .or_else(|| self.spool_dir.clone())
                    .unwrap_or_else(std::env::temp_dir),
            ),
        };
        Ok(RecordConfig {
            source,
            mode: self.mode,
            storage,
            key_template,
            session_start,
            segment_duration: self.segment_seconds.map(Duration::from_secs),
            segment_bytes: self.segment_size,
            reconnect_grace: Duration::from_secs(self.reconnect_grace.unwrap_or(self.idle_timeout)),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            stall_timeout: Duration::from_secs(self.stall_seconds.max(1)),
            max_duration: self.max_duration.map(Duration::from_secs),
            stop_file: self.stop_file,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            checkpoint: Duration::from_secs(self.checkpoint_seconds),
            spool: SpoolLimits {
                memory_bytes: self.spool_memory,
                dir: self.spool_dir,
                max_bytes: self.spool_max,
            },
            tools: Tools {
                ffmpeg: self.ffmpeg,
                ffprobe: self.ffprobe,
            },
            retry: RetryPolicy {
                request_timeout: Duration::from_secs(self.store_request_timeout),
                ..RetryPolicy::default()
            },
            expected_bitrate: self.expected_bitrate,
            faststart,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused by clap (a value its parser refused) or by our checks after it.
    #[derive(Debug, thiserror::Error)]
    enum Refused {
        #[error(transparent)]
        Clap(#[from] clap::Error),
        #[error(transparent)]
        Usage(#[from] UsageError),
    }

    fn record_args(extra: &[&str]) -> Result<RecordArgs, Refused> {
        let mut argv = vec!["roomrec-worker", "record"];
        argv.extend_from_slice(extra);
        let Command::Record(a) = Cli::try_parse_from(argv)?.command;
        Ok(*a)
    }

    fn args(extra: &[&str]) -> Result<RecordConfig, Refused> {
        Ok(record_args(extra)?.into_config()?)
    }

    fn reporting(extra: &[&str]) -> Result<Reporting, Refused> {
        Ok(record_args(extra)?.reporting()?)
    }

    /// What a refusal says, for the checks that read it as a person would.
    fn refusal<T: std::fmt::Debug>(result: Result<T, Refused>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn report_flags_name_the_job_and_the_pod() {
        let r = reporting(&[
            "--report-job",
            "rec/job-1",
            "--report-name",
            "job-1-alice-x",
        ])
        .unwrap();
        let job = r.job.unwrap();
        assert_eq!(
            (job.namespace.as_str(), job.name.as_str()),
            ("rec", "job-1")
        );
        assert_eq!(r.name, "job-1-alice-x");
        let r = reporting(&[]).unwrap();
        assert!(r.job.is_none() && r.termination_message.is_none());
        assert!(r.metrics_address.is_none(), "metrics are off by default");
        let r = reporting(&["--metrics-address", "0.0.0.0:9090"]).unwrap();
        assert_eq!(r.metrics_address, Some("0.0.0.0:9090".parse().unwrap()));
        let e = refusal(reporting(&["--metrics-address", "9090"]));
        assert!(e.contains("--metrics-address"), "{e}");
        assert!(!r.name.is_empty(), "defaults to the hostname");
        for bad in ["job-1", "rec/", "rec/Job", "a/b/c"] {
            let e = refusal(reporting(&["--report-job", bad]));
            assert!(
                e.contains("--report-job") && e.contains("NAMESPACE/NAME"),
                "{bad}: {e}"
            );
        }
        let e = refusal(reporting(&["--report-name", " "]));
        assert!(e.contains("--report-name"), "{e}");
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("1500").unwrap(), 1500);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(matches!(parse_size("x"), Err(UsageError::NotASize(_))));
        let e = parse_size("3T").unwrap_err();
        assert!(e.to_string().contains("unknown unit"), "{e}");
        // Through clap, the message follows the flag's name.
        let e = refusal(args(&["--segment-size", "3T"]));
        assert!(
            e.contains("--segment-size") && e.contains("unknown unit"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_flag_and_the_fix() {
        assert!(refusal(args(&["--storage", "file:///tmp/x"])).contains("--source URL"));
        assert!(refusal(args(&["--source", "rtmp://h/live/a"])).contains("--storage is required"));
        let e = refusal(args(&[
            "--source",
            "rtmp://h/live/a",
            "--storage",
            "x",
            "--mode",
            "7",
        ]));
        assert!(e.contains("--mode") && e.contains("AudioMp3"), "{e}");
        let cos_without_region = args(&["--source", "rtmp://h/live/a", "--storage", "cos://b-1/p"]);
        assert!(
            matches!(
                &cos_without_region,
                Err(Refused::Usage(UsageError::Storage(StorageError::NoRegion)))
            ),
            "{cos_without_region:?}"
        );
        let e = refusal(cos_without_region);
        assert!(e.contains("--storage") && e.contains("--region"), "{e}");
        let e = refusal(args(&[
            "--trtc-sdk-app-id",
            "1400000000",
            "--trtc-user-id",
            "a",
            "--trtc-play-domain",
            "d",
            "--storage",
            "/tmp/x",
        ]));
        assert!(e.contains("--trtc-room-id"), "{e}");
        let e = refusal(args(&[
            "--source",
            "rtmp://h/live/a",
            "--storage",
            "/tmp/x",
            "--key-template",
            "{stream}.{ext}",
        ]));
        assert!(e.contains("--key-template") && e.contains("{part}"), "{e}");
    }

    #[test]
    fn messages_stay_as_they_were_worded() {
        let base = ["--source", "rtmp://h/live/a", "--storage", "/tmp/x"];
        let with = |extra: &[&str]| refusal(args(&[&base[..], extra].concat()));
        assert_eq!(
            with(&["--checkpoint-seconds", "61"]),
            "--checkpoint-seconds must be between 1 and 60"
        );
        assert_eq!(
            with(&["--idle-timeout", "0"]),
            "--idle-timeout must be at least 1 second"
        );
        assert_eq!(
            with(&["--resolve", "h"]),
            "--resolve \"h\": use HOST=ADDR:PORT"
        );
        assert_eq!(
            refusal(args(&[
                "--trtc-sdk-app-id",
                "1",
                "--trtc-room-id",
                "2",
                "--storage",
                "/tmp/x"
            ])),
            "a TRTC source needs --trtc-user-id (e.g. --trtc-user-id alice)"
        );
    }

    #[test]
    fn faststart_is_for_mp4_and_keeps_its_copy_in_the_spool_dir_by_default() {
        let base = ["--source", "rtmp://h/live/a", "--storage", "/tmp/x"];
        let with = |extra: &[&str]| args(&[&base[..], extra].concat());
        let e = refusal(with(&["--faststart"]));
        assert!(
            e.contains("--faststart") && e.contains("--mode 00") && e.contains("--mode 01"),
            "{e}"
        );
        assert!(with(&["--faststart", "--mode", "AudioMp3"]).is_err());
        assert_eq!(with(&["--mode", "02"]).unwrap().faststart, None);
        let c = with(&["--faststart", "--mode", "02", "--spool-dir", "/var/spool/r"]).unwrap();
        assert_eq!(c.faststart, Some(PathBuf::from("/var/spool/r")));
        let c = with(&[
            "--faststart",
            "--mode",
            "01",
            "--spool-dir",
            "/s",
            "--scratch-dir",
            "/x",
        ]);
        assert_eq!(c.unwrap().faststart, Some(PathBuf::from("/x")));
        let c = with(&["--faststart", "--mode", "01"]).unwrap();
        assert_eq!(c.faststart, Some(std::env::temp_dir()));
    }

    #[test]
    fn trtc_flags_build_the_relay_url_and_defaults_follow_the_heritage() {
        let c = args(&[
            "--trtc-sdk-app-id",
            "1400000000",
            "--trtc-room-id",
            "43474",
            "--trtc-str-room-id",
            "ignored",
            "--trtc-user-id",
            "alice",
            "--trtc-play-domain",
            "play.example.com",
            "--storage",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(
            c.source.url(),
            "rtmp://play.example.com/live/1400000000_43474_alice_main"
        );
        assert_eq!(c.mode, Mode::AudioMp3, "mode 00 is the heritage default");
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.reconnect_grace, c.idle_timeout);
    }

    #[test]
    fn chunks_fit_a_day_in_the_part_limit() {
        let c = args(&[
            "--source",
            "rtmp://h/live/a",
            "--storage",
            "/tmp/x",
            "--expected-bitrate",
            "8M",
        ])
        .unwrap();
        let day_bytes = (8u64 << 20) / 8 * 24 * 3600;
        assert!(
            c.chunk_size() as u64 * 9_500 >= day_bytes,
            "chunk {}",
            c.chunk_size()
        );
        assert!(c.chunk_size() >= 5 << 20);
    }

    use clap::CommandFactory;
    use proptest::prelude::*;

    /// Every `record` flag that takes a value, by its long name.
    fn value_flags() -> Vec<String> {
        let cli = Cli::command();
        let record = cli
            .get_subcommands()
            .find(|c| c.get_name() == "record")
            .expect("the record subcommand");
        record
            .get_arguments()
            .filter(|a| a.get_action().takes_values())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_value_of_any_flag_is_taken_or_refused_naming_a_flag(
            which in any::<prop::sample::Index>(),
            value in prop_oneof![".{0,40}", "[0-9kKmMgGiB.-]{0,12}", "[a-z]{1,8}://[ -~]{0,30}"],
        ) {
            let flags = value_flags();
            prop_assume!(!flags.is_empty());
            let flag = which.get(&flags);
            // A usable job, with one flag given a value a user (or a broken env) might give.
            let given = format!("{flag}={value}");
            let all = [
                "--source", "rtmp://h/live/a", "--storage", "file:///tmp/roomrec-proptest",
                given.as_str(),
            ];
            let refusal = match record_args(&all) {
                Err(e) => Some(e.to_string()),
                Ok(a) => a.reporting().err().map(|e| e.to_string())
                    .or_else(|| a.into_config().err().map(|e| e.to_string())),
            };
            if let Some(refusal) = refusal {
                prop_assert!(refusal.contains("--"), "{flag}={value:?}: {refusal}");
            }
        }
    }
}
