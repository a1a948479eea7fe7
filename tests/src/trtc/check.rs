//! The strict checker of TRTC server API requests: everything Tencent's API gateway and the TRTC
//! service check before acting, in their order — transport (POST to `/`, `Content-Type`, `Host`),
//! the TC3-HMAC-SHA256 signature (with `roomrec_api::trtc::tc3::verify`, more than 300 s of clock
//! skew refused), the common headers (`X-TC-Action`, `X-TC-Version`, `X-TC-Region`,
//! `X-TC-Language`), then the action's JSON parameters: unknown fields, missing fields, wrong
//! JSON types and out-of-range values are refused with Tencent's error codes, and the agent's
//! UserSig of StartPublishCdnStream is verified with the application's key
//! (`roomrec_api::trtc::usersig::verify`).
//!
//! Both the TRTC stand-in ([`super::TrtcStandIn`]) and the operator's API-client tests use it,
//! so what one accepts the other does too.
//!
//! Error codes: the common ones of Tencent Cloud API 3.0 (`AuthFailure.*` from the TC3 verifier,
//! `MissingParameter`, `InvalidParameter`, `InvalidParameterValue`, `UnknownParameter`,
//! `InvalidAction`, `NoSuchVersion`, `UnsupportedRegion`) and TRTC's sub-codes where its SDKs list
//! one (`InvalidParameter.UserId`, `InvalidParameter.UserIds`, `InvalidParameterValue.RoomId`).
//! Two are this checker's own, kept because tests depend on them: `InvalidParameter.UserSig`
//! (Tencent lists only `InvalidParameter` for StartPublishCdnStream) and
//! `InvalidParameterValue.SdkAppId` for an application the account does not own. A request that
//! is not a POST to `/` with a JSON body gets `InvalidRequest`.

use roomrec_api::trtc::tc3::{self, IncomingRequest, Secret, VerifiedRequest};
use roomrec_api::trtc::usersig::{self, Room, privilege};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The TC3 service name of TRTC.
pub const SERVICE: &str = "trtc";
/// The API version the stand-in serves.
pub const VERSION: &str = "2019-07-22";
/// The actions the checker knows.
pub const ACTIONS: [&str; 6] = [
    "StartPublishCdnStream",
    "StopPublishCdnStream",
    "RemoveUser",
    "RemoveUserByStrRoomId",
    "DismissRoom",
    "DismissRoomByStrRoomId",
];
/// TRTC's numeric room ids are 1 to 4294967294.
pub const MAX_NUMERIC_ROOM_ID: u64 = 4_294_967_294;
/// TRTC's string room ids are at most 64 bytes.
pub const MAX_STRING_ROOM_ID_BYTES: usize = 64;
/// TRTC's user ids are at most 32 bytes of `[A-Za-z0-9_-]`.
pub const MAX_USER_ID_BYTES: usize = 32;
/// `AgentParams.MaxIdleTime` when left out.
pub const DEFAULT_MAX_IDLE_TIME: u32 = 30;

/// Why a request is refused: Tencent's error code and a message (HTTP 200 with
/// `{"Response":{"Error":{"Code","Message"},"RequestId"}}`, as Tencent answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Refusal {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A TRTC room: numeric rooms and string rooms are separate namespaces (room 42 and room "42"
/// are two rooms).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomId {
    /// A numeric room (RoomIdType 0; RemoveUser, DismissRoom).
    Int(u32),
    /// A string room (RoomIdType 1; RemoveUserByStrRoomId, DismissRoomByStrRoomId).
    Str(String),
}

impl RoomId {
    /// The room id as TRTC's event callbacks write it: a number or a string, as the room is used.
    pub fn to_json(&self) -> Value {
        match self {
            RoomId::Int(id) => Value::from(*id),
            RoomId::Str(id) => Value::from(id.as_str()),
        }
    }
}

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomId::Int(id) => write!(f, "{id}"),
            RoomId::Str(id) => write!(f, "{id:?}"),
        }
    }
}

impl From<u32> for RoomId {
    fn from(id: u32) -> Self {
        RoomId::Int(id)
    }
}

impl From<&str> for RoomId {
    fn from(id: &str) -> Self {
        RoomId::Str(id.to_string())
    }
}

impl From<String> for RoomId {
    fn from(id: String) -> Self {
        RoomId::Str(id)
    }
}

/// Which of a user's streams a relay subscribes (`StreamType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// 0: the camera and microphone (the main stream).
    Camera,
    /// 1: the screen share (the aux stream).
    Screen,
}

/// One `PublishCdnParams` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishCdn {
    pub url: String,
    pub is_tencent_cdn: bool,
}

/// `SingleSubscribeParams.UserMediaStream`: whose stream a pass-through task relays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub user_id: String,
    pub room: RoomId,
    pub stream_type: StreamType,
}

/// A checked StartPublishCdnStream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    pub sdk_app_id: u64,
    pub room: RoomId,
    pub agent_user_id: String,
    pub agent_user_sig: String,
    /// `AgentParams.MaxIdleTime`, [`DEFAULT_MAX_IDLE_TIME`] when left out.
    pub max_idle_time: u32,
    /// `WithTranscoding` 1.
    pub with_transcoding: bool,
    /// Present when `WithTranscoding` is 0 (required then) or given anyway.
    pub subscription: Option<Subscription>,
    pub publish_cdn: Vec<PublishCdn>,
}

/// A checked request: what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Start(StartRequest),
    Stop {
        sdk_app_id: u64,
        task_id: String,
    },
    /// RemoveUser (numeric room) or RemoveUserByStrRoomId (string room).
    RemoveUser {
        sdk_app_id: u64,
        room: RoomId,
        user_ids: Vec<String>,
    },
    /// DismissRoom (numeric room) or DismissRoomByStrRoomId (string room).
    DismissRoom {
        sdk_app_id: u64,
        room: RoomId,
    },
}

/// A request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// What the signature covers (SecretId, action, version, timestamp, region, language).
    pub verified: VerifiedRequest,
    /// The JSON body.
    pub params: Map<String, Value>,
    pub call: Call,
}

/// An HTTP request as a server received it.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string without `?`, "" when none.
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Who may call and what exists: the API credentials (`SecretId → SecretKey`), the applications
/// (`SdkAppId → secret key`, for UserSigs), the regions served and the `Host` the requests must
/// name (`None`: any).
#[derive(Clone, Default)]
pub struct Checker {
    pub credentials: BTreeMap<String, String>,
    pub apps: BTreeMap<u64, String>,
    pub regions: Vec<String>,
    pub host: Option<String>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("secret_ids", &self.credentials.keys().collect::<Vec<_>>())
            .field("apps", &self.apps.keys().collect::<Vec<_>>())
            .field("regions", &self.regions)
            .field("host", &self.host)
            .finish()
    }
}

impl Checker {
    /// Checks a whole request at `now` (Unix seconds), in Tencent's order.
    pub fn check(&self, request: &HttpRequest<'_>, now: i64) -> Result<Checked, Refusal> {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if request.method != "POST" || request.path != "/" || !request.query.is_empty() {
            return Err(Refusal::new(
                "InvalidRequest",
                format!(
                    "{} {}?{}: the TRTC API takes POST / with a JSON body",
                    request.method, request.path, request.query
                ),
            ));
        }
        if header("Content-Type") != Some(tc3::CONTENT_TYPE) {
            return Err(Refusal::new(
                "InvalidRequest",
                format!(
                    "Content-Type {:?} is not {:?}",
                    header("Content-Type"),
                    tc3::CONTENT_TYPE
                ),
            ));
        }
        if let Some(host) = &self.host
            && header("Host") != Some(host.as_str())
        {
            return Err(Refusal::new(
                "InvalidRequest",
                format!("Host {:?} is not {host:?}", header("Host")),
            ));
        }
        let incoming = IncomingRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: request.body,
        };
        let verified = tc3::verify(
            &incoming,
            SERVICE,
            |id| {
                self.credentials
                    .get(id)
                    .map(|key| Secret::new(key.as_str()))
            },
            now,
        )
        .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        if verified.version != VERSION {
            return Err(Refusal::new(
                "NoSuchVersion",
                format!(
                    "X-TC-Version {:?}: the TRTC API serves {VERSION}",
                    verified.version
                ),
            ));
        }
        match verified.region.as_deref() {
            None => {
                return Err(Refusal::new(
                    "MissingParameter",
                    "the request has no X-TC-Region header",
                ));
            }
            Some(region) if !self.regions.iter().any(|r| r == region) => {
                return Err(Refusal::new(
                    "UnsupportedRegion",
                    format!(
                        "X-TC-Region {region:?} is not served (only {:?})",
                        self.regions
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(language) = verified.language.as_deref()
            && !["zh-CN", "en-US"].contains(&language)
        {
            return Err(Refusal::new(
                "InvalidParameterValue",
                format!("X-TC-Language {language:?} is neither zh-CN nor en-US"),
            ));
        }
        if !ACTIONS.contains(&verified.action.as_str()) {
            return Err(Refusal::new(
                "InvalidAction",
                format!("X-TC-Action {:?} is not an action of TRTC", verified.action),
            ));
        }
        let params: Map<String, Value> = serde_json::from_slice(request.body).map_err(|e| {
            Refusal::new(
                "InvalidParameter",
                format!("the body is not a JSON object: {e}"),
            )
        })?;
        let call = self.check_params(&verified.action, &params, now)?;
        Ok(Checked {
            verified,
            params,
            call,
        })
    }

    /// Checks the JSON parameters of `action` (one of [`ACTIONS`]) at `now`.
    pub fn check_params(
        &self,
        action: &str,
        params: &Map<String, Value>,
        now: i64,
    ) -> Result<Call, Refusal> {
        match action {
            "StartPublishCdnStream" => self.check_start(params, now).map(Call::Start),
            "StopPublishCdnStream" => {
                only(params, &["SdkAppId", "TaskId"])?;
                let sdk_app_id = self.app(params)?;
                let task_id = nonempty_string(params, "TaskId")?.to_string();
                Ok(Call::Stop {
                    sdk_app_id,
                    task_id,
                })
            }
            "RemoveUser" | "RemoveUserByStrRoomId" => {
                only(params, &["SdkAppId", "RoomId", "UserIds"])?;
                let sdk_app_id = self.app(params)?;
                let room = if action == "RemoveUser" {
                    numeric_room(params, "RoomId")?
                } else {
                    string_room(params, "RoomId")?
                };
                let user_ids = user_ids(params)?;
                Ok(Call::RemoveUser {
                    sdk_app_id,
                    room,
                    user_ids,
                })
            }
            "DismissRoom" | "DismissRoomByStrRoomId" => {
                only(params, &["SdkAppId", "RoomId"])?;
                let sdk_app_id = self.app(params)?;
                let room = if action == "DismissRoom" {
                    numeric_room(params, "RoomId")?
                } else {
                    string_room(params, "RoomId")?
                };
                Ok(Call::DismissRoom { sdk_app_id, room })
            }
            other => Err(Refusal::new(
                "InvalidAction",
                format!("X-TC-Action {other:?} is not an action of TRTC"),
            )),
        }
    }

    /// `SdkAppId`: an integer, and an application of this account.
    fn app(&self, params: &Map<String, Value>) -> Result<u64, Refusal> {
        let app = uint(params, "SdkAppId", 1, u64::from(u32::MAX))?;
        if !self.apps.contains_key(&app) {
            return Err(Refusal::new(
                "InvalidParameterValue.SdkAppId",
                format!("SdkAppId {app} is not an application of this account"),
            ));
        }
        Ok(app)
    }

    fn check_start(&self, params: &Map<String, Value>, now: i64) -> Result<StartRequest, Refusal> {
        only(
            params,
            &[
                "SdkAppId",
                "RoomId",
                "RoomIdType",
                "AgentParams",
                "WithTranscoding",
                "AudioParams",
                "VideoParams",
                "SingleSubscribeParams",
                "PublishCdnParams",
                "SeiParams",
                "FeedBackRoomParams",
            ],
        )?;
        let sdk_app_id = self.app(params)?;
        let room = typed_room(params, "")?;

        let agent = object(params, "AgentParams")?;
        only(agent, &["UserId", "UserSig", "MaxIdleTime"])
            .map_err(|r| in_object(r, "AgentParams"))?;
        let agent_user_id = user_id(agent, "UserId", "AgentParams.UserId")?;
        let agent_user_sig = nonempty_string(agent, "UserSig")
            .map_err(|r| in_object(r, "AgentParams"))?
            .to_string();
        let max_idle_time = if agent.contains_key("MaxIdleTime") {
            uint(agent, "MaxIdleTime", 5, 86400).map_err(|r| in_object(r, "AgentParams"))? as u32
        } else {
            DEFAULT_MAX_IDLE_TIME
        };
        self.check_agent_user_sig(sdk_app_id, &room, &agent_user_id, &agent_user_sig, now)?;

        let with_transcoding = uint(params, "WithTranscoding", 0, 1)? == 1;

        let audio = object(params, "AudioParams")?;
        only(audio, &["AudioEncode", "SubscribeAudioList"])
            .map_err(|r| in_object(r, "AudioParams"))?;
        let encode = object(audio, "AudioEncode").map_err(|r| in_object(r, "AudioParams"))?;
        let encode_field = |r: Refusal| in_object(r, "AudioParams.AudioEncode");
        only(encode, &["SampleRate", "Channel", "BitRate", "Codec"]).map_err(encode_field)?;
        let rate = uint(encode, "SampleRate", 1, 96000).map_err(encode_field)?;
        if ![48000, 44100, 32000, 24000, 16000, 8000].contains(&rate) {
            return Err(Refusal::new(
                "InvalidParameterValue",
                format!(
                    "AudioParams.AudioEncode.SampleRate {rate} is not one of 48000, 44100, 32000, 24000, 16000, 8000"
                ),
            ));
        }
        uint(encode, "Channel", 1, 2).map_err(encode_field)?;
        uint(encode, "BitRate", 8, 500).map_err(encode_field)?;
        if encode.contains_key("Codec") {
            uint(encode, "Codec", 0, 2).map_err(encode_field)?;
        }
        if audio.contains_key("SubscribeAudioList") {
            array(audio, "SubscribeAudioList").map_err(|r| in_object(r, "AudioParams"))?;
        }
        if params.contains_key("VideoParams") {
            object(params, "VideoParams")?;
        }
        if params.contains_key("SeiParams") {
            object(params, "SeiParams")?;
        }
        if params.contains_key("FeedBackRoomParams") {
            array(params, "FeedBackRoomParams")?;
        }

        let subscription = if !with_transcoding || params.contains_key("SingleSubscribeParams") {
            let single = object(params, "SingleSubscribeParams")?;
            only(single, &["UserMediaStream"])
                .map_err(|r| in_object(r, "SingleSubscribeParams"))?;
            let stream = object(single, "UserMediaStream")
                .map_err(|r| in_object(r, "SingleSubscribeParams"))?;
            let path = "SingleSubscribeParams.UserMediaStream";
            only(stream, &["UserInfo", "StreamType"]).map_err(|r| in_object(r, path))?;
            let user = object(stream, "UserInfo").map_err(|r| in_object(r, path))?;
            let user_path = "SingleSubscribeParams.UserMediaStream.UserInfo";
            only(user, &["UserId", "RoomId", "RoomIdType"]).map_err(|r| in_object(r, user_path))?;
            let user_id = user_id(user, "UserId", &format!("{user_path}.UserId"))?;
            let room = typed_room(user, user_path)?;
            let stream_type =
                match uint(stream, "StreamType", 0, 1).map_err(|r| in_object(r, path))? {
                    0 => StreamType::Camera,
                    _ => StreamType::Screen,
                };
            Some(Subscription {
                user_id,
                room,
                stream_type,
            })
        } else {
            None
        };

        let cdns = array(params, "PublishCdnParams")?;
        if cdns.is_empty() || cdns.len() > 10 {
            return Err(Refusal::new(
                "InvalidParameterValue",
                format!("PublishCdnParams has {} entries: 1 to 10", cdns.len()),
            ));
        }
        let mut publish_cdn = Vec::with_capacity(cdns.len());
        for cdn in cdns {
            let cdn = cdn.as_object().ok_or_else(|| {
                Refusal::new("InvalidParameter", "PublishCdnParams holds a non-object")
            })?;
            only(cdn, &["PublishCdnUrl", "IsTencentCdn"])
                .map_err(|r| in_object(r, "PublishCdnParams[]"))?;
            let url = nonempty_string(cdn, "PublishCdnUrl")
                .map_err(|r| in_object(r, "PublishCdnParams[]"))?;
            // The query may hold a txSecret: name the URL without it.
            let shown = url.split('?').next().unwrap_or_default();
            if !url.starts_with("rtmp://") {
                return Err(Refusal::new(
                    "InvalidParameterValue.PublishCdnUrl",
                    format!("PublishCdnUrl {shown:?} is not rtmp://"),
                ));
            }
            roomrec_api::trtc::push_auth::parse_url(url).map_err(|_| {
                Refusal::new(
                    "InvalidParameterValue.PublishCdnUrl",
                    format!("PublishCdnUrl {shown:?} is not rtmp://domain/app/stream"),
                )
            })?;
            let is_tencent_cdn = uint(cdn, "IsTencentCdn", 0, 1)
                .map_err(|r| in_object(r, "PublishCdnParams[]"))?
                == 1;
            publish_cdn.push(PublishCdn {
                url: url.to_string(),
                is_tencent_cdn,
            });
        }
        Ok(StartRequest {
            sdk_app_id,
            room,
            agent_user_id,
            agent_user_sig,
            max_idle_time,
            with_transcoding,
            subscription,
            publish_cdn,
        })
    }

    /// The agent's UserSig: made with the application's key for this user and application, not
    /// expired, and, when it carries a PrivateMapKey, for this room with the right to enter.
    fn check_agent_user_sig(
        &self,
        sdk_app_id: u64,
        room: &RoomId,
        user: &str,
        sig: &str,
        now: i64,
    ) -> Result<(), Refusal> {
        let refuse = |why: String| {
            Refusal::new(
                "InvalidParameter.UserSig",
                format!("AgentParams.UserSig of agent {user:?}: {why}"),
            )
        };
        let key = self
            .apps
            .get(&sdk_app_id)
            .ok_or_else(|| refuse(format!("SdkAppId {sdk_app_id} has no key")))?;
        let decoded = usersig::verify(sig, sdk_app_id, user, key.as_bytes(), now)
            .map_err(|e| refuse(e.to_string()))?;
        if let Some(userbuf) = &decoded.userbuf {
            let same_room = match (userbuf.room(), room) {
                (Room::Numeric(a), RoomId::Int(b)) => a == b,
                (Room::Str(a), RoomId::Str(b)) => a == b,
                _ => false,
            };
            if !same_room {
                return Err(refuse(format!(
                    "its PrivateMapKey is for room {}, not room {room}",
                    userbuf.room()
                )));
            }
            if userbuf.privilege_map() & privilege::ENTER == 0 {
                return Err(refuse(format!(
                    "its PrivateMapKey does not allow entering the room (privileges: {})",
                    privilege::names(userbuf.privilege_map()).join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Prefixes the field a refusal names with the object it is in.
fn in_object(refusal: Refusal, object: &str) -> Refusal {
    Refusal {
        code: refusal.code,
        message: format!("{object}.{}", refusal.message),
    }
}

/// Refuses a field not in `allowed`.
pub fn only(params: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(Refusal::new(
            "UnknownParameter",
            format!(
                "{unknown} is not a parameter here (known: {})",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// A required field.
pub fn get<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a Value, Refusal> {
    params
        .get(name)
        .ok_or_else(|| Refusal::new("MissingParameter", format!("{name} is required")))
}

/// A required integer in `min..=max` (a JSON number without fraction; not a string, not a bool).
pub fn uint(params: &Map<String, Value>, name: &str, min: u64, max: u64) -> Result<u64, Refusal> {
    let value = get(params, name)?.as_u64().ok_or_else(|| {
        Refusal::new(
            "InvalidParameter",
            format!("{name} is not a non-negative integer"),
        )
    })?;
    if !(min..=max).contains(&value) {
        return Err(Refusal::new(
            "InvalidParameterValue",
            format!("{name} {value} is outside {min}..={max}"),
        ));
    }
    Ok(value)
}

/// A required non-empty string.
pub fn nonempty_string<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refusal> {
    let value = get(params, name)?
        .as_str()
        .ok_or_else(|| Refusal::new("InvalidParameter", format!("{name} is not a string")))?;
    if value.is_empty() {
        return Err(Refusal::new(
            "InvalidParameterValue",
            format!("{name} is empty"),
        ));
    }
    Ok(value)
}

/// A required object.
pub fn object<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a Map<String, Value>, Refusal> {
    get(params, name)?
        .as_object()
        .ok_or_else(|| Refusal::new("InvalidParameter", format!("{name} is not an object")))
}

/// A required array.
pub fn array<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a Vec<Value>, Refusal> {
    get(params, name)?
        .as_array()
        .ok_or_else(|| Refusal::new("InvalidParameter", format!("{name} is not an array")))
}

/// Whether `id` is a TRTC user id: 1 to 32 bytes of `[A-Za-z0-9_-]`.
pub fn is_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `id` is a TRTC string room id: 1 to 64 bytes of letters, digits, space and
/// ``!#$%&()+-:;<=.>?@[]^_{}|~,``.
pub fn is_string_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STRING_ROOM_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" !#$%&()+-:;<=.>?@[]^_{}|~,".contains(&b))
}

/// A numeric room id written as text (RoomIdType 0): decimal digits without sign or leading
/// zero, 1 to [`MAX_NUMERIC_ROOM_ID`].
pub fn parse_numeric_room_id(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || text.starts_with('0') {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u64 = text.parse().ok()?;
    (1..=MAX_NUMERIC_ROOM_ID).contains(&id).then_some(id as u32)
}

fn user_id(params: &Map<String, Value>, name: &str, path: &str) -> Result<String, Refusal> {
    let id = get(params, name)
        .map_err(|_| Refusal::new("MissingParameter", format!("{path} is required")))?
        .as_str()
        .ok_or_else(|| Refusal::new("InvalidParameter", format!("{path} is not a string")))?;
    if !is_user_id(id) {
        return Err(Refusal::new(
            "InvalidParameter.UserId",
            format!("{path} {id:?} is not 1 to 32 bytes of [A-Za-z0-9_-]"),
        ));
    }
    Ok(id.to_string())
}

fn user_ids(params: &Map<String, Value>) -> Result<Vec<String>, Refusal> {
    let ids = array(params, "UserIds")?;
    if ids.is_empty() || ids.len() > 10 {
        return Err(Refusal::new(
            "InvalidParameterValue",
            format!("UserIds has {} entries: 1 to 10", ids.len()),
        ));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(id) = id.as_str() else {
            return Err(Refusal::new(
                "InvalidParameter.UserIds",
                "UserIds holds a non-string",
            ));
        };
        if !is_user_id(id) {
            return Err(Refusal::new(
                "InvalidParameter.UserIds",
                format!("UserIds holds {id:?}: not 1 to 32 bytes of [A-Za-z0-9_-]"),
            ));
        }
        out.push(id.to_string());
    }
    Ok(out)
}

/// `RoomId` as an integer (RemoveUser, DismissRoom).
fn numeric_room(params: &Map<String, Value>, name: &str) -> Result<RoomId, Refusal> {
    let id = uint(params, name, 1, MAX_NUMERIC_ROOM_ID)?;
    Ok(RoomId::Int(id as u32))
}

/// `RoomId` as a string room id (…ByStrRoomId).
fn string_room(params: &Map<String, Value>, name: &str) -> Result<RoomId, Refusal> {
    let id = nonempty_string(params, name)?;
    if !is_string_room_id(id) {
        return Err(Refusal::new(
            "InvalidParameterValue.RoomId",
            format!(
                "{name} {id:?} is not a TRTC string room id (1 to 64 bytes of letters, digits, space and !#$%&()+-:;<=.>?@[]^_{{}}|~,)"
            ),
        ));
    }
    Ok(RoomId::Str(id.to_string()))
}

/// `RoomId` (a string) with `RoomIdType` (0 integer, 1 string), as StartPublishCdnStream and its
/// `UserInfo` write rooms.
fn typed_room(params: &Map<String, Value>, path: &str) -> Result<RoomId, Refusal> {
    let prefix = |r: Refusal| {
        if path.is_empty() {
            r
        } else {
            in_object(r, path)
        }
    };
    let text = nonempty_string(params, "RoomId").map_err(prefix)?;
    let room_id_type = uint(params, "RoomIdType", 0, 1).map_err(prefix)?;
    let shown = if path.is_empty() {
        "RoomId".to_string()
    } else {
        format!("{path}.RoomId")
    };
    if room_id_type == 0 {
        let id = parse_numeric_room_id(text).ok_or_else(|| {
            Refusal::new(
                "InvalidParameterValue.RoomId",
                format!(
                    "{shown} {text:?} with RoomIdType 0 is not an integer room id 1..={MAX_NUMERIC_ROOM_ID}"
                ),
            )
        })?;
        Ok(RoomId::Int(id))
    } else {
        if !is_string_room_id(text) {
            return Err(Refusal::new(
                "InvalidParameterValue.RoomId",
                format!("{shown} {text:?} is not a TRTC string room id"),
            ));
        }
        Ok(RoomId::Str(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_room_ids() {
        assert_eq!(parse_numeric_room_id("43474"), Some(43474));
        assert_eq!(parse_numeric_room_id("4294967294"), Some(4_294_967_294));
        for bad in [
            "",
            "0",
            "043474",
            "+5",
            "-5",
            "4294967295",
            "1e3",
            " 1",
            "12345678901",
        ] {
            assert_eq!(parse_numeric_room_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids() {
        assert!(is_user_id("roomrec_agent-1"));
        assert!(!is_user_id(""));
        assert!(!is_user_id("a b"));
        assert!(!is_user_id(&"a".repeat(33)));
        assert!(is_string_room_id("class-42 (math)"));
        assert!(!is_string_room_id("class/42"));
        assert!(!is_string_room_id(&"r".repeat(65)));
    }
}
