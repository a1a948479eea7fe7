//! The TRTC API client against a local stand-in for Tencent's cloud API (trtc.tencentcloudapi.com
//! cannot be reached from here): a hyper HTTP/1 server that checks every request as strictly as
//! Tencent would, with the test bed's shared checker (`roomrec_testbed::trtc::check::Checker`:
//! TC3-HMAC-SHA256 signature with the verifier of `roomrec-api`, X-TC-* headers, the action's
//! JSON fields and their types, the agent's UserSig) — the same one the test bed's TRTC stand-in
//! uses — and answers with success or a chosen error code. One test also drives the test bed's
//! whole TRTC stand-in (`roomrec_testbed::trtc::TrtcStandIn`) with the client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use roomrec_api::trtc::tc3::Secret;
use roomrec_api::trtc::usersig;
use roomrec_operator::trtc_api::*;
use roomrec_testbed::trtc::check::{Checker, HttpRequest};
use serde_json::{Value, json};
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
    let checked = checker(host).check(
        &HttpRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body: &body,
        },
        now(),
    );
    let mut state = state.lock().unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    if let Err(refusal) = checked {
        let (code, message) = (refusal.code, refusal.message);
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

/// Everything Tencent checks before acting (transport, signature, common headers, the action's
/// parameters and the agent's UserSig): the test bed's shared checker, knowing this test's
/// credential, application and regions, for requests to `host`.
fn checker(host: &str) -> Checker {
    Checker {
        credentials: [(SECRET_ID.to_string(), SECRET_KEY.to_string())].into(),
        apps: [(SDK_APP_ID, APP_KEY.to_string())].into(),
        regions: REGIONS.map(String::from).to_vec(),
        host: Some(host.to_string()),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_api_client_drives_the_test_beds_trtc_stand_in() {
    use roomrec_testbed::media::StreamSpec;
    use roomrec_testbed::trtc::{EndReason, StandInConfig, TrtcStandIn};
    const PUSH_KEY: &str = "e12c46f2612d5106e2034781ab261ca3";
    let dir = tempfile::tempdir().unwrap();
    let stand_in = TrtcStandIn::start(
        StandInConfig::new(dir.path())
            .app(SDK_APP_ID, APP_KEY)
            .credential(SECRET_ID, SECRET_KEY)
            .push_key(PUSH_KEY),
    )
    .await
    .unwrap();
    let mut config = TrtcApiConfig::new(
        Secret::new(SECRET_ID),
        Secret::new(SECRET_KEY),
        "ap-guangzhou",
    );
    config.endpoint = stand_in.endpoint();
    let client = TrtcClient::new(config).unwrap();

    // The operator's exact StartPublishCdnStream, with a push URL signed for the stand-in's CSS.
    let stream = "1400000000_43474_teacher_1_main";
    let mut request = start_request(agent_usersig());
    request.publish_cdn_params[0].publish_cdn_url =
        stand_in.push_url(stream, (now() + 3600) as u32);
    let started = client.start_publish_cdn_stream(&request).await.unwrap();
    assert_eq!(stand_in.room_users(SDK_APP_ID, 43474), ["roomrec_agent_1"]);
    let teacher = stand_in.anchor(SDK_APP_ID, 43474, "teacher_1");
    teacher
        .publish(StreamSpec {
            width: 320,
            height: 240,
            fps: 15,
            video_kbps: 300,
            ..StreamSpec::default()
        })
        .unwrap();
    // CSS takes the relay's push: the txSecret the operator's way of signing makes verifies.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stand_in
        .publish_checks()
        .iter()
        .any(|c| c.stream == stream && c.accepted)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay's push was not taken: {:?} {:?}",
            stand_in.publish_checks(),
            stand_in.relay(&started.task_id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stopped once for real; stopping again meets TRTC's answer for a task that no longer runs,
    // which `relay::stop` counts as stopped.
    roomrec_operator::relay::stop(&client, SDK_APP_ID, &started.task_id)
        .await
        .unwrap();
    let task = stand_in.relay(&started.task_id).unwrap();
    assert_eq!(task.end_reason(), Some(&EndReason::Stopped));
    let err = client
        .stop_publish_cdn_stream(&StopPublishCdnStreamRequest {
            sdk_app_id: SDK_APP_ID,
            task_id: started.task_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFound"));
    assert!(!err.is_retryable());
    roomrec_operator::relay::stop(&client, SDK_APP_ID, &started.task_id)
        .await
        .unwrap();

    client
        .remove_user(&RemoveUserRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
            user_ids: vec!["teacher_1".into()],
        })
        .await
        .unwrap();
    assert!(stand_in.room_users(SDK_APP_ID, 43474).is_empty());
    let err = client
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: SDK_APP_ID,
            room_id: 43474,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("FailedOperation.RoomNotExist"));
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 6);
    assert!(requests.iter().all(|r| r.verified), "{requests:?}");
}
