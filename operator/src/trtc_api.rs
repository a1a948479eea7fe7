//! Client of the TRTC server API (`trtc.tencentcloudapi.com`, version 2019-07-22), signed with
//! TC3-HMAC-SHA256: StartPublishCdnStream / StopPublishCdnStream (a server-side agent relays one
//! user's stream to RTMP), RemoveUser(ByStrRoomId) and DismissRoom(ByStrRoomId).
//!
//! Each call is a typed request struct serialised with Tencent's PascalCase field names.
//! Tencent answers `{"Response": {..., "RequestId": "..."}}` or `{"Response": {"Error": {"Code":
//! "...", "Message": "..."}, "RequestId": "..."}}`; an error becomes a [`TrtcApiError`] that
//! keeps the code, message and RequestId and says whether a retry can help. Only idempotent calls
//! (Stop*, RemoveUser*, Dismiss*: repeating them is harmless) are retried, a bounded number of
//! times with a doubling backoff; StartPublishCdnStream never is (a second agent could start).
//!
//! The SecretId and SecretKey are [`Secret`]s: `Debug` prints `***`, and neither appears in an
//! error or a log line.

use roomrec_api::trtc::tc3::{Secret, Tc3Signer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;

/// Tencent's endpoint for the TRTC API (nearest region).
pub const DEFAULT_ENDPOINT: &str = "https://trtc.tencentcloudapi.com";
/// The TRTC API version these calls belong to.
pub const API_VERSION: &str = "2019-07-22";
/// The TC3 service name.
pub const SERVICE: &str = "trtc";

/// Where and as whom to call the TRTC API.
#[derive(Debug, Clone)]
pub struct TrtcApiConfig {
    /// Base URL, default [`DEFAULT_ENDPOINT`] (a stand-in's `http://127.0.0.1:PORT` in tests).
    pub endpoint: String,
    /// `X-TC-Region`: ap-beijing, ap-guangzhou, ap-singapore, ...
    pub region: String,
    /// The API credential's SecretId.
    pub secret_id: Secret,
    /// The API credential's SecretKey.
    pub secret_key: Secret,
    /// `X-TC-Language` (zh-CN or en-US), when set.
    pub language: Option<String>,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Attempts of an idempotent call (1 = no retry). Non-idempotent calls get one.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles, at most `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl TrtcApiConfig {
    /// Tencent's endpoint, 10 s per request, 3 attempts of idempotent calls 0.5 s then 1 s apart.
    pub fn new(secret_id: Secret, secret_key: Secret, region: &str) -> Self {
        TrtcApiConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            region: region.to_string(),
            secret_id,
            secret_key,
            language: None,
            timeout: Duration::from_secs(10),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why a TRTC API call failed. No variant holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrtcApiError {
    /// Tencent answered with an error.
    #[error(
        "TRTC {action} failed: {code}: {message} (RequestId {request_id}; {})",
        if *retryable { "a retry may help" } else { "a retry will not help" }
    )]
    Api {
        action: &'static str,
        code: String,
        message: String,
        request_id: String,
        retryable: bool,
    },
    /// No answer: connection refused or reset, timeout, ...
    #[error("TRTC {action}: no answer: {message} (a retry may help)")]
    Transport {
        action: &'static str,
        message: String,
    },
    /// An HTTP error status without Tencent's JSON error.
    #[error("TRTC {action}: HTTP status {status}: {body}")]
    Http {
        action: &'static str,
        status: u16,
        body: String,
    },
    /// A success status whose body is not the expected answer.
    #[error("TRTC {action}: unexpected answer: {message}")]
    BadResponse {
        action: &'static str,
        message: String,
    },
    /// Refused before sending: Tencent would refuse it too.
    #[error("TRTC {action}: invalid request, not sent: {message}")]
    InvalidRequest {
        action: &'static str,
        message: String,
    },
    /// The client cannot be built (bad endpoint, ...).
    #[error("TRTC API client: {0}")]
    Config(String),
}

impl TrtcApiError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            TrtcApiError::Api { retryable, .. } => *retryable,
            TrtcApiError::Transport { .. } => true,
            TrtcApiError::Http { status, .. } => *status >= 500 || *status == 429,
            TrtcApiError::BadResponse { .. }
            | TrtcApiError::InvalidRequest { .. }
            | TrtcApiError::Config(_) => false,
        }
    }

    /// Tencent's error code, for [`TrtcApiError::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            TrtcApiError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Tencent's RequestId, for [`TrtcApiError::Api`].
    pub fn request_id(&self) -> Option<&str> {
        match self {
            TrtcApiError::Api { request_id, .. } => Some(request_id),
            _ => None,
        }
    }
}

/// Whether a retry can help with Tencent's error `code`: internal errors, rate limits, an
/// unavailable service and timeouts can pass; authentication, parameter, missing-resource and
/// permission errors (and any code not known to pass) cannot.
pub fn is_retryable_code(code: &str) -> bool {
    let class = code.split('.').next().unwrap_or(code);
    match class {
        "InternalError" | "RequestLimitExceeded" | "ServiceUnavailable" => true,
        "FailedOperation" | "ResourceUnavailable" => {
            let lower = code.to_ascii_lowercase();
            lower.contains("timeout") || lower.contains("timedout")
        }
        _ => false,
    }
}

/// A TRTC API action: its request body, its answer, and whether repeating it is harmless.
pub trait TrtcRequest: Serialize {
    /// `X-TC-Action`.
    const ACTION: &'static str;
    /// Repeating the call is harmless, so failures that may pass are retried.
    const IDEMPOTENT: bool;
    /// The fields of `Response` on success.
    type Response: DeserializeOwned;
    /// Refuses what Tencent would refuse, before sending.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How a room id is written: `RoomIdType` 0 (integer) or 1 (string) in StartPublishCdnStream
/// (the reverse of CreateCloudRecording's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomIdType {
    /// A numeric room id, sent as its decimal string.
    Integer,
    /// A string room id.
    String,
}

impl Serialize for RoomIdType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(match self {
            RoomIdType::Integer => 0,
            RoomIdType::String => 1,
        })
    }
}

/// Which of a user's streams: `StreamType` 0 (camera and microphone) or 1 (screen share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    /// Camera and microphone.
    Main,
    /// Screen share.
    Aux,
}

impl Serialize for StreamType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(match self {
            StreamType::Main => 0,
            StreamType::Aux => 1,
        })
    }
}

fn bool_as_int<S: Serializer>(value: &bool, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u8(u8::from(*value))
}

/// The server-side agent that joins the room (`AgentParams`).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentParams {
    /// The agent's user id (appears in the room's user list).
    pub user_id: String,
    /// The agent's UserSig.
    pub user_sig: String,
    /// Seconds without any anchor before the task ends (5 to 86400; Tencent's default 30).
    pub max_idle_time: u32,
}

impl std::fmt::Debug for AgentParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentParams")
            .field("user_id", &self.user_id)
            .field("user_sig", &"***")
            .field("max_idle_time", &self.max_idle_time)
            .finish()
    }
}

/// `AudioEncode`: required even for pass-through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AudioEncode {
    /// Hz, e.g. 48000.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channel: u32,
    /// kbit/s, e.g. 64.
    pub bit_rate: u32,
    /// 0 LC-AAC, 1 HE-AAC, 2 HE-AACv2; left out: Tencent's default (LC-AAC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<u32>,
}

/// `AudioParams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AudioParams {
    pub audio_encode: AudioEncode,
}

/// `UserInfo`: the user whose stream is relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserInfo {
    pub user_id: String,
    pub room_id: String,
    pub room_id_type: RoomIdType,
}

/// `UserMediaStream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserMediaStream {
    pub user_info: UserInfo,
    pub stream_type: StreamType,
}

/// `SingleSubscribeParams`: the one stream a pass-through task relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SingleSubscribeParams {
    pub user_media_stream: UserMediaStream,
}

/// One `PublishCdnParams` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishCdnParam {
    /// `rtmp://...`, with its txSecret/txTime when the domain authenticates.
    pub publish_cdn_url: String,
    /// `IsTencentCdn`: 1 for a CSS push domain, 0 for any other RTMP server.
    #[serde(serialize_with = "bool_as_int")]
    pub is_tencent_cdn: bool,
}

/// StartPublishCdnStream: an agent joins the room and pushes one user's stream to up to ten
/// RTMP URLs. Not idempotent: never retried automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartPublishCdnStreamRequest {
    pub sdk_app_id: u64,
    /// The room id as a string, also for integer rooms.
    pub room_id: String,
    pub room_id_type: RoomIdType,
    pub agent_params: AgentParams,
    /// 0 = pass-through (needs `single_subscribe_params`), 1 = transcoded.
    pub with_transcoding: u32,
    pub audio_params: AudioParams,
    pub single_subscribe_params: SingleSubscribeParams,
    pub publish_cdn_params: Vec<PublishCdnParam>,
}

/// StartPublishCdnStream's answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartPublishCdnStreamResponse {
    /// The task, for StopPublishCdnStream.
    pub task_id: String,
    pub request_id: String,
}

fn check_room(room_id: &str, room_id_type: RoomIdType, what: &str) -> Result<(), String> {
    if room_id.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if room_id_type == RoomIdType::Integer && room_id.parse::<u32>().is_err() {
        return Err(format!(
            "{what} {room_id:?} is not an integer room id (RoomIdType 0)"
        ));
    }
    Ok(())
}

impl TrtcRequest for StartPublishCdnStreamRequest {
    const ACTION: &'static str = "StartPublishCdnStream";
    const IDEMPOTENT: bool = false;
    type Response = StartPublishCdnStreamResponse;

    fn validate(&self) -> Result<(), String> {
        check_room(&self.room_id, self.room_id_type, "RoomId")?;
        let user = &self.single_subscribe_params.user_media_stream.user_info;
        check_room(&user.room_id, user.room_id_type, "UserInfo.RoomId")?;
        if self.agent_params.user_id.is_empty() || self.agent_params.user_sig.is_empty() {
            return Err("AgentParams needs UserId and UserSig".into());
        }
        if !(5..=86400).contains(&self.agent_params.max_idle_time) {
            return Err(format!(
                "AgentParams.MaxIdleTime {} is outside 5..=86400",
                self.agent_params.max_idle_time
            ));
        }
        if self.with_transcoding > 1 {
            return Err(format!(
                "WithTranscoding {} is neither 0 nor 1",
                self.with_transcoding
            ));
        }
        if !(1..=10).contains(&self.publish_cdn_params.len()) {
            return Err(format!(
                "{} PublishCdnParams: 1 to 10 are allowed",
                self.publish_cdn_params.len()
            ));
        }
        if let Some(bad) = self
            .publish_cdn_params
            .iter()
            .find(|p| !p.publish_cdn_url.starts_with("rtmp://"))
        {
            return Err(format!(
                "PublishCdnUrl {:?} is not rtmp://",
                // The URL's query may hold a txSecret: show only the part before it.
                bad.publish_cdn_url.split('?').next().unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// StopPublishCdnStream: ends a relay task. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StopPublishCdnStreamRequest {
    pub sdk_app_id: u64,
    pub task_id: String,
}

/// StopPublishCdnStream's answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StopPublishCdnStreamResponse {
    #[serde(default)]
    pub task_id: Option<String>,
    pub request_id: String,
}

impl TrtcRequest for StopPublishCdnStreamRequest {
    const ACTION: &'static str = "StopPublishCdnStream";
    const IDEMPOTENT: bool = true;
    type Response = StopPublishCdnStreamResponse;

    fn validate(&self) -> Result<(), String> {
        if self.task_id.is_empty() {
            return Err("TaskId is empty".into());
        }
        Ok(())
    }
}

/// An answer that holds only the RequestId.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ack {
    pub request_id: String,
}

fn check_user_ids(user_ids: &[String]) -> Result<(), String> {
    if !(1..=10).contains(&user_ids.len()) {
        return Err(format!("{} UserIds: 1 to 10 are allowed", user_ids.len()));
    }
    if user_ids.iter().any(String::is_empty) {
        return Err("an empty UserId".into());
    }
    Ok(())
}

/// RemoveUser: removes users from an integer room. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoveUserRequest {
    pub sdk_app_id: u64,
    pub room_id: u32,
    /// At most 10.
    pub user_ids: Vec<String>,
}

impl TrtcRequest for RemoveUserRequest {
    const ACTION: &'static str = "RemoveUser";
    const IDEMPOTENT: bool = true;
    type Response = Ack;

    fn validate(&self) -> Result<(), String> {
        check_user_ids(&self.user_ids)
    }
}

/// RemoveUserByStrRoomId: removes users from a string room. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoveUserByStrRoomIdRequest {
    pub sdk_app_id: u64,
    pub room_id: String,
    /// At most 10.
    pub user_ids: Vec<String>,
}

impl TrtcRequest for RemoveUserByStrRoomIdRequest {
    const ACTION: &'static str = "RemoveUserByStrRoomId";
    const IDEMPOTENT: bool = true;
    type Response = Ack;

    fn validate(&self) -> Result<(), String> {
        check_room(&self.room_id, RoomIdType::String, "RoomId")?;
        check_user_ids(&self.user_ids)
    }
}

/// DismissRoom: ends an integer room, removing everyone. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DismissRoomRequest {
    pub sdk_app_id: u64,
    pub room_id: u32,
}

impl TrtcRequest for DismissRoomRequest {
    const ACTION: &'static str = "DismissRoom";
    const IDEMPOTENT: bool = true;
    type Response = Ack;
}

/// DismissRoomByStrRoomId: ends a string room. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DismissRoomByStrRoomIdRequest {
    pub sdk_app_id: u64,
    pub room_id: String,
}

impl TrtcRequest for DismissRoomByStrRoomIdRequest {
    const ACTION: &'static str = "DismissRoomByStrRoomId";
    const IDEMPOTENT: bool = true;
    type Response = Ack;

    fn validate(&self) -> Result<(), String> {
        check_room(&self.room_id, RoomIdType::String, "RoomId")
    }
}

/// A TRTC API client.
#[derive(Debug, Clone)]
pub struct TrtcClient {
    http: reqwest::Client,
    url: reqwest::Url,
    signer: Tc3Signer,
    config: TrtcApiConfig,
}

impl TrtcClient {
    /// A client for `config`; fails on an endpoint that is not an http(s) URL with a host.
    pub fn new(config: TrtcApiConfig) -> Result<Self, TrtcApiError> {
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| TrtcApiError::Config(format!("endpoint {:?}: {e}", config.endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TrtcApiError::Config(format!(
                "endpoint {:?} is not http(s)",
                config.endpoint
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(TrtcApiError::Config(format!(
                "endpoint {:?} has no host",
                config.endpoint
            )));
        };
        // The Host header as sent: with the port when it is not the scheme's default.
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let mut signer = Tc3Signer::new(
            config.secret_id.clone(),
            config.secret_key.clone(),
            SERVICE,
            &host,
            API_VERSION,
        )
        .with_region(&config.region);
        if let Some(language) = &config.language {
            signer = signer.with_language(language);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| TrtcApiError::Config(format!("HTTP client: {e}")))?;
        Ok(TrtcClient {
            http,
            url,
            signer,
            config,
        })
    }

    /// StartPublishCdnStream (not retried).
    pub async fn start_publish_cdn_stream(
        &self,
        request: &StartPublishCdnStreamRequest,
    ) -> Result<StartPublishCdnStreamResponse, TrtcApiError> {
        self.call(request).await
    }

    /// StopPublishCdnStream (retried).
    pub async fn stop_publish_cdn_stream(
        &self,
        request: &StopPublishCdnStreamRequest,
    ) -> Result<StopPublishCdnStreamResponse, TrtcApiError> {
        self.call(request).await
    }

    /// RemoveUser (retried).
    pub async fn remove_user(&self, request: &RemoveUserRequest) -> Result<Ack, TrtcApiError> {
        self.call(request).await
    }

    /// RemoveUserByStrRoomId (retried).
    pub async fn remove_user_by_str_room_id(
        &self,
        request: &RemoveUserByStrRoomIdRequest,
    ) -> Result<Ack, TrtcApiError> {
        self.call(request).await
    }

    /// DismissRoom (retried).
    pub async fn dismiss_room(&self, request: &DismissRoomRequest) -> Result<Ack, TrtcApiError> {
        self.call(request).await
    }

    /// DismissRoomByStrRoomId (retried).
    pub async fn dismiss_room_by_str_room_id(
        &self,
        request: &DismissRoomByStrRoomIdRequest,
    ) -> Result<Ack, TrtcApiError> {
        self.call(request).await
    }

    /// Validates, signs and sends `request`; retries an idempotent one while the failure may
    /// pass, at most `max_attempts` times.
    pub async fn call<R: TrtcRequest>(&self, request: &R) -> Result<R::Response, TrtcApiError> {
        request
            .validate()
            .map_err(|message| TrtcApiError::InvalidRequest {
                action: R::ACTION,
                message,
            })?;
        let body = serde_json::to_vec(request).map_err(|e| TrtcApiError::InvalidRequest {
            action: R::ACTION,
            message: e.to_string(),
        })?;
        let attempts = if R::IDEMPOTENT {
            self.config.max_attempts.max(1)
        } else {
            1
        };
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 1;
        loop {
            match self.send::<R::Response>(R::ACTION, &body).await {
                Ok(answer) => return Ok(answer),
                Err(error) if error.is_retryable() && attempt < attempts => {
                    tracing::warn!(
                        action = R::ACTION,
                        attempt,
                        attempts,
                        %error,
                        "TRTC API call failed, retrying in {backoff:?}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(self.config.max_backoff);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        action: &'static str,
        body: &[u8],
    ) -> Result<T, TrtcApiError> {
        let timestamp = jiff::Timestamp::now().as_second();
        let mut request = self.http.post(self.url.clone()).body(body.to_vec());
        for (name, value) in self.signer.sign(action, timestamp, body) {
            request = request.header(name, value);
        }
        let transport = |e: reqwest::Error| TrtcApiError::Transport {
            action,
            message: error_chain(&e),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        parse_answer(action, status.as_u16(), &bytes)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiError {
    code: String,
    #[serde(default)]
    message: String,
}

/// Reads Tencent's answer: its error, the HTTP status, or the expected fields.
fn parse_answer<T: DeserializeOwned>(
    action: &'static str,
    status: u16,
    body: &[u8],
) -> Result<T, TrtcApiError> {
    let excerpt = || {
        let text = String::from_utf8_lossy(body);
        let mut excerpt: String = text.chars().take(200).collect();
        if text.chars().count() > 200 {
            excerpt.push('…');
        }
        excerpt
    };
    let envelope = match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => envelope,
        Err(e) if (200..300).contains(&status) => {
            return Err(TrtcApiError::BadResponse {
                action,
                message: format!("{e}: {}", excerpt()),
            });
        }
        Err(_) => {
            return Err(TrtcApiError::Http {
                action,
                status,
                body: excerpt(),
            });
        }
    };
    let request_id = envelope
        .response
        .get("RequestId")
        .and_then(|id| id.as_str())
        .unwrap_or("(none)")
        .to_string();
    if let Some(error) = envelope.response.get("Error") {
        let error: ApiError =
            serde_json::from_value(error.clone()).map_err(|e| TrtcApiError::BadResponse {
                action,
                message: format!("Response.Error: {e}: {}", excerpt()),
            })?;
        return Err(TrtcApiError::Api {
            action,
            retryable: is_retryable_code(&error.code),
            code: error.code,
            message: error.message,
            request_id,
        });
    }
    if !(200..300).contains(&status) {
        return Err(TrtcApiError::Http {
            action,
            status,
            body: excerpt(),
        });
    }
    serde_json::from_value(serde_json::Value::Object(envelope.response)).map_err(|e| {
        TrtcApiError::BadResponse {
            action,
            message: format!("{e} (RequestId {request_id})"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trtc_api_retryable_codes() {
        for code in [
            "InternalError",
            "InternalError.DBError",
            "InternalError.HttpParaseFalied",
            "RequestLimitExceeded",
            "RequestLimitExceeded.UinLimitExceeded",
            "RequestLimitExceeded.IPLimitExceeded",
            "ServiceUnavailable",
            "FailedOperation.Timeout",
            "FailedOperation.RequestTimeout",
            "FailedOperation.CRTimedOut",
        ] {
            assert!(is_retryable_code(code), "{code}");
        }
        for code in [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SignatureExpire",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.UnauthorizedOperation",
            "InvalidParameter",
            "InvalidParameter.SdkAppId",
            "InvalidParameterValue.RoomId",
            "MissingParameter.TaskId",
            "ResourceNotFound",
            "ResourceNotFound.RoomNotExist",
            "UnauthorizedOperation.SdkAppId",
            "FailedOperation",
            "FailedOperation.RoomNotExist",
            "LimitExceeded.TaskLimit",
            "UnknownParameter",
            "",
            "Something.New",
        ] {
            assert!(!is_retryable_code(code), "{code}");
        }
    }

    #[test]
    fn trtc_api_answers_are_parsed() {
        let ok: Ack =
            parse_answer("DismissRoom", 200, br#"{"Response":{"RequestId":"r-1"}}"#).unwrap();
        assert_eq!(ok.request_id, "r-1");
        let err = parse_answer::<Ack>(
            "DismissRoom",
            200,
            br#"{"Response":{"Error":{"Code":"InternalError","Message":"busy"},"RequestId":"r-2"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            TrtcApiError::Api {
                action: "DismissRoom",
                code: "InternalError".into(),
                message: "busy".into(),
                request_id: "r-2".into(),
                retryable: true,
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("InternalError") && text.contains("busy") && text.contains("r-2"),
            "{text}"
        );
        assert!(matches!(
            parse_answer::<Ack>("DismissRoom", 502, b"<html>bad gateway</html>"),
            Err(TrtcApiError::Http { status: 502, .. })
        ));
        assert!(
            parse_answer::<Ack>("DismissRoom", 502, b"bad gateway")
                .unwrap_err()
                .is_retryable()
        );
        assert!(matches!(
            parse_answer::<Ack>("DismissRoom", 200, b"{}"),
            Err(TrtcApiError::BadResponse { .. })
        ));
        assert!(matches!(
            parse_answer::<StartPublishCdnStreamResponse>(
                "StartPublishCdnStream",
                200,
                br#"{"Response":{"RequestId":"r-3"}}"#
            ),
            Err(TrtcApiError::BadResponse { message, .. }) if message.contains("r-3")
        ));
    }

    #[test]
    fn trtc_api_credentials_never_in_debug() {
        let config = TrtcApiConfig::new(
            Secret::new("AKIDverysecretid"),
            Secret::new("verysecretkey"),
            "ap-guangzhou",
        );
        let client = TrtcClient::new(config.clone()).unwrap();
        for text in [format!("{config:?}"), format!("{client:?}")] {
            assert!(!text.contains("verysecret"), "{text}");
            assert!(!text.contains("AKIDverysecretid"), "{text}");
        }
        let agent = AgentParams {
            user_id: "bot".into(),
            user_sig: "eJyrVgrxCdYrSy1SslJQMt".into(),
            max_idle_time: 30,
        };
        assert!(!format!("{agent:?}").contains("eJyr"));
    }

    #[test]
    fn trtc_api_bad_endpoints_are_refused() {
        for endpoint in ["not a url", "ftp://example.com", "unix:/tmp/socket"] {
            let mut config =
                TrtcApiConfig::new(Secret::new("id"), Secret::new("key"), "ap-guangzhou");
            config.endpoint = endpoint.into();
            assert!(
                matches!(TrtcClient::new(config), Err(TrtcApiError::Config(_))),
                "{endpoint}"
            );
        }
    }
}
