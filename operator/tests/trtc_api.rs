//! The TRTC API client against a local stand-in for Tencent's cloud API (trtc.tencentcloudapi.com
//! cannot be reached from here): a hyper HTTP/1 server that checks every request as strictly as
//! Tencent would (TC3-HMAC-SHA256 signature with the verifier of `roomrec-api`, X-TC-* headers,
//! the action's JSON fields and their types, the agent's UserSig) and answers with success or a
//! chosen error code.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use roomrec_api::trtc::tc3::{self, IncomingRequest, Secret};
use roomrec_api::trtc::usersig;
use roomrec_operator::trtc_api::*;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
const SDK_APP_ID: u64 = 1400000000;
const APP_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const REGIONS: [&str; 3] = ["ap-beijing", "ap-guangzhou", "ap-singapore"];

/// What the stand-in answers to the next request.
#[derive(Clone, Debug)]
enum Answer {
    Success,
    /// Tencent's JSON error with this code (HTTP 200, as Tencent does).
    Error(&'static str),
    /// A bare HTTP status with a non-JSON body, as a proxy in front of the API could answer.
    Http(u16),
}

/// One request as the stand-in accepted or refused it.
#[derive(Clone, Debug)]
struct Seen {
    action: String,
    body: String,
    /// The error code the stand-in answered, if any.
    refused: Option<String>,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    seen: Vec<Seen>,
    next_id: u64,
}

/// The stand-in for Tencent's cloud API.
struct Double {
    state: Arc<Mutex<State>>,
    endpoint: String,
}

impl Double {
    async fn start() -> Double {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let host = address.to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let expected_host = host.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                let host = expected_host.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        let host = host.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(&state, &host, request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Double {
            state,
            endpoint: format!("http://{host}"),
        }
    }

    fn script(&self, answers: &[Answer]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().cloned());
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn config(&self) -> TrtcApiConfig {
        let mut config = TrtcApiConfig::new(
            Secret::new(SECRET_ID),
            Secret::new(SECRET_KEY),
            "ap-guangzhou",
        );
        config.endpoint = self.endpoint.clone();
        config.initial_backoff = Duration::from_millis(10);
        config.max_backoff = Duration::from_millis(40);
        config.timeout = Duration::from_secs(5);
        config
    }

    fn client(&self) -> TrtcClient {
        TrtcClient::new(self.config()).unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn answer(body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error_body(code: &str, message: &str, request_id: &str) -> Value {
    json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}})
}

async fn handle(
    state: &Mutex<State>,
    host: &str,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let action = parts
        .headers
        .get("X-TC-Action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let request_id = {
        let mut state = state.lock().unwrap();
        state.next_id += 1;
        format!("req-{:04}", state.next_id)
    };
    let checked = check_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &headers,
        &body,
        host,
    );
    let mut state = state.lock().unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    if let Err((code, message)) = checked {
        state.seen.push(Seen {
            action,
            body: text,
            refused: Some(code.clone()),
        });
        return answer(error_body(&code, &message, &request_id));
    }
    let scripted = state.script.pop_front().unwrap_or(Answer::Success);
    let refused = match &scripted {
        Answer::Success => None,
        Answer::Error(code) => Some(code.to_string()),
        Answer::Http(status) => Some(format!("HTTP {status}")),
    };
    state.seen.push(Seen {
        action: action.clone(),
        body: text,
        refused,
    });
    match scripted {
        Answer::Error(code) => answer(error_body(code, "chosen by the test", &request_id)),
        Answer::Http(status) => Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(
                b"<html>upstream unavailable</html>",
            )))
            .unwrap(),
        Answer::Success => {
            let parsed: Value = serde_json::from_slice(&body).unwrap();
            let response = match action.as_str() {
                "StartPublishCdnStream" => {
                    json!({"TaskId": format!("task-{request_id}"), "RequestId": request_id})
                }
                "StopPublishCdnStream" => {
                    json!({"TaskId": parsed["TaskId"], "RequestId": request_id})
                }
                _ => json!({"RequestId": request_id}),
            };
            answer(json!({ "Response": response }))
        }
    }
}

type Refusal = (String, String);

fn refuse(code: &str, message: impl Into<String>) -> Refusal {
    (code.to_string(), message.into())
}

/// Everything Tencent checks before acting, in its order: transport, signature, common headers,
/// then the action's parameters.
fn check_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    host: &str,
) -> Result<(), Refusal> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if method != "POST" || path != "/" || !query.is_empty() {
        return Err(refuse("InvalidRequest", format!("{method} {path}?{query}")));
    }
    if header("Content-Type") != Some("application/json") {
        return Err(refuse(
            "InvalidRequest",
            format!("Content-Type {:?}", header("Content-Type")),
        ));
    }
    if header("Host") != Some(host) {
        return Err(refuse(
            "InvalidRequest",
            format!("Host {:?}", header("Host")),
        ));
    }
    let request = IncomingRequest {
        method,
        path,
        query,
        headers,
        body,
    };
    let verified = tc3::verify(
        &request,
        "trtc",
        |id| (id == SECRET_ID).then(|| Secret::new(SECRET_KEY)),
        now(),
    )
    .map_err(|e| refuse(e.code(), e.to_string()))?;
    if verified.version != "2019-07-22" {
        return Err(refuse("NoSuchVersion", verified.version));
    }
    match verified.region.as_deref() {
        None => return Err(refuse("MissingParameter", "X-TC-Region")),
        Some(region) if !REGIONS.contains(&region) => {
            return Err(refuse("UnsupportedRegion", region));
        }
        Some(_) => {}
    }
    let params: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        refuse(
            "InvalidParameter",
            format!("body is not a JSON object: {e}"),
        )
    })?;
    match verified.action.as_str() {
        "StartPublishCdnStream" => check_start(&params),
        "StopPublishCdnStream" => {
            only(&params, &["SdkAppId", "TaskId"])?;
            app(&params)?;
            nonempty_string(&params, "TaskId")?;
            Ok(())
        }
        "RemoveUser" => {
            only(&params, &["SdkAppId", "RoomId", "UserIds"])?;
            app(&params)?;
            uint(&params, "RoomId", 1, u64::from(u32::MAX))?;
            user_ids(&params)
        }
        "RemoveUserByStrRoomId" => {
            only(&params, &["SdkAppId", "RoomId", "UserIds"])?;
            app(&params)?;
            nonempty_string(&params, "RoomId")?;
            user_ids(&params)
        }
        "DismissRoom" => {
            only(&params, &["SdkAppId", "RoomId"])?;
            app(&params)?;
            uint(&params, "RoomId", 1, u64::from(u32::MAX))?;
            Ok(())
        }
        "DismissRoomByStrRoomId" => {
            only(&params, &["SdkAppId", "RoomId"])?;
            app(&params)?;
            nonempty_string(&params, "RoomId")?;
            Ok(())
        }
        other => Err(refuse("InvalidAction", other)),
    }
}

fn only(params: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(refuse("UnknownParameter", unknown.clone())),
        None => Ok(()),
    }
}

fn get<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a Value, Refusal> {
    params
        .get(name)
        .ok_or_else(|| refuse("MissingParameter", name))
}

fn uint(params: &Map<String, Value>, name: &str, min: u64, max: u64) -> Result<u64, Refusal> {
    let value = get(params, name)?
        .as_u64()
        .ok_or_else(|| refuse("InvalidParameter", format!("{name} is not an integer")))?;
    if !(min..=max).contains(&value) {
        return Err(refuse(
            "InvalidParameterValue",
            format!("{name} {value} outside {min}..={max}"),
        ));
    }
    Ok(value)
}

fn nonempty_string<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refusal> {
    let value = get(params, name)?
        .as_str()
        .ok_or_else(|| refuse("InvalidParameter", format!("{name} is not a string")))?;
    if value.is_empty() {
        return Err(refuse("InvalidParameterValue", format!("{name} is empty")));
    }
    Ok(value)
}

fn object<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a Map<String, Value>, Refusal> {
    get(params, name)?
        .as_object()
        .ok_or_else(|| refuse("InvalidParameter", format!("{name} is not an object")))
}

fn app(params: &Map<String, Value>) -> Result<(), Refusal> {
    let app = uint(params, "SdkAppId", 1, u64::from(u32::MAX))?;
    if app != SDK_APP_ID {
        return Err(refuse("InvalidParameterValue.SdkAppId", app.to_string()));
    }
    Ok(())
}

fn user_ids(params: &Map<String, Value>) -> Result<(), Refusal> {
    let ids = get(params, "UserIds")?
        .as_array()
        .ok_or_else(|| refuse("InvalidParameter", "UserIds is not an array"))?;
    if ids.is_empty() || ids.len() > 10 {
        return Err(refuse("InvalidParameterValue", "UserIds: 1 to 10"));
    }
    if ids.iter().any(|id| id.as_str().is_none_or(str::is_empty)) {
        return Err(refuse("InvalidParameter", "UserIds holds a non-string"));
    }
    Ok(())
}

fn room(params: &Map<String, Value>) -> Result<(), Refusal> {
    let room_id = nonempty_string(params, "RoomId")?;
    let room_id_type = uint(params, "RoomIdType", 0, 1)?;
    if room_id_type == 0 && room_id.parse::<u32>().is_err() {
        return Err(refuse(
            "InvalidParameterValue.RoomId",
            format!("{room_id:?} with RoomIdType 0"),
        ));
    }
    Ok(())
}

fn check_start(params: &Map<String, Value>) -> Result<(), Refusal> {
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
    app(params)?;
    room(params)?;

    let agent = object(params, "AgentParams")?;
    only(agent, &["UserId", "UserSig", "MaxIdleTime"])?;
    let agent_user = nonempty_string(agent, "UserId")?;
    let agent_sig = nonempty_string(agent, "UserSig")?;
    if agent.contains_key("MaxIdleTime") {
        uint(agent, "MaxIdleTime", 5, 86400)?;
    }
    usersig::verify(agent_sig, SDK_APP_ID, agent_user, APP_KEY.as_bytes(), now())
        .map_err(|e| refuse("InvalidParameter.UserSig", e.to_string()))?;

    let transcoding = uint(params, "WithTranscoding", 0, 1)?;

    let audio = object(params, "AudioParams")?;
    only(audio, &["AudioEncode", "SubscribeAudioList"])?;
    let encode = object(audio, "AudioEncode")?;
    only(encode, &["SampleRate", "Channel", "BitRate", "Codec"])?;
    uint(encode, "SampleRate", 1, 96000)?;
    uint(encode, "Channel", 1, 2)?;
    uint(encode, "BitRate", 8, 500)?;
    if encode.contains_key("Codec") {
        uint(encode, "Codec", 0, 2)?;
    }

    if transcoding == 0 || params.contains_key("SingleSubscribeParams") {
        let single = object(params, "SingleSubscribeParams")?;
        only(single, &["UserMediaStream"])?;
        let stream = object(single, "UserMediaStream")?;
        only(stream, &["UserInfo", "StreamType"])?;
        let user = object(stream, "UserInfo")?;
        only(user, &["UserId", "RoomId", "RoomIdType"])?;
        nonempty_string(user, "UserId")?;
        room(user)?;
        uint(stream, "StreamType", 0, 1)?;
    }

    let cdns = get(params, "PublishCdnParams")?
        .as_array()
        .ok_or_else(|| refuse("InvalidParameter", "PublishCdnParams is not an array"))?;
    if cdns.is_empty() || cdns.len() > 10 {
        return Err(refuse("InvalidParameterValue", "PublishCdnParams: 1 to 10"));
    }
    for cdn in cdns {
        let cdn = cdn
            .as_object()
            .ok_or_else(|| refuse("InvalidParameter", "PublishCdnParams holds a non-object"))?;
        only(cdn, &["PublishCdnUrl", "IsTencentCdn"])?;
        let url = nonempty_string(cdn, "PublishCdnUrl")?;
        if !url.starts_with("rtmp://") {
            return Err(refuse("InvalidParameterValue.PublishCdnUrl", url));
        }
        uint(cdn, "IsTencentCdn", 0, 1)?;
    }
    Ok(())
}

fn agent_usersig() -> String {
    usersig::generate(
        SDK_APP_ID,
        "roomrec_agent_1",
        APP_KEY.as_bytes(),
        now(),
        3600,
        None,
    )
}

fn start_request(user_sig: String) -> StartPublishCdnStreamRequest {
    StartPublishCdnStreamRequest {
        sdk_app_id: SDK_APP_ID,
        room_id: "43474".into(),
        room_id_type: RoomIdType::Integer,
        agent_params: AgentParams {
            user_id: "roomrec_agent_1".into(),
            user_sig,
            max_idle_time: 30,
        },
        with_transcoding: 0,
        audio_params: AudioParams {
            audio_encode: AudioEncode {
                sample_rate: 48000,
                channel: 2,
                bit_rate: 64,
                codec: None,
            },
        },
        single_subscribe_params: SingleSubscribeParams {
            user_media_stream: UserMediaStream {
                user_info: UserInfo {
                    user_id: "teacher_1".into(),
                    room_id: "43474".into(),
                    room_id_type: RoomIdType::Integer,
                },
                stream_type: StreamType::Main,
            },
        },
        publish_cdn_params: vec![PublishCdnParam {
            publish_cdn_url: "rtmp://push.example.com/live/1400000000_43474_teacher_1_main?txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099".into(),
            is_tencent_cdn: true,
        }],
    }
}

#[tokio::test]
async fn trtc_api_start_publish_cdn_stream_sends_tencents_fields() {
    let double = Double::start().await;
    let client = double.client();
    let sig = agent_usersig();
    let answer = client
        .start_publish_cdn_stream(&start_request(sig.clone()))
        .await
        .unwrap();
    assert_eq!(answer.task_id, "task-req-0001");
    assert_eq!(answer.request_id, "req-0001");
    let seen = double.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].action, "StartPublishCdnStream");
    assert_eq!(seen[0].refused, None);
    let expected = format!(
        concat!(
            r#"{{"SdkAppId":1400000000,"RoomId":"43474","RoomIdType":0,"#,
            r#""AgentParams":{{"UserId":"roomrec_agent_1","UserSig":"{}","MaxIdleTime":30}},"#,
            r#""WithTranscoding":0,"#,
            r#""AudioParams":{{"AudioEncode":{{"SampleRate":48000,"Channel":2,"BitRate":64}}}},"#,
            r#""SingleSubscribeParams":{{"UserMediaStream":{{"UserInfo":{{"UserId":"teacher_1","RoomId":"43474","RoomIdType":0}},"StreamType":0}}}},"#,
            r#""PublishCdnParams":[{{"PublishCdnUrl":"rtmp://push.example.com/live/1400000000_43474_teacher_1_main?txSecret=f85a2ab363fe4deaffef9754d79da6fe&txTime=5C271099","IsTencentCdn":1}}]}}"#
        ),
        sig
    );
    assert_eq!(seen[0].body, expected);

    // A string room, the screen share, another RTMP server, an explicit codec.
    let mut request = start_request(agent_usersig());
    request.room_id = "class-42".into();
    request.room_id_type = RoomIdType::String;
    request
        .single_subscribe_params
        .user_media_stream
        .user_info
        .room_id = "class-42".into();
    request
        .single_subscribe_params
        .user_media_stream
        .user_info
        .room_id_type = RoomIdType::String;
    request
        .single_subscribe_params
        .user_media_stream
        .stream_type = StreamType::Aux;
    request.audio_params.audio_encode.codec = Some(0);
    request.publish_cdn_params[0] = PublishCdnParam {
        publish_cdn_url: "rtmp://10.0.0.5/live/teacher".into(),
        is_tencent_cdn: false,
    };
    client.start_publish_cdn_stream(&request).await.unwrap();
    let body: Value = serde_json::from_str(&double.seen()[1].body).unwrap();
    assert_eq!(body["RoomId"], "class-42");
    assert_eq!(body["RoomIdType"], 1);
    assert_eq!(
        body["SingleSubscribeParams"]["UserMediaStream"]["UserInfo"]["RoomIdType"],
        1
    );
    assert_eq!(
        body["SingleSubscribeParams"]["UserMediaStream"]["StreamType"],
        1
    );
    assert_eq!(body["AudioParams"]["AudioEncode"]["Codec"], 0);
    assert_eq!(body["PublishCdnParams"][0]["IsTencentCdn"], 0);
}

#[tokio::test]
async fn trtc_api_stop_remove_dismiss_send_exact_bodies() {
    let double = Double::start().await;
    let client = double.client();
    let stop = client
        .stop_publish_cdn_stream(&StopPublishCdnStreamRequest {
            sdk_app_id: SDK_APP_ID,
            task_id: "task-abc".into(),
        })
        .await
        .unwrap();
    assert_eq!(stop.task_id.as_deref(), Some("task-abc"));
    assert_eq!(stop.request_id, "req-0001");
    client
        .remove_user(&RemoveUserRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
            user_ids: vec!["recorder_bot_1".into(), "student-07".into()],
        })
        .await
        .unwrap();
    client
        .remove_user_by_str_room_id(&RemoveUserByStrRoomIdRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: "class-42".into(),
            user_ids: vec!["recorder_bot_1".into()],
        })
        .await
        .unwrap();
    client
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
        })
        .await
        .unwrap();
    let last = client
        .dismiss_room_by_str_room_id(&DismissRoomByStrRoomIdRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: "class-42".into(),
        })
        .await
        .unwrap();
    assert_eq!(last.request_id, "req-0005");
    let seen: Vec<(String, String)> = double
        .seen()
        .into_iter()
        .map(|s| {
            assert_eq!(s.refused, None, "{s:?}");
            (s.action, s.body)
        })
        .collect();
    let expected = [
        (
            "StopPublishCdnStream",
            r#"{"SdkAppId":1400000000,"TaskId":"task-abc"}"#,
        ),
        (
            "RemoveUser",
            r#"{"SdkAppId":1400000000,"RoomId":43474,"UserIds":["recorder_bot_1","student-07"]}"#,
        ),
        (
            "RemoveUserByStrRoomId",
            r#"{"SdkAppId":1400000000,"RoomId":"class-42","UserIds":["recorder_bot_1"]}"#,
        ),
        ("DismissRoom", r#"{"SdkAppId":1400000000,"RoomId":43474}"#),
        (
            "DismissRoomByStrRoomId",
            r#"{"SdkAppId":1400000000,"RoomId":"class-42"}"#,
        ),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn trtc_api_retries_idempotent_calls_on_retryable_errors() {
    let double = Double::start().await;
    let client = double.client();
    double.script(&[
        Answer::Error("InternalError"),
        Answer::Error("RequestLimitExceeded.UinLimitExceeded"),
    ]);
    let ack = client
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
        })
        .await
        .unwrap();
    assert_eq!(ack.request_id, "req-0003");
    assert_eq!(double.seen().len(), 3);

    // A bare 502 from a proxy and a timeout code are retried too.
    double.script(&[Answer::Http(502), Answer::Error("FailedOperation.Timeout")]);
    client
        .stop_publish_cdn_stream(&StopPublishCdnStreamRequest {
            sdk_app_id: SDK_APP_ID,
            task_id: "task-abc".into(),
        })
        .await
        .unwrap();
    let seen = double.seen();
    assert_eq!(seen.len(), 6);
    assert!(seen[3..].iter().all(|s| s.action == "StopPublishCdnStream"));
    // Each attempt is signed anew and the body is the same.
    assert!(seen[3..].iter().all(|s| s.body == seen[3].body));
}

#[tokio::test]
async fn trtc_api_gives_up_after_bounded_attempts() {
    let double = Double::start().await;
    let client = double.client();
    double.script(&vec![Answer::Error("InternalError"); 10]);
    let started = std::time::Instant::now();
    let err = client
        .remove_user(&RemoveUserRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
            user_ids: vec!["recorder_bot_1".into()],
        })
        .await
        .unwrap_err();
    // Three attempts (the default), 10 then 20 ms apart.
    assert_eq!(double.seen().len(), 3);
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert!(err.is_retryable());
    assert_eq!(err.code(), Some("InternalError"));
    assert_eq!(err.request_id(), Some("req-0003"));
    let text = err.to_string();
    assert!(
        text.contains("RemoveUser")
            && text.contains("InternalError")
            && text.contains("chosen by the test")
            && text.contains("req-0003"),
        "{text}"
    );
}

#[tokio::test]
async fn trtc_api_does_not_retry_start_publish_cdn_stream() {
    let double = Double::start().await;
    let client = double.client();
    for code in ["InternalError", "RequestLimitExceeded"] {
        double.script(&[Answer::Error(code)]);
        let before = double.seen().len();
        let err = client
            .start_publish_cdn_stream(&start_request(agent_usersig()))
            .await
            .unwrap_err();
        assert_eq!(double.seen().len(), before + 1, "{code} was retried");
        // Retryable by nature, left to the caller.
        assert!(err.is_retryable());
        assert_eq!(err.code(), Some(code));
    }
    // A bare 503 neither.
    double.script(&[Answer::Http(503)]);
    let err = client
        .start_publish_cdn_stream(&start_request(agent_usersig()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrtcApiError::Http { status: 503, .. }),
        "{err}"
    );
    assert_eq!(double.seen().len(), 3);
}

#[tokio::test]
async fn trtc_api_does_not_retry_non_retryable_errors() {
    let double = Double::start().await;
    let client = double.client();
    for code in [
        "AuthFailure.UnauthorizedOperation",
        "InvalidParameter.SdkAppId",
        "MissingParameter",
        "ResourceNotFound.RoomNotExist",
        "UnauthorizedOperation.SdkAppId",
        "FailedOperation.RoomNotExist",
    ] {
        double.script(&[Answer::Error(code)]);
        let before = double.seen().len();
        let err = client
            .dismiss_room_by_str_room_id(&DismissRoomByStrRoomIdRequest {
                sdk_app_id: SDK_APP_ID,
                room_id: "class-42".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(double.seen().len(), before + 1, "{code} was retried");
        assert!(!err.is_retryable(), "{code}");
        assert_eq!(err.code(), Some(code));
        assert!(err.to_string().contains("a retry will not help"));
    }
}

#[tokio::test]
async fn trtc_api_wrong_credentials_are_refused_and_never_shown() {
    let double = Double::start().await;
    let mut config = double.config();
    config.secret_key = Secret::new("WrongKey0123456789wrongkeyEXAMPLE");
    let client = TrtcClient::new(config.clone()).unwrap();
    let err = client
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AuthFailure.SignatureFailure"));
    assert!(!err.is_retryable());
    assert_eq!(
        double.seen().len(),
        1,
        "an authentication failure was retried"
    );
    assert_eq!(
        double.seen()[0].refused.as_deref(),
        Some("AuthFailure.SignatureFailure")
    );

    let mut unknown = double.config();
    unknown.secret_id = Secret::new("AKIDunknownunknownunknownEXAMPLE");
    let err2 = TrtcClient::new(unknown.clone())
        .unwrap()
        .remove_user(&RemoveUserRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
            user_ids: vec!["u".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err2.code(), Some("AuthFailure.SecretIdNotFound"));
    assert_eq!(double.seen().len(), 2);

    for text in [
        err.to_string(),
        format!("{err:?}"),
        err2.to_string(),
        format!("{err2:?}"),
        format!("{config:?}"),
        format!("{unknown:?}"),
        format!("{client:?}"),
    ] {
        for secret in [
            SECRET_ID,
            SECRET_KEY,
            "WrongKey0123456789wrongkeyEXAMPLE",
            "AKIDunknownunknownunknownEXAMPLE",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

#[tokio::test]
async fn trtc_api_stand_in_refuses_what_tencent_refuses() {
    let double = Double::start().await;
    let client = double.client();
    // An agent UserSig made with another key.
    let bad_sig = usersig::generate(SDK_APP_ID, "roomrec_agent_1", b"other", now(), 3600, None);
    let err = client
        .start_publish_cdn_stream(&start_request(bad_sig))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameter.UserSig"));
    assert!(!err.is_retryable());
    // Another application.
    let err = client
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: 1400000001,
            room_id: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue.SdkAppId"));
    // A region Tencent does not serve.
    let mut config = double.config();
    config.region = "mars-north-1".into();
    let err = TrtcClient::new(config)
        .unwrap()
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("UnsupportedRegion"));
    assert_eq!(double.seen().len(), 3);
}

#[tokio::test]
async fn trtc_api_invalid_requests_are_not_sent() {
    let double = Double::start().await;
    let client = double.client();
    let eleven: Vec<String> = (0..11).map(|i| format!("user_{i}")).collect();
    let err = client
        .remove_user(&RemoveUserRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 1,
            user_ids: eleven,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TrtcApiError::InvalidRequest { .. }), "{err}");
    let err = client
        .remove_user_by_str_room_id(&RemoveUserByStrRoomIdRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: "r".into(),
            user_ids: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TrtcApiError::InvalidRequest { .. }), "{err}");

    let mut no_cdn = start_request(agent_usersig());
    no_cdn.publish_cdn_params.clear();
    let mut too_many = start_request(agent_usersig());
    too_many.publish_cdn_params = vec![too_many.publish_cdn_params[0].clone(); 11];
    let mut idle = start_request(agent_usersig());
    idle.agent_params.max_idle_time = 4;
    let mut not_a_number = start_request(agent_usersig());
    not_a_number.room_id = "class-42".into();
    let mut not_rtmp = start_request(agent_usersig());
    not_rtmp.publish_cdn_params[0].publish_cdn_url =
        "http://push.example.com/live/x?txSecret=f85a2ab363fe4deaffef9754d79da6fe".into();
    for request in [no_cdn, too_many, idle, not_a_number, not_rtmp] {
        let err = client.start_publish_cdn_stream(&request).await.unwrap_err();
        assert!(matches!(err, TrtcApiError::InvalidRequest { .. }), "{err}");
        assert!(!err.is_retryable());
        // Neither the agent's UserSig nor a push URL's txSecret is echoed.
        assert!(!err.to_string().contains(&request.agent_params.user_sig));
        assert!(!err.to_string().contains("f85a2ab363fe4deaffef9754d79da6fe"));
    }
    assert!(double.seen().is_empty());
}

#[tokio::test]
async fn trtc_api_transport_errors_are_retried_for_idempotent_calls() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut config = TrtcApiConfig::new(
        Secret::new(SECRET_ID),
        Secret::new(SECRET_KEY),
        "ap-guangzhou",
    );
    config.endpoint = format!("http://{address}");
    config.initial_backoff = Duration::from_millis(10);
    config.max_attempts = 2;
    let client = TrtcClient::new(config).unwrap();
    let started = std::time::Instant::now();
    let err = client
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TrtcApiError::Transport { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() >= Duration::from_millis(10),
        "not retried"
    );
    assert!(!err.to_string().contains(SECRET_KEY));
}
