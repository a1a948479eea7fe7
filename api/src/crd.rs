//! The `RecordingJob` resource (`roomrec.dev/v1alpha1`): what a user asks for (spec) and what
//! happened (status). The schema, its descriptions (`kubectl explain`) and its CEL rules all come
//! from these types; `crdgen` writes them to `crds/recordingjob.yaml`.
//!
//! A job starts as soon as it is created, so the source, storage and mode are immutable from
//! creation: changing what is being recorded halfway would split one recording across two
//! meanings.

pub use crate::mode::Mode;
pub use crate::relay::{PlayProtocol, StreamKind};
pub use crate::state::{FileState, StopReason, WorkerState};
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A recording of one or more people (or one stream) into object storage.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roomrec.dev",
    version = "v1alpha1",
    kind = "RecordingJob",
    namespaced,
    shortname = "rj",
    status = "RecordingJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".status.mode"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".status.users"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.fileCount"}"#,
    printcolumn = r#"{"name":"Recorded","type":"string","jsonPath":".status.recorded"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.stopReason"}"#
)]
// Per-field `self == oldSelf` rules do not run when a field is removed; these do.
#[x_kube(validation = Rule::new("!has(oldSelf.mode) || has(self.mode)").message("spec.mode cannot be removed once set: delete the RecordingJob and create a new one"))]
#[x_kube(validation = Rule::new("!has(oldSelf.storage) || has(self.storage)").message("spec.storage cannot be removed once set: delete the RecordingJob and create a new one"))]
#[x_kube(validation = Rule::new("!self.faststart || (has(self.mode) && !(self.mode in ['AudioMp3', '00']))").message("spec.faststart makes classic MP4 files: set spec.mode to VideoMp4 or AudioVideoMp4 (not AudioMp3, and not left to the operator's default), or leave faststart out"))]
#[serde(rename_all = "camelCase")]
pub struct RecordingJobSpec {
    /// What to record: people in a TRTC room (`trtc`) or any stream URL (`url`). Set exactly one.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source cannot change after the job is created: delete the RecordingJob and create a new one"))]
    pub source: Source,

    /// AudioMp3 (MP3, audio only), VideoMp4 (MP4, video only) or AudioVideoMp4 (MP4), or the
    /// heritage codes 00, 01 and 02 for the same (status.mode shows the name). Left out: the
    /// operator fills in its default (chart value `worker.defaults.mode`, AudioMp3 as the
    /// heritage template did). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.mode cannot change after the job is created: delete the RecordingJob and create a new one"))]
    pub mode: Option<Mode>,

    /// Where the files go: Tencent COS (`cos`), an S3-compatible store (`s3`) or a volume
    /// (`volume`). Set exactly one. Left out: the operator fills in its default storage (chart
    /// value `worker.defaults.storage`); without one the job stays Pending. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.storage cannot change after the job is created: delete the RecordingJob and create a new one"))]
    pub storage: Option<Storage>,

    /// Where to POST the result when the job ends (the heritage payload: SdkAppId, RoomId,
    /// UserId, StrRoomId, Files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,

    /// Stop a person's recording after this many seconds without media from them (also when
    /// they never appear). Left out: the operator's default (chart value
    /// `worker.defaults.idleTimeoutSeconds`, 300 as the heritage template did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 5 && self <= 86400").message("spec.idleTimeoutSeconds must be between 5 and 86400 (one day)"))]
    pub idle_timeout_seconds: Option<u32>,

    /// Stop once this many seconds of media are recorded per person (across worker restarts).
    /// Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 604800").message("spec.maxDurationSeconds must be between 1 and 604800 (seven days)"))]
    pub max_duration_seconds: Option<u32>,

    /// Split recordings into numbered parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,

    /// MP4 modes only: store every file as a classic MP4 (moov first, not fragmented) for
    /// players and editors that need one. Each part still records as fragmented MP4 (a crash
    /// loses no more) and is remuxed when it ends, which needs free disk on the node of up to
    /// twice the largest part (bound it with segment). A part that cannot be converted stays
    /// fragmented MP4 and its file's message says why. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.faststart cannot change after the job is created: delete the RecordingJob and create a new one"))]
    pub faststart: bool,

    /// Set to true to stop the recording gracefully: the workers finish their files and the job
    /// ends as Stopped. Cannot be set back to false.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!oldSelf || self").message("spec.stop cannot go back to false: a stopped recording does not restart; create a new RecordingJob"))]
    pub stop: bool,

    /// Adjustments to the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerOverrides>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.trtc) != has(self.url)").message("spec.source: set exactly one of trtc (people in a TRTC room) or url (a stream)"))]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// People in a TRTC room, read from the application's relay to CDN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trtc: Option<TrtcSource>,
    /// Any stream ffmpeg reads: rtmp://, rtmps://, srt://, rtsp://, http(s):// FLV or HLS. Its
    /// files carry the stream's name (the URL's last path segment) as their user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^(rtmps?|srt|rtsps?|https?)://[^/]+')").message("spec.source.url must be an rtmp://, rtmps://, srt://, rtsp://, rtsps://, http:// or https:// URL with a host"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.roomId) || has(self.strRoomId)").message("spec.source.trtc: set roomId (a number) or strRoomId (a string); roomId wins when both are set"))]
#[x_kube(validation = Rule::new("!(has(self.userSigSecret) && has(self.secretKeySecret))").message("spec.source.trtc: set userSigSecret or secretKeySecret, not both"))]
#[x_kube(validation = Rule::new("self.relay != 'start' || has(self.pushDomain)").message("spec.source.trtc.pushDomain is required with relay: start (the CSS push domain the relay pushes to)"))]
#[x_kube(validation = Rule::new("self.relay != 'start' || has(self.userSigSecret) || has(self.secretKeySecret)").message("spec.source.trtc: relay: start needs the recording identity's UserSig (userSigSecret) or the application's secret key to make one (secretKeySecret)"))]
#[x_kube(validation = Rule::new("has(self.wholeRoom) != (has(self.record) && self.record.size() > 0)").message("spec.source.trtc: set record (the people to record, by user id) or wholeRoom (every anchor who publishes), one of the two"))]
#[x_kube(validation = Rule::new("self.relay != 'start' || !has(self.userSigSecret) || (!has(self.wholeRoom) && self.record.size() == 1)").message("spec.source.trtc.userSigSecret signs one identity, but relay: start with several people (or wholeRoom) needs one agent per person: record one person, or give secretKeySecret so roomrec makes a UserSig for each agent"))]
#[x_kube(validation = Rule::new("!has(self.wholeRoom) || !has(self.startOn) || self.startOn != 'create'").message("spec.source.trtc.startOn: create cannot go with wholeRoom: the room's people are known only from its events (leave startOn out)"))]
#[x_kube(validation = Rule::new("self.relay != 'start' || !has(self.legacyBizId)").message("spec.source.trtc.legacyBizId is for playing an existing relay; relay: start pushes under the standard stream id"))]
#[serde(rename_all = "camelCase")]
pub struct TrtcSource {
    /// The TRTC application (SdkAppId).
    #[x_kube(validation = Rule::new("self >= 1400000000 && self <= 1699999999").message("spec.source.trtc.sdkAppId must be a TRTC SdkAppId (1400000000 to 1699999999)"))]
    pub sdk_app_id: u64,
    /// Numeric room id; wins over strRoomId when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 4294967294").message("spec.source.trtc.roomId must be between 1 and 4294967294"))]
    pub room_id: Option<u64>,
    /// String room id (up to 64 letters, digits and the symbols TRTC allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9 !#$%&()+\\\\-:;<=.>?@\\\\[\\\\]^_{}|~,]{1,64}$')").message("spec.source.trtc.strRoomId must be 1 to 64 characters of letters, digits and TRTC's allowed symbols"))]
    #[schemars(length(max = 64))]
    pub str_room_id: Option<String>,
    /// The recording identity (the UserId the heritage callback reports).
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]{1,32}$')").message("spec.source.trtc.userId must be 1 to 32 letters, digits, '_' or '-'"))]
    #[schemars(length(max = 32))]
    pub user_id: String,
    /// The people to record, by TRTC user id: one worker and one set of files each (at most
    /// 16; a whole room: wholeRoom). Leave out with wholeRoom.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(u, u.matches('^[A-Za-z0-9_-]{1,32}$'))").message("spec.source.trtc.record: each user id must be 1 to 32 letters, digits, '_' or '-'"))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(v, v == u))").message("spec.source.trtc.record lists a user id twice"))]
    #[schemars(length(max = 16), inner(length(max = 32)))]
    pub record: Vec<String>,
    /// Record every anchor of the room instead of a named list: a person gets a worker (and a
    /// relay with relay: start) when they start publishing, their files close when they stop
    /// or leave, and the job ends when the room is dismissed, when nobody has published for
    /// idleTimeoutSeconds, on spec.stop, or after maxDurationSeconds. Needs the operator's room
    /// events (chart value trtc.events). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source.trtc.wholeRoom cannot change after the job is created"))]
    pub whole_room: Option<WholeRoom>,
    /// When a named person's worker starts: create (default: at once; the worker waits up to
    /// idleTimeoutSeconds for their stream) or publish (when the room's events say they
    /// publish; needs the operator's room events). TRTC sends no event for someone who was
    /// already publishing, so publish relies on the operator having seen their start (it
    /// remembers the rooms' publishers while it runs). wholeRoom always starts on publish.
    #[serde(default, skip_serializing_if = "StartOn::is_default")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source.trtc.startOn cannot change after the job is created"))]
    pub start_on: StartOn,
    /// Playback domain of the application's relay to CDN (TRTC console → Relay to CDN).
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9.-]+(:[0-9]{1,5})?$')").message("spec.source.trtc.playDomain must be a host name (optionally with :port), without a scheme or path"))]
    #[schemars(length(max = 253))]
    pub play_domain: String,
    /// How to read the relay: rtmp (default), flv (HTTP-FLV) or hls.
    #[serde(default)]
    pub protocol: PlayProtocol,
    /// main (camera and microphone, the default) or aux (screen share).
    #[serde(default)]
    pub stream: StreamKind,
    /// For applications created before 2020-01-09: the bizid of the legacy MD5 stream ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_biz_id: Option<u64>,
    /// How the media leaves the room. existing (default): the application's relay to CDN is
    /// switched on in the TRTC console; roomrec plays it from playDomain. start: roomrec
    /// starts one server-side relay per person (StartPublishCdnStream, pass-through, no
    /// transcoding) whose agent joins the room as the recording identity, pushes to pushDomain
    /// and is stopped when the person's recording ends; needs userSigSecret or
    /// secretKeySecret and the operator's TRTC API credentials (chart value trtc.api).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source.trtc.relay cannot change after the job is created"))]
    pub relay: RelayMode,
    /// relay: start only: the Cloud Streaming Services push domain the relay pushes to (its
    /// streams play from playDomain), host name with an optional :port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9.-]+(:[0-9]{1,5})?$')").message("spec.source.trtc.pushDomain must be a host name (optionally with :port), without a scheme or path"))]
    #[schemars(length(max = 253))]
    pub push_domain: Option<String>,
    /// relay: start only: the push domain's authentication key (CSS console → domain → push
    /// authentication), from a Secret: each push URL carries txSecret/txTime made with it.
    /// Leave out for a push domain without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_key_secret: Option<SecretKeyRef>,
    /// The recording identity's UserSig, from a Secret. Only needed when roomrec itself asks
    /// TRTC to start the relay; playing an existing relay needs none. The operator checks that
    /// the key exists and never copies the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_sig_secret: Option<SecretKeyRef>,
    /// The application's secret key, from a Secret, to generate UserSigs instead of
    /// userSigSecret. Same use and checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_secret: Option<SecretKeyRef>,
}

impl TrtcSource {
    /// The room as TRTC's events name it: roomId as text (it wins), else strRoomId.
    pub fn room_text(&self) -> Option<String> {
        self.room_id
            .map(|id| id.to_string())
            .or_else(|| self.str_room_id.clone())
    }

    /// People start when the room's events say they publish (wholeRoom, startOn: publish).
    pub fn starts_on_publish(&self) -> bool {
        self.whole_room.is_some() || self.start_on == StartOn::Publish
    }
}

/// Recording every anchor of a room.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WholeRoom {
    /// Also record screen shares (events 205/206): each as a person of its own, `{userId}/aux`.
    #[serde(default)]
    pub screen_share: bool,
    /// The most people (camera and screen share each count) recorded by this job; those who
    /// publish beyond it are not recorded and a Warning event names them. Left out: the
    /// operator's limit (chart value trtc.events.maxPeoplePerJob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 256").message("spec.source.trtc.wholeRoom.maxPeople must be between 1 and 256"))]
    pub max_people: Option<u32>,
}

/// When a named person's worker starts.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StartOn {
    /// At once; the worker waits for the stream.
    #[default]
    Create,
    /// When the room's events say the person publishes.
    Publish,
}

impl StartOn {
    fn is_default(&self) -> bool {
        *self == StartOn::Create
    }
}

/// How a TRTC person's media reaches the worker: the application's relay to CDN, or a relay
/// roomrec starts.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    #[default]
    Existing,
    Start,
}

/// A key of a Secret in the job's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("(has(self.cos) ? 1 : 0) + (has(self.s3) ? 1 : 0) + (has(self.volume) ? 1 : 0) == 1").message("spec.storage: set exactly one of cos, s3 or volume"))]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Tencent Cloud Object Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cos: Option<CosStorage>,
    /// An S3-compatible store (AWS S3, MinIO, Ceph, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// A PersistentVolumeClaim in the job's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeStorage>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CosStorage {
    /// The bucket's region, e.g. ap-shanghai.
    #[x_kube(validation = Rule::new("self.matches('^[a-z]+-[a-z]+(-[a-z0-9]+)*$')").message("spec.storage.cos.region must be a COS region such as ap-shanghai"))]
    #[schemars(length(max = 64))]
    pub region: String,
    /// The bucket, with its APPID suffix, e.g. class-1250000000.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9-]*-[0-9]+$')").message("spec.storage.cos.bucket must be the full bucket name ending in the APPID, e.g. class-1250000000"))]
    #[schemars(length(max = 64))]
    pub bucket: String,
    /// Folder for the files, e.g. /trtc (default: the bucket's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub path: Option<String>,
    /// A Secret with keys secretId and secretKey (optionally sessionToken). Unset: the worker
    /// uses its pod's own identity (environment variables such as TENCENTCLOUD_SECRET_ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub credentials_secret: Option<String>,
    /// A private or accelerated endpoint instead of https://cos.{region}.myqcloud.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+/?$')").message("spec.storage.cos.endpoint must be http(s)://host[:port]"))]
    #[schemars(length(max = 512))]
    pub endpoint: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// The bucket.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("spec.storage.s3.bucket must be a valid bucket name (3 to 63 lowercase letters, digits, '.' or '-')"))]
    #[schemars(length(max = 63))]
    pub bucket: String,
    /// Folder for the files (default: the bucket's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub path: Option<String>,
    /// The region (default us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// The service endpoint, e.g. https://minio.example.com (default: AWS S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+/?$')").message("spec.storage.s3.endpoint must be http(s)://host[:port]"))]
    #[schemars(length(max = 512))]
    pub endpoint: Option<String>,
    /// Use virtual-hosted URLs (bucket.host) instead of path-style.
    #[serde(default)]
    pub virtual_host: bool,
    /// A Secret with keys accessKeyId and secretAccessKey (optionally sessionToken). Unset: the
    /// worker uses its pod's own identity (AWS_* environment, web identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub credentials_secret: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStorage {
    /// A PersistentVolumeClaim in the job's namespace (ReadWriteMany when several people are
    /// recorded at once).
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Folder within the volume (default: its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("spec.storage.volume.path must be relative and must not contain '..'"))]
    #[schemars(length(max = 512))]
    pub path: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    /// The URL that receives the result as a JSON POST.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("spec.callback.url must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// A Secret key whose value signs each POST: header X-Roomrec-Signature is
    /// t={unix seconds},v1={hex HMAC-SHA256(value, "{t}.{body}")}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.durationSeconds) || has(self.sizeBytes)").message("spec.segment: set durationSeconds, sizeBytes or both"))]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Start a new part after this many seconds of media (at least 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 86400").message("spec.segment.durationSeconds must be between 10 and 86400"))]
    pub duration_seconds: Option<u32>,
    /// Start a new part before a part exceeds this many bytes (at least 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1048576").message("spec.segment.sizeBytes must be at least 1048576 (1 MiB)"))]
    pub size_bytes: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerOverrides {
    /// The worker image (default: the operator's --worker-image). Only an image the chart allows
    /// (worker.overrides.allowedImages); with the chart's admission policy, only set by someone
    /// who may create pods in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub image: Option<String>,
    /// CPU and memory for each worker (default: the operator's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Run the workers only on nodes with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Let the workers run on nodes with these taints (e.g. nodes kept for recording).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// A ServiceAccount of your own for the workers (e.g. for cloud identity); default: one the
    /// operator creates per job. Either way the operator grants it only the right to report
    /// this job's files. Only where the chart allows it (worker.overrides.allowServiceAccount);
    /// with the chart's admission policy, only set by someone who may create pods in the
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
}

/// What happened. `files` is written by the workers (each with its own field manager); the
/// rest by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingJobStatus {
    /// Pending → Recording → Finalizing → Succeeded | Failed | Stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The mode in use, by name: AudioMp3, VideoMp4 or AudioVideoMp4 (spec.mode may give a
    /// heritage code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub mode: Option<Mode>,
    /// Recording (a worker records), Finished (the job ended: reason Succeeded, Failed or
    /// Stopped, and why), Valid (False while a referenced Secret is missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The most recently started worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_pod: Option<String>,
    /// When the first worker started (also the `{start}` of every file's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why the job ended: source-ended, idle-timeout, max-duration, stop-requested, deleted,
    /// removed, room-idle, room-dismissed, failed (the Finished condition's message says more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub stop_reason: Option<StopReason>,
    /// Worker pods started, all people together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The recorded people, comma-separated (for kubectl get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<String>,
    /// Stored files (for kubectl get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_count: Option<u32>,
    /// Media recorded, all files together, e.g. 1h2m3s (for kubectl get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    /// wholeRoom: people who published beyond the job's limit (maxPeople) and are not
    /// recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_recorded: Vec<String>,
    /// One entry per person recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["userId".into()]))]
    pub workers: Vec<WorkerStatus>,
    /// One entry per file (part), written by the worker that records it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["url".into()]))]
    pub files: Vec<FileStatus>,
    /// Delivery of the end-of-job callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackStatus>,
    /// What TRTC's room events said about this job's room (written by the operator's room
    /// event receiver; the controller decides from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomStatus>,
}

/// Room events that end recordings, as they arrived (the same event twice writes the same).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatus {
    /// When the room was dismissed (event 102): every recording of the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissed_at: Option<String>,
    /// Agents (recording identities) that left the room (event 104), by UserId.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agent_exits: BTreeMap<String, AgentExit>,
    /// Who publishes in the room (events 201 to 206 and 104), by person: `{userId}` for the
    /// camera and microphone, `{userId}/aux` for a screen share. Kept for jobs that start on
    /// publish (wholeRoom, startOn: publish).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub people: BTreeMap<String, RoomPerson>,
}

/// One person's publishing, as the room's events told it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomPerson {
    /// The order in which people first published, from 0: stable, names their worker pods.
    pub index: u32,
    /// Their TRTC user id.
    pub user_id: String,
    /// main (camera and microphone) or aux (screen share).
    #[serde(default)]
    pub stream: StreamKind,
    /// Counts the times they started publishing: a worker records one session.
    pub session: u32,
    /// Whether any of their tracks is on.
    pub publishing: bool,
    /// When the current (or last) session started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// When they last stopped publishing or left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Each track (video, audio, screen): on or off, and the event time (ms) that said so;
    /// an older event (TRTC's retries may arrive late) changes nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracks: BTreeMap<String, TrackState>,
}

/// A track's last known state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackState {
    /// The track is published.
    pub publishing: bool,
    /// The event's EventMsTs.
    pub at_ms: i64,
}

/// An agent's exit from the room.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentExit {
    /// TRTC's exit reason: 1 normal, 2 timeout, 3 removed (RemoveUser), 4 link-mic cancelled,
    /// 5 force-killed.
    pub reason: u32,
    /// When it left (the event's EventTs).
    pub at: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    Pending,
    Recording,
    Finalizing,
    Succeeded,
    Failed,
    Stopped,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Recording,
        Phase::Finalizing,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Stopped,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Stopped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Recording => "Recording",
            Phase::Finalizing => "Finalizing",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Stopped => "Stopped",
        }
    }
}

/// One recorded person's worker history.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// The person (for a url source: the stream's name).
    pub user_id: String,
    /// Pending, Recording, Done or Failed.
    #[schemars(with = "String")]
    pub state: WorkerState,
    /// Worker pods started for this person.
    pub attempts: u32,
    /// The person's latest worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Why the person's recording ended (as the job's stopReason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub stop_reason: Option<StopReason>,
    /// What went wrong, or what is being waited for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// relay: start: the relay roomrec started for this person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
    /// Recording on room events: the publishing session (status.room.people[].session) the
    /// latest worker records; a later session reopens the person with a new worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
}

/// A relay roomrec started (StartPublishCdnStream), kept until it is stopped so that no relay
/// is ever lost track of.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayStatus {
    /// TRTC's TaskId of the relay.
    pub task_id: String,
    /// The agent's UserId in the room (the recording identity).
    pub agent_user_id: String,
    /// When it was started.
    pub started_at: String,
    /// When roomrec stopped it (StopPublishCdnStream answered, or TRTC had ended it already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
}

/// One file (part) of a recording.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStatus {
    /// The canonical URL, e.g. https://{bucket}.cos.{region}.myqcloud.com/{key}.
    pub url: String,
    /// Whose recording this is.
    pub user_id: String,
    /// recording (still being written), succeeded or failed.
    #[schemars(with = "String")]
    pub status: FileState,
    /// Why it failed, or how it was stored (e.g. rebuilt from checkpoints).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The part number, from 1 (also in the file's name).
    #[serde(default)]
    pub part: u32,
    /// Size, so far while recording.
    #[serde(default)]
    pub bytes: u64,
    /// Media duration, so far while recording.
    #[serde(default)]
    pub duration_seconds: f64,
    /// When the part's first media arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the part was closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The worker pod that wrote this entry last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackStatus {
    /// POSTs made.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    /// Set once the receiver answered 2xx; it is never sent again after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// The last failure (status and body, or the connection error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Delivery stopped without success after the retry budget.
    #[serde(default)]
    pub gave_up: bool,
}
