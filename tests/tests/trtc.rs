//! The TRTC stand-in (`roomrec_testbed::trtc`) against real clients: requests signed with the
//! shared TC3 signer, ffmpeg relays into its own nginx-rtmp played by ffprobe, and room events
//! received (and their `Sign` checked) by a small local HTTP server.

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use roomrec_api::trtc::tc3::{Secret, Tc3Signer};
use roomrec_api::trtc::usersig::{self, Room, UserBuf, privilege};
use roomrec_testbed::media::{StreamSpec, ffprobe};
use roomrec_testbed::trtc::{
    CallbackRetry, Delivery, EndReason, RelayTask, StandInConfig, TrtcStandIn, event, exit_reason,
};
use roomrec_testbed::wait_until;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const APP: u64 = 1400000000;
const APP_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const OTHER_APP: u64 = 1400000001;
const OTHER_APP_KEY: &str = "another-application-key";
const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
const PUSH_KEY: &str = "e12c46f2612d5106e2034781ab261ca3";
const CALLBACK_KEY: &str = "roomrecCallbackKey42";
const AGENT: &str = "roomrec_agent_1";
const TEACHER: &str = "teacher_1";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A small stream: cheap to encode on two cores, and with both tracks.
fn small() -> StreamSpec {
    StreamSpec {
        width: 320,
        height: 240,
        fps: 15,
        video_kbps: 300,
        ..StreamSpec::default()
    }
}

fn config(dir: &tempfile::TempDir) -> StandInConfig {
    StandInConfig::new(dir.path())
        .app(APP, APP_KEY)
        .app(OTHER_APP, OTHER_APP_KEY)
        .credential(SECRET_ID, SECRET_KEY)
}

fn agent_sig(user: &str) -> String {
    usersig::generate(APP, user, APP_KEY.as_bytes(), now(), 3600, None)
}

/// Signs and sends API requests; each field can be made wrong.
struct Caller {
    secret_id: &'static str,
    secret_key: &'static str,
    region: &'static str,
    version: &'static str,
    skew: i64,
}

impl Default for Caller {
    fn default() -> Self {
        Caller {
            secret_id: SECRET_ID,
            secret_key: SECRET_KEY,
            region: "ap-guangzhou",
            version: "2019-07-22",
            skew: 0,
        }
    }
}

impl Caller {
    async fn send(&self, stand_in: &TrtcStandIn, action: &str, body: &Value) -> Value {
        let host = format!("127.0.0.1:{}", stand_in.api_port());
        let signer = Tc3Signer::new(
            Secret::new(self.secret_id),
            Secret::new(self.secret_key),
            "trtc",
            &host,
            self.version,
        )
        .with_region(self.region);
        let bytes = serde_json::to_vec(body).unwrap();
        let mut request = reqwest::Client::new()
            .post(stand_in.endpoint())
            .body(bytes.clone());
        for (name, value) in signer.sign(action, now() + self.skew, &bytes) {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        // Tencent answers errors with HTTP 200 too.
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }
}

async fn call(stand_in: &TrtcStandIn, action: &str, body: Value) -> Value {
    Caller::default().send(stand_in, action, &body).await
}

fn error_code(answer: &Value) -> Option<&str> {
    answer["Response"]["Error"]["Code"].as_str()
}

fn error_message(answer: &Value) -> &str {
    answer["Response"]["Error"]["Message"]
        .as_str()
        .unwrap_or("")
}

/// StartPublishCdnStream's body exactly as roomrec's operator writes it.
fn start_body(
    room: &str,
    room_id_type: u8,
    agent: &str,
    sig: &str,
    urls: &[String],
    idle: u32,
) -> Value {
    json!({
        "SdkAppId": APP,
        "RoomId": room,
        "RoomIdType": room_id_type,
        "AgentParams": {"UserId": agent, "UserSig": sig, "MaxIdleTime": idle},
        "WithTranscoding": 0,
        "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}},
        "SingleSubscribeParams": {"UserMediaStream": {
            "UserInfo": {"UserId": TEACHER, "RoomId": room, "RoomIdType": room_id_type},
            "StreamType": 0
        }},
        "PublishCdnParams": urls
            .iter()
            .map(|url| json!({"PublishCdnUrl": url, "IsTencentCdn": 1}))
            .collect::<Vec<_>>(),
    })
}

async fn start_relay(stand_in: &TrtcStandIn, body: Value) -> String {
    let answer = call(stand_in, "StartPublishCdnStream", body).await;
    assert_eq!(error_code(&answer), None, "{answer}");
    answer["Response"]["TaskId"].as_str().unwrap().to_string()
}

fn relay(stand_in: &TrtcStandIn, task_id: &str) -> RelayTask {
    stand_in.relay(task_id).unwrap()
}

/// ffprobe of a live RTMP stream, off the async threads.
async fn probe(url: String) -> Option<(Option<String>, Option<String>)> {
    tokio::task::spawn_blocking(move || ffprobe(&url, Duration::from_secs(4)).ok())
        .await
        .unwrap()
        .map(|p| {
            (
                p.codec("video").map(str::to_string),
                p.codec("audio").map(str::to_string),
            )
        })
}

async fn plays_video_and_audio(url: String) -> bool {
    matches!(probe(url).await, Some((Some(v), Some(a))) if v == "h264" && a == "aac")
}

/// One event as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    body: Value,
    raw: Vec<u8>,
    sign: Option<String>,
    sdk_app_id: Option<String>,
    sign_ok: bool,
    status: u16,
}

/// What the receiver answers to an event: the status, after a pause. Given the body and how many
/// times the same body came before.
type Responder = Arc<dyn Fn(&Value, usize) -> (u16, Duration) + Send + Sync>;

/// A room-event receiver on 127.0.0.1: checks `Sign` (base64 HMAC-SHA256 of the raw body with
/// the callback key) itself and answers 401 to a bad or missing one.
struct EventReceiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl EventReceiver {
    async fn start(responder: Responder) -> EventReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/trtc/events", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::<Received>::new()));
        let log = received.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                let responder = responder.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            let responder = responder.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let raw = body.collect().await.unwrap().to_bytes().to_vec();
                                let header = |name: &str| {
                                    parts
                                        .headers
                                        .get(name)
                                        .map(|v| v.to_str().unwrap().to_string())
                                };
                                let sign = header("Sign");
                                let mut mac =
                                    Hmac::<Sha256>::new_from_slice(CALLBACK_KEY.as_bytes())
                                        .unwrap();
                                mac.update(&raw);
                                let expected = base64::engine::general_purpose::STANDARD
                                    .encode(mac.finalize().into_bytes());
                                let sign_ok = sign.as_deref() == Some(expected.as_str());
                                let body: Value =
                                    serde_json::from_slice(&raw).unwrap_or(Value::Null);
                                let seen = log
                                    .lock()
                                    .unwrap()
                                    .iter()
                                    .filter(|r: &&Received| r.raw == raw)
                                    .count();
                                let (status, pause) = if sign_ok {
                                    responder(&body, seen)
                                } else {
                                    (401, Duration::ZERO)
                                };
                                log.lock().unwrap().push(Received {
                                    body,
                                    raw,
                                    sign,
                                    sdk_app_id: header("SdkAppId"),
                                    sign_ok,
                                    status,
                                });
                                tokio::time::sleep(pause).await;
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"{\"code\":0}")))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EventReceiver {
            url,
            received,
            server,
        }
    }

    async fn always_ok() -> EventReceiver {
        Self::start(Arc::new(|_, _| (200, Duration::ZERO))).await
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// (EventType, UserId, Reason) of every event received with a good Sign, in arrival order.
    fn summary(&self) -> Vec<(u64, String, Option<u64>)> {
        self.received()
            .iter()
            .filter(|r| r.sign_ok && r.status == 200)
            .map(|r| {
                (
                    r.body["EventType"].as_u64().unwrap(),
                    r.body["EventInfo"]["UserId"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    r.body["EventInfo"]["Reason"].as_u64(),
                )
            })
            .collect()
    }

    async fn wait_for(&self, event_type: u32, user: &str) -> Received {
        let found = || {
            self.received().into_iter().find(|r| {
                r.status == 200
                    && r.body["EventType"] == json!(event_type)
                    && (user.is_empty() || r.body["EventInfo"]["UserId"] == json!(user))
            })
        };
        wait_until(Duration::from_secs(15), || async { found().is_some() })
            .await
            .unwrap_or_else(|()| {
                panic!(
                    "no event {event_type} for {user:?}; received {:?}",
                    self.summary()
                )
            });
        found().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_checks_tc3_signatures_headers_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = TrtcStandIn::start(config(&dir)).await.unwrap();
    stand_in.anchor(APP, 43474, TEACHER);
    assert_eq!(stand_in.room_users(APP, 43474), [TEACHER]);

    // Signed with the shared signer: accepted and acted on.
    let dismiss = json!({"SdkAppId": APP, "RoomId": 43474});
    let ok = call(&stand_in, "DismissRoom", dismiss.clone()).await;
    assert_eq!(error_code(&ok), None, "{ok}");
    assert!(
        ok["Response"]["RequestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(stand_in.room_users(APP, 43474).is_empty());

    // A clock 290 s off is still accepted (the room is gone now: the model answers).
    let near = Caller {
        skew: -290,
        ..Caller::default()
    };
    let answer = near.send(&stand_in, "DismissRoom", &dismiss).await;
    assert_eq!(
        error_code(&answer),
        Some("FailedOperation.RoomNotExist"),
        "{answer}"
    );

    let cases: Vec<(Caller, &str, Value, &str)> = vec![
        (
            Caller {
                secret_key: "WrongKey0123456789wrongkeyEXAMPLE",
                ..Caller::default()
            },
            "DismissRoom",
            dismiss.clone(),
            "AuthFailure.SignatureFailure",
        ),
        (
            Caller {
                secret_id: "AKIDunknownunknownunknownEXAMPLE",
                ..Caller::default()
            },
            "DismissRoom",
            dismiss.clone(),
            "AuthFailure.SecretIdNotFound",
        ),
        (
            Caller {
                skew: -301,
                ..Caller::default()
            },
            "DismissRoom",
            dismiss.clone(),
            "AuthFailure.SignatureExpire",
        ),
        (
            Caller {
                skew: 400,
                ..Caller::default()
            },
            "DismissRoom",
            dismiss.clone(),
            "AuthFailure.SignatureExpire",
        ),
        (
            Caller {
                region: "mars-north-1",
                ..Caller::default()
            },
            "DismissRoom",
            dismiss.clone(),
            "UnsupportedRegion",
        ),
        (
            Caller {
                version: "2020-01-01",
                ..Caller::default()
            },
            "DismissRoom",
            dismiss.clone(),
            "NoSuchVersion",
        ),
        (
            Caller::default(),
            "DescribeRoomInfo",
            dismiss.clone(),
            "InvalidAction",
        ),
        (
            Caller::default(),
            "DismissRoom",
            json!({"SdkAppId": APP, "RoomId": 43474, "Force": true}),
            "UnknownParameter",
        ),
        (
            Caller::default(),
            "DismissRoom",
            json!({"SdkAppId": APP}),
            "MissingParameter",
        ),
        (
            Caller::default(),
            "DismissRoom",
            json!({"SdkAppId": APP, "RoomId": "43474"}),
            "InvalidParameter",
        ),
        (
            Caller::default(),
            "DismissRoom",
            json!({"SdkAppId": APP, "RoomId": 0}),
            "InvalidParameterValue",
        ),
        (
            Caller::default(),
            "DismissRoom",
            json!({"SdkAppId": 1400009999u64, "RoomId": 1}),
            "InvalidParameterValue.SdkAppId",
        ),
        (
            Caller::default(),
            "RemoveUser",
            json!({"SdkAppId": APP, "RoomId": 1, "UserIds": (0..11).map(|i| format!("u{i}")).collect::<Vec<_>>()}),
            "InvalidParameterValue",
        ),
        (
            Caller::default(),
            "RemoveUserByStrRoomId",
            json!({"SdkAppId": APP, "RoomId": "class/42", "UserIds": ["u"]}),
            "InvalidParameterValue.RoomId",
        ),
        (
            Caller::default(),
            "StartPublishCdnStream",
            {
                let mut body = start_body(
                    "43474",
                    0,
                    AGENT,
                    &agent_sig(AGENT),
                    &["rtmp://127.0.0.1:1/live/s".into()],
                    30,
                );
                body["AudioParams"]["AudioEncode"]["SampleRate"] = json!(22050);
                body
            },
            "InvalidParameterValue",
        ),
        (
            Caller::default(),
            "StartPublishCdnStream",
            {
                let mut body = start_body(
                    "43474",
                    0,
                    AGENT,
                    &agent_sig(AGENT),
                    &["rtmp://127.0.0.1:1/live/s".into()],
                    30,
                );
                body["PublishCdnParams"][0]["IsTencentCdn"] = json!(true);
                body
            },
            "InvalidParameter",
        ),
        (
            Caller::default(),
            "StartPublishCdnStream",
            start_body(
                "043474",
                0,
                AGENT,
                &agent_sig(AGENT),
                &["rtmp://127.0.0.1:1/live/s".into()],
                30,
            ),
            "InvalidParameterValue.RoomId",
        ),
        (
            Caller::default(),
            "StartPublishCdnStream",
            start_body(
                "43474",
                0,
                AGENT,
                &agent_sig(AGENT),
                &["rtmp://127.0.0.1:1/live/s".into()],
                4,
            ),
            "InvalidParameterValue",
        ),
    ];
    for (caller, action, body, code) in &cases {
        let answer = caller.send(&stand_in, action, body).await;
        assert_eq!(
            error_code(&answer),
            Some(*code),
            "{action} {body}: {answer}"
        );
        assert!(answer["Response"]["RequestId"].is_string(), "{answer}");
        // Nothing secret is echoed.
        let text = answer.to_string();
        assert!(!text.contains(SECRET_KEY) && !text.contains(caller.secret_key));
    }

    let log = stand_in.requests();
    assert_eq!(log.len(), 2 + cases.len());
    assert!(log[0].verified && log[0].outcome.is_ok());
    assert_eq!(log[0].action, "DismissRoom");
    assert_eq!(log[0].params, Some(dismiss.clone()));
    // Verified, then refused by the model.
    assert!(log[1].verified);
    assert_eq!(
        log[1].refusal().map(|r| r.code.as_str()),
        Some("FailedOperation.RoomNotExist")
    );
    for (entry, (_, _, _, code)) in log[2..].iter().zip(&cases) {
        assert!(!entry.verified);
        assert_eq!(entry.refusal().map(|r| r.code.as_str()), Some(*code));
    }
    // No relay was started by any of them.
    assert!(stand_in.relays().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_relays_the_anchor_to_css_where_a_player_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = EventReceiver::always_ok().await;
    let stand_in = TrtcStandIn::start(
        config(&dir)
            .push_key(PUSH_KEY)
            .callback(&receiver.url, CALLBACK_KEY),
    )
    .await
    .unwrap();
    let stream = format!("{APP}_43474_{TEACHER}_main");
    let push = stand_in.push_url(&stream, (now() + 3600) as u32);
    assert!(push.contains("txSecret=") && push.contains("txTime="));
    let task_id = start_relay(
        &stand_in,
        start_body(
            "43474",
            0,
            AGENT,
            &agent_sig(AGENT),
            std::slice::from_ref(&push),
            30,
        ),
    )
    .await;
    assert_eq!(stand_in.room_users(APP, 43474), [AGENT]);
    let task = relay(&stand_in, &task_id);
    assert!(task.is_running());
    assert_eq!(task.push_urls(), std::slice::from_ref(&push));
    assert_eq!(
        (task.user_id.as_str(), task.agent_user_id.as_str()),
        (TEACHER, AGENT)
    );

    // Nothing to relay yet: the anchor is not even in the room.
    let play = stand_in.play_url(&stream);
    assert!(probe(play.clone()).await.is_none());

    let teacher = stand_in.anchor(APP, 43474, TEACHER);
    teacher.publish(small()).unwrap();
    wait_until(Duration::from_secs(40), || {
        plays_video_and_audio(play.clone())
    })
    .await
    .unwrap_or_else(|()| panic!("the relay never played: {:?}", relay(&stand_in, &task_id)));
    let check = stand_in
        .publish_checks()
        .into_iter()
        .find(|c| c.stream == stream)
        .unwrap();
    assert!(check.accepted, "{check:?}");
    let field = |name: &str| {
        check
            .form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("call").as_deref(), Some("publish"));
    assert_eq!(field("app").as_deref(), Some("live"));
    assert!(field("txSecret").is_some() && field("txTime").is_some());

    // The anchor stops: the push stops, the stream goes.
    teacher.stop_publishing().unwrap();
    wait_until(Duration::from_secs(20), || async {
        !relay(&stand_in, &task_id).pushes[0].pushing && probe(play.clone()).await.is_none()
    })
    .await
    .expect("the relay went on after the anchor stopped publishing");
    assert!(relay(&stand_in, &task_id).is_running());

    // Publishing again starts the push again.
    teacher.publish(small()).unwrap();
    wait_until(Duration::from_secs(40), || {
        plays_video_and_audio(play.clone())
    })
    .await
    .expect("the relay did not resume");
    let task = relay(&stand_in, &task_id);
    assert_eq!(task.pushes[0].starts, 2, "{task:?}");

    // StopPublishCdnStream ends the task; the agent leaves (104 Reason 1).
    let stop = json!({"SdkAppId": APP, "TaskId": task_id});
    let answer = call(&stand_in, "StopPublishCdnStream", stop.clone()).await;
    assert_eq!(error_code(&answer), None, "{answer}");
    assert_eq!(answer["Response"]["TaskId"], json!(task_id));
    assert_eq!(
        relay(&stand_in, &task_id).end_reason(),
        Some(&EndReason::Stopped)
    );
    assert_eq!(stand_in.room_users(APP, 43474), [TEACHER]);
    wait_until(Duration::from_secs(20), || async {
        probe(play.clone()).await.is_none()
    })
    .await
    .expect("the relay went on after StopPublishCdnStream");
    // Stopping it again: the task is gone, as for any unknown task.
    let again = call(&stand_in, "StopPublishCdnStream", stop).await;
    assert_eq!(error_code(&again), Some("ResourceNotFound"), "{again}");

    let exit = receiver.wait_for(event::EXIT_ROOM, AGENT).await;
    assert_eq!(exit.body["EventInfo"]["Reason"], json!(exit_reason::NORMAL));
    let summary: Vec<(u64, String)> = receiver
        .summary()
        .into_iter()
        .map(|(t, u, _)| (t, u))
        .collect();
    let expected: Vec<(u64, String)> = [
        (101, AGENT),
        (103, AGENT),
        (103, TEACHER),
        (201, TEACHER),
        (203, TEACHER),
        (202, TEACHER),
        (204, TEACHER),
        (201, TEACHER),
        (203, TEACHER),
        (104, AGENT),
    ]
    .iter()
    .map(|(t, u)| (*t, u.to_string()))
    .collect();
    assert_eq!(summary, expected);
    let enter = &receiver.received()[1].body;
    assert_eq!(enter["EventGroupId"], json!(1));
    assert_eq!(enter["EventInfo"]["RoomId"], json!(43474));
    assert_eq!(enter["EventInfo"]["Role"], json!(21));
    let video = &receiver.received()[3].body;
    assert_eq!(video["EventGroupId"], json!(2));
    assert!(receiver.received().iter().all(|r| r.sign_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_css_refuses_pushes_without_a_valid_tx_secret() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = TrtcStandIn::start(config(&dir).push_key(PUSH_KEY))
        .await
        .unwrap();
    let domain = stand_in.push_domain();
    let good = stand_in.push_url("good", (now() + 3600) as u32);
    let wrong_secret = roomrec_api::trtc::push_auth::push_url(
        &domain,
        "wrong",
        "not-the-push-key",
        (now() + 3600) as u32,
    );
    let expired = stand_in.push_url("expired", (now() - 60) as u32);
    let bare = format!("rtmp://{domain}/live/bare");
    let urls = [good, wrong_secret, expired, bare];
    let task_id = start_relay(
        &stand_in,
        start_body("43474", 0, AGENT, &agent_sig(AGENT), &urls, 30),
    )
    .await;
    let teacher = stand_in.anchor(APP, 43474, TEACHER);
    teacher.publish(small()).unwrap();

    wait_until(Duration::from_secs(40), || {
        plays_video_and_audio(stand_in.play_url("good"))
    })
    .await
    .unwrap_or_else(|()| {
        panic!(
            "the good push never played: {:?}",
            relay(&stand_in, &task_id)
        )
    });
    let refused = |stream: &str| {
        stand_in
            .publish_checks()
            .into_iter()
            .find(|c| c.stream == stream && !c.accepted)
    };
    wait_until(Duration::from_secs(20), || async {
        ["wrong", "expired", "bare"]
            .iter()
            .all(|s| refused(s).is_some())
            && relay(&stand_in, &task_id).pushes[1..]
                .iter()
                .all(|p| p.failures >= 1)
    })
    .await
    .unwrap_or_else(|()| {
        panic!(
            "not every bad push was refused: {:?} {:?}",
            stand_in.publish_checks(),
            relay(&stand_in, &task_id)
        )
    });
    let reason = |stream: &str| refused(stream).unwrap().reason.unwrap();
    assert!(
        reason("wrong").contains("txSecret does not match"),
        "{}",
        reason("wrong")
    );
    assert!(
        reason("expired").contains("expired"),
        "{}",
        reason("expired")
    );
    assert!(reason("bare").contains("no txSecret"), "{}", reason("bare"));
    assert!(
        stand_in
            .publish_checks()
            .iter()
            .filter(|c| ["wrong", "expired", "bare"].contains(&c.stream.as_str()))
            .all(|c| !c.accepted)
    );
    // nginx dropped them: they never play, and the relay saw its pushes fail.
    for stream in ["wrong", "expired", "bare"] {
        assert!(
            probe(stand_in.play_url(stream)).await.is_none(),
            "{stream} plays"
        );
    }
    let task = relay(&stand_in, &task_id);
    assert_eq!(task.pushes[0].failures, 0, "{task:?}");
    for push in &task.pushes[1..] {
        assert!(push.failures >= 1, "{push:?}");
    }
    assert!(plays_video_and_audio(stand_in.play_url("good")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_checks_the_agents_usersig_and_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = TrtcStandIn::start(config(&dir)).await.unwrap();
    let url = vec![format!("rtmp://{}/live/s", stand_in.push_domain())];
    let t = now();
    let private_map_key = |room: Room, privileges: u32| {
        let userbuf = UserBuf::new(AGENT, APP as u32, room, (t + 3600) as u32, privileges).unwrap();
        usersig::generate(APP, AGENT, APP_KEY.as_bytes(), t, 3600, Some(&userbuf))
    };
    let bad = [
        (
            usersig::generate(APP, AGENT, b"another key", t, 3600, None),
            "signature does not match",
        ),
        (
            usersig::generate(APP, AGENT, APP_KEY.as_bytes(), t - 7200, 3600, None),
            "expired",
        ),
        (
            usersig::generate(APP, "someone_else", APP_KEY.as_bytes(), t, 3600, None),
            "someone_else",
        ),
        (
            usersig::generate(OTHER_APP, AGENT, OTHER_APP_KEY.as_bytes(), t, 3600, None),
            "SdkAppId 1400000001",
        ),
        (private_map_key(Room::Numeric(1), privilege::ALL), "room 1"),
        (
            private_map_key(Room::Numeric(43474), privilege::RECEIVE_VIDEO),
            "entering",
        ),
        ("not a usersig".to_string(), "UserSig"),
    ];
    for (sig, why) in &bad {
        let answer = call(
            &stand_in,
            "StartPublishCdnStream",
            start_body("43474", 0, AGENT, sig, &url, 30),
        )
        .await;
        assert_eq!(
            error_code(&answer),
            Some("InvalidParameter.UserSig"),
            "{why}: {answer}"
        );
        let message = error_message(&answer);
        assert!(
            message.contains("AgentParams.UserSig") && message.contains(why),
            "{why}: {message}"
        );
    }
    assert!(stand_in.relays().is_empty());
    assert!(stand_in.room_users(APP, 43474).is_empty());

    // A PrivateMapKey for this room with the right to enter is fine.
    let first = start_relay(
        &stand_in,
        start_body(
            "43474",
            0,
            AGENT,
            &private_map_key(Room::Numeric(43474), privilege::ALL),
            &url,
            30,
        ),
    )
    .await;
    // An anchor's UserId cannot be an agent's, and an agent cannot subscribe itself.
    stand_in.anchor(APP, 43474, "student_7");
    let taken = call(
        &stand_in,
        "StartPublishCdnStream",
        start_body("43474", 0, "student_7", &agent_sig("student_7"), &url, 30),
    )
    .await;
    assert_eq!(error_code(&taken), Some("FailedOperation"), "{taken}");
    let itself = call(
        &stand_in,
        "StartPublishCdnStream",
        start_body("43474", 0, TEACHER, &agent_sig(TEACHER), &url, 30),
    )
    .await;
    assert_eq!(error_code(&itself), Some("InvalidParameter"), "{itself}");

    // The same agent UserId again: the earlier task ends (duplicate user), one agent stays.
    let second = start_relay(
        &stand_in,
        start_body("43474", 0, AGENT, &agent_sig(AGENT), &url, 30),
    )
    .await;
    assert_ne!(first, second);
    assert_eq!(
        relay(&stand_in, &first).end_reason(),
        Some(&EndReason::DuplicateUser)
    );
    assert!(relay(&stand_in, &second).is_running());
    assert_eq!(stand_in.room_users(APP, 43474), ["student_7", AGENT]);
    let stopped = call(
        &stand_in,
        "StopPublishCdnStream",
        json!({"SdkAppId": APP, "TaskId": first}),
    )
    .await;
    assert_eq!(error_code(&stopped), Some("ResourceNotFound"), "{stopped}");

    // A client entering with the agent's UserId puts the agent out too.
    stand_in.anchor(APP, 43474, AGENT);
    assert_eq!(
        relay(&stand_in, &second).end_reason(),
        Some(&EndReason::DuplicateUser)
    );
    assert_eq!(stand_in.room_users(APP, 43474), ["student_7", AGENT]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_remove_user_ends_the_relay_with_a_signed_exit_event() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = EventReceiver::always_ok().await;
    let stand_in = TrtcStandIn::start(config(&dir).callback(&receiver.url, CALLBACK_KEY))
        .await
        .unwrap();
    let url = vec![format!("rtmp://{}/live/s", stand_in.push_domain())];
    stand_in.anchor(APP, 43474, TEACHER);
    let task_id = start_relay(
        &stand_in,
        start_body("43474", 0, AGENT, &agent_sig(AGENT), &url, 30),
    )
    .await;
    assert_eq!(stand_in.room_users(APP, 43474), [TEACHER, AGENT]);

    let answer = call(
        &stand_in,
        "RemoveUser",
        json!({"SdkAppId": APP, "RoomId": 43474, "UserIds": [AGENT, "nobody_here"]}),
    )
    .await;
    assert_eq!(error_code(&answer), None, "{answer}");
    assert_eq!(
        relay(&stand_in, &task_id).end_reason(),
        Some(&EndReason::Removed)
    );
    assert_eq!(stand_in.room_users(APP, 43474), [TEACHER]);

    let exit = receiver.wait_for(event::EXIT_ROOM, AGENT).await;
    assert!(exit.sign_ok, "{exit:?}");
    assert_eq!(exit.sdk_app_id.as_deref(), Some("1400000000"));
    let info = &exit.body["EventInfo"];
    assert_eq!(exit.body["EventGroupId"], json!(1));
    assert_eq!(info["Reason"], json!(exit_reason::REMOVED));
    assert_eq!(info["RoomId"], json!(43474));
    assert_eq!(info["Role"], json!(21));
    for field in ["EventTs", "EventMsTs", "TerminalType", "UserType"] {
        assert!(info[field].is_u64(), "{field}: {info}");
    }
    assert!(exit.body["CallbackTs"].is_u64());
    // The Sign is base64(HMAC-SHA256(key, raw body)): the stand-in's log says the same, and
    // that the 200 was taken (recorded once the receiver's answer is back).
    let sent = || {
        stand_in
            .events()
            .into_iter()
            .find(|e| e.raw.as_bytes() == exit.raw.as_slice())
            .unwrap()
    };
    assert_eq!(exit.sign.as_deref(), Some(sent().sign.as_str()));
    wait_until(Duration::from_secs(5), || async {
        sent().delivery == Delivery::Delivered
    })
    .await
    .unwrap_or_else(|()| panic!("not recorded as delivered: {:?}", sent()));

    // Removing the last user ends the room: 104 Reason 3, then 102.
    let answer = call(
        &stand_in,
        "RemoveUser",
        json!({"SdkAppId": APP, "RoomId": 43474, "UserIds": [TEACHER]}),
    )
    .await;
    assert_eq!(error_code(&answer), None, "{answer}");
    receiver.wait_for(event::DISMISS_ROOM, "").await;
    let summary = receiver.summary();
    assert_eq!(
        summary,
        [
            (101, TEACHER.to_string(), None),
            (103, TEACHER.to_string(), Some(1)),
            (103, AGENT.to_string(), Some(1)),
            (104, AGENT.to_string(), Some(3)),
            (104, TEACHER.to_string(), Some(3)),
            (102, String::new(), None),
        ]
    );
    let answer = call(
        &stand_in,
        "RemoveUser",
        json!({"SdkAppId": APP, "RoomId": 43474, "UserIds": [TEACHER]}),
    )
    .await;
    assert_eq!(
        error_code(&answer),
        Some("FailedOperation.RoomNotExist"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_dismiss_room_ends_everything_and_sends_102() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = EventReceiver::always_ok().await;
    let stand_in = TrtcStandIn::start(config(&dir).callback(&receiver.url, CALLBACK_KEY))
        .await
        .unwrap();
    let url = vec![format!("rtmp://{}/live/s", stand_in.push_domain())];
    let teacher = stand_in.anchor(APP, "class-42", TEACHER);
    teacher.publish_aux(small()).unwrap();
    let task_id = start_relay(
        &stand_in,
        start_body("class-42", 1, AGENT, &agent_sig(AGENT), &url, 30),
    )
    .await;
    // Numeric room 42 is another room.
    assert!(stand_in.room_users(APP, 42).is_empty());
    assert_eq!(stand_in.room_users(APP, "class-42"), [TEACHER, AGENT]);

    let dismiss = json!({"SdkAppId": APP, "RoomId": "class-42"});
    let answer = call(&stand_in, "DismissRoomByStrRoomId", dismiss.clone()).await;
    assert_eq!(error_code(&answer), None, "{answer}");
    assert!(stand_in.room_users(APP, "class-42").is_empty());
    assert_eq!(
        relay(&stand_in, &task_id).end_reason(),
        Some(&EndReason::Dismissed)
    );
    assert!(
        teacher.publish(small()).is_err(),
        "a dismissed anchor is out of the room"
    );

    let dismissed = receiver.wait_for(event::DISMISS_ROOM, "").await;
    assert_eq!(dismissed.body["EventInfo"]["RoomId"], json!("class-42"));
    assert!(dismissed.sign_ok);
    let summary = receiver.summary();
    assert_eq!(
        summary,
        [
            (101, TEACHER.to_string(), None),
            (103, TEACHER.to_string(), Some(1)),
            (205, TEACHER.to_string(), None),
            (103, AGENT.to_string(), Some(1)),
            (104, TEACHER.to_string(), Some(3)),
            (104, AGENT.to_string(), Some(3)),
            (102, String::new(), None),
        ]
    );
    let again = call(&stand_in, "DismissRoomByStrRoomId", dismiss).await;
    assert_eq!(
        error_code(&again),
        Some("FailedOperation.RoomNotExist"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_max_idle_time_ends_an_idle_relay() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = EventReceiver::always_ok().await;
    let stand_in = TrtcStandIn::start(config(&dir).callback(&receiver.url, CALLBACK_KEY))
        .await
        .unwrap();
    let url = vec![format!(
        "rtmp://{}/live/{APP}_43474_{TEACHER}_main",
        stand_in.push_domain()
    )];
    let teacher = stand_in.anchor(APP, 43474, TEACHER);
    let task_id = start_relay(
        &stand_in,
        start_body("43474", 0, AGENT, &agent_sig(AGENT), &url, 5),
    )
    .await;
    teacher.publish(small()).unwrap();
    // Longer than MaxIdleTime, but the anchor publishes: the relay goes on.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(relay(&stand_in, &task_id).is_running());

    teacher.stop_publishing().unwrap();
    let stopped = Instant::now();
    wait_until(Duration::from_secs(10), || async {
        !relay(&stand_in, &task_id).is_running()
    })
    .await
    .expect("the idle relay did not end");
    let idle = stopped.elapsed();
    assert!(idle >= Duration::from_millis(4800), "ended after {idle:?}");
    assert_eq!(
        relay(&stand_in, &task_id).end_reason(),
        Some(&EndReason::Idle)
    );
    assert_eq!(stand_in.room_users(APP, 43474), [TEACHER]);
    let exit = receiver.wait_for(event::EXIT_ROOM, AGENT).await;
    assert_eq!(
        exit.body["EventInfo"]["Reason"],
        json!(exit_reason::TIMEOUT)
    );

    // The anchor leaves last: 104 Reason 1, then 102.
    teacher.leave().unwrap();
    receiver.wait_for(event::DISMISS_ROOM, "").await;
    let tail: Vec<_> = receiver.summary().into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        [
            (102, String::new(), None),
            (104, TEACHER.to_string(), Some(1))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_stand_in_retries_callbacks_as_trtc_does() {
    let dir = tempfile::tempdir().unwrap();
    // 101: refused twice, then taken. 103: answered too late once, then taken. 201: never taken.
    let responder: Responder = Arc::new(|body: &Value, seen: usize| {
        match (body["EventType"].as_u64().unwrap_or(0), seen) {
            (101, 0) => (500, Duration::ZERO),
            (101, 1) => (503, Duration::ZERO),
            (103, 0) => (200, Duration::from_millis(1500)),
            (201, _) => (500, Duration::ZERO),
            _ => (200, Duration::ZERO),
        }
    });
    let receiver = EventReceiver::start(responder).await;
    let mut config = config(&dir).callback(&receiver.url, CALLBACK_KEY);
    config.callback_retry = CallbackRetry {
        timeout: Duration::from_secs(1),
        interval: Duration::from_millis(400),
        give_up_after: Duration::from_secs(3),
    };
    let stand_in = TrtcStandIn::start(config).await.unwrap();
    let teacher = stand_in.anchor(APP, 43474, TEACHER);
    teacher
        .publish(StreamSpec {
            audio_codec: None,
            ..small()
        })
        .unwrap();

    wait_until(Duration::from_secs(15), || async {
        stand_in
            .events()
            .iter()
            .all(|e| e.delivery != Delivery::Pending)
    })
    .await
    .unwrap_or_else(|()| panic!("deliveries did not settle: {:?}", stand_in.events()));
    let events: HashMap<u32, _> = stand_in
        .events()
        .into_iter()
        .map(|e| (e.event_type, e))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");

    let create = &events[&101];
    assert_eq!(create.delivery, Delivery::Delivered);
    let answers: Vec<_> = create.attempts.iter().map(|a| a.answer.clone()).collect();
    assert_eq!(answers, [Ok(500), Ok(503), Ok(200)]);
    let gap = |a: &roomrec_testbed::trtc::Attempt, b: &roomrec_testbed::trtc::Attempt| {
        b.at.duration_since(a.at).unwrap()
    };
    // The first retry at once, the next one an interval later.
    assert!(gap(&create.attempts[0], &create.attempts[1]) < Duration::from_millis(300));
    assert!(gap(&create.attempts[1], &create.attempts[2]) >= Duration::from_millis(350));

    let enter = &events[&103];
    assert_eq!(enter.delivery, Delivery::Delivered);
    assert_eq!(enter.attempts.len(), 2, "{enter:?}");
    assert!(enter.attempts[0].answer.is_err(), "{enter:?}");

    let video = &events[&201];
    assert_eq!(video.delivery, Delivery::GaveUp);
    let (first, last) = (
        video.attempts.first().unwrap(),
        video.attempts.last().unwrap(),
    );
    assert!(video.attempts.len() >= 4, "{video:?}");
    assert!(gap(first, last) < Duration::from_secs(3), "{video:?}");
    assert!(video.attempts.iter().all(|a| a.answer == Ok(500)));
    // Every retry is the same body with the same Sign.
    let received = receiver.received();
    let copies: Vec<_> = received
        .iter()
        .filter(|r| r.body["EventType"] == json!(201))
        .collect();
    assert_eq!(copies.len(), video.attempts.len());
    assert!(
        copies
            .iter()
            .all(|r| r.raw == video.raw.as_bytes() && r.sign_ok)
    );

    // Raw sends for receiver tests: a wrong or missing Sign is refused by this receiver.
    let body = br#"{"EventGroupId":1,"EventType":103,"CallbackTs":1,"EventInfo":{"RoomId":1,"EventTs":1,"EventMsTs":1000,"UserId":"mallory","Role":20,"TerminalType":3,"UserType":3,"Reason":1}}"#;
    assert_eq!(stand_in.send_raw(body, Some("d3Jvbmc=")).await, Ok(401));
    assert_eq!(stand_in.send_raw(body, None).await, Ok(401));
    let sign = stand_in.sign(body).unwrap();
    assert_eq!(stand_in.send_raw(body, Some(&sign)).await, Ok(200));
    let last = receiver.received().pop().unwrap();
    assert_eq!(last.sdk_app_id.as_deref(), Some("1400000000"));
    assert!(last.sign_ok);
}
