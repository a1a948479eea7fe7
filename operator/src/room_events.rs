//! TRTC's room event callback (console → application → callback; `--room-events-address`).
//! Each POST is checked before anything else: its `Sign` header must be base64(HMAC-SHA256(the
//! callback key, the raw body)), compared in constant time, and its `CallbackTs` recent (TRTC
//! retries for a minute; older is a replay). Then the event is recorded in the status of each
//! RecordingJob of that room (`status.room`, a field of its own written by merge patch) and the
//! controller decides from there — so an event survives an operator restart, and the same event
//! twice writes the same values. TRTC wants an answer within 5 s; every answer is immediate.
//!
//! What ends recordings: 102 (room dismissed) ends every recording of the room's jobs
//! (`room-dismissed`); 104 (exit) of a relay's agent ends that person's recording: reason 3
//! (RemoveUser) as `removed`, any other reason (TRTC's MaxIdleTime: no anchor published for the
//! idle time) as `room-idle`. Other events are acknowledged and logged.

use crate::metrics::Metrics;
use crate::room_presence::{self, EXIT_ROOM, Presence};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use roomrec_api::RecordingJob;
use roomrec_api::crd::{AgentExit, RoomStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Larger bodies are not TRTC's.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Events older than this (by their CallbackTs) are refused as replays.
const MAX_AGE_SECONDS: i64 = 300;
/// The field manager of `status.room`.
pub const FIELD_MANAGER: &str = "roomrec-operator-room-events";

pub const ROOM_DISMISSED: u32 = 102;

#[derive(Clone)]
pub struct Receiver {
    client: Client,
    namespace: Option<String>,
    key: Arc<Vec<u8>>,
    metrics: Arc<Metrics>,
    presence: Arc<Presence>,
}

/// The parts of an event roomrec reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Event {
    event_type: u32,
    callback_ts: i64,
    event_info: EventInfo,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventInfo {
    /// A number or a string, as the client entered the room.
    room_id: Value,
    event_ts: i64,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    reason: u32,
    /// The event's time in milliseconds (older senders: EventTs only).
    #[serde(default)]
    event_ms_ts: Option<i64>,
}

impl EventInfo {
    fn at_ms(&self) -> i64 {
        self.event_ms_ts
            .unwrap_or(self.event_ts.saturating_mul(1000))
    }
}

impl Receiver {
    pub fn new(
        client: Client,
        namespace: Option<String>,
        key: Vec<u8>,
        metrics: Arc<Metrics>,
        presence: Arc<Presence>,
    ) -> Self {
        Self {
            client,
            namespace,
            key: Arc::new(key),
            metrics,
            presence,
        }
    }

    fn count(&self, result: &str) {
        self.metrics.room_events.with_label_values(&[result]).inc();
    }

    /// One callback: the HTTP status and a short body.
    async fn handle(
        &self,
        sdk_app_id: Option<u64>,
        sign: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, String) {
        if !signed(&self.key, sign, body) {
            self.count("refused-signature");
            return (StatusCode::UNAUTHORIZED, "bad or missing Sign\n".into());
        }
        let event: Event = match serde_json::from_slice(body) {
            Ok(event) => event,
            Err(e) => {
                self.count("refused-malformed");
                return (StatusCode::BAD_REQUEST, format!("not a TRTC event: {e}\n"));
            }
        };
        let now = jiff::Timestamp::now().as_second();
        if (now - event.callback_ts / 1000).abs() > MAX_AGE_SECONDS {
            self.count("refused-stale");
            return (StatusCode::BAD_REQUEST, "stale event (CallbackTs)\n".into());
        }
        let Some(sdk_app_id) = sdk_app_id else {
            self.count("refused-malformed");
            return (StatusCode::BAD_REQUEST, "no SdkAppId header\n".into());
        };
        match self.apply(sdk_app_id, &event).await {
            Ok(0) => {
                info!(
                    event = event.event_type,
                    sdk_app_id, "room event acknowledged: no job of this operator follows it"
                );
                self.count("ignored");
                (StatusCode::OK, "{\"code\":0}".into())
            }
            Ok(n) => {
                info!(
                    event = event.event_type,
                    sdk_app_id,
                    jobs = n,
                    "room event recorded"
                );
                self.count("applied");
                (StatusCode::OK, "{\"code\":0}".into())
            }
            // TRTC retries a non-200: the event is not lost to a passing API server fault.
            Err(e) => {
                warn!(event = event.event_type, error = %e, "recording a room event failed");
                (StatusCode::SERVICE_UNAVAILABLE, "try again\n".into())
            }
        }
    }

    /// Records the event in every job it concerns (and in the operator's memory of who
    /// publishes); how many jobs.
    async fn apply(&self, sdk_app_id: u64, event: &Event) -> Result<usize, kube::Error> {
        let info = &event.event_info;
        let Some(room) = room_text(&info.room_id) else {
            return Ok(0);
        };
        if room_presence::is_presence_event(event.event_type) {
            self.presence.record(
                sdk_app_id,
                &room,
                event.event_type,
                &info.user_id,
                info.at_ms(),
            );
        }
        if event.event_type == ROOM_DISMISSED {
            self.presence.forget(sdk_app_id, &room);
        }
        if event.event_type != ROOM_DISMISSED && !room_presence::is_presence_event(event.event_type)
        {
            return Ok(0);
        }
        let api: Api<RecordingJob> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut applied = 0;
        let remembered = self.presence.publishing(sdk_app_id, &room);
        for job in api.list(&ListParams::default()).await?.items {
            if in_room(&job, sdk_app_id, &room) && self.record_in(job, event, &remembered).await? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Writes the event into one job's `status.room`, unless it changes nothing there. The
    /// write names the resourceVersion it read, so two events of the same room (or an event
    /// and the controller's seeding) never overwrite each other: a conflict reads again.
    async fn record_in(
        &self,
        mut job: RecordingJob,
        event: &Event,
        remembered: &room_presence::People,
    ) -> Result<bool, kube::Error> {
        let jobs: Api<RecordingJob> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        let name = job.name_any();
        for _ in 0..CONFLICT_RETRIES {
            let Some(room) = updated_room(&job, event, remembered) else {
                return Ok(false);
            };
            match write_room(&jobs, &job, &room).await {
                Ok(()) => return Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    job = jobs.get(&name).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(kube::Error::Api(
            kube::core::Status::failure(
                &format!("{name}: status.room kept changing under {CONFLICT_RETRIES} writes"),
                "Conflict",
            )
            .with_code(409)
            .boxed(),
        ))
    }
}

/// Tries of a room write that meets a newer version of the job.
const CONFLICT_RETRIES: usize = 5;

/// Writes `room` as the job's `status.room`, if the job is still at the version read.
pub async fn write_room(
    jobs: &Api<RecordingJob>,
    job: &RecordingJob,
    room: &RoomStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": {"resourceVersion": job.resource_version()},
        "status": {"room": room},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    jobs.patch_status(&job.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// The job's `status.room` with the event in it, or None when the event changes nothing for
/// this job.
fn updated_room(
    job: &RecordingJob,
    event: &Event,
    remembered: &room_presence::People,
) -> Option<RoomStatus> {
    let info = &event.event_info;
    let old = job
        .status
        .as_ref()
        .and_then(|s| s.room.clone())
        .unwrap_or_default();
    let mut room = old.clone();
    let at = jiff::Timestamp::from_second(info.event_ts)
        .map(|t| t.to_string())
        .unwrap_or_default();
    if event.event_type == ROOM_DISMISSED {
        room.dismissed_at.get_or_insert(at.clone());
    }
    if event.event_type == EXIT_ROOM {
        let agent = job.status.as_ref().and_then(|s| {
            s.workers
                .iter()
                .find_map(|w| w.relay.as_ref().filter(|r| r.agent_user_id == info.user_id))
        });
        if let Some(agent) = agent {
            room.agent_exits.insert(
                agent.agent_user_id.clone(),
                AgentExit {
                    reason: info.reason,
                    at,
                },
            );
        }
    }
    if let Some(trtc) = job
        .spec
        .source
        .trtc
        .as_ref()
        .filter(|t| t.starts_on_publish())
    {
        // Whoever the operator knows to publish already (no event will tell this job).
        let mut remembered = remembered.clone();
        remembered.retain(|_, p| room_presence::wanted(trtc, &p.user_id, p.stream));
        room_presence::merge_remembered(&mut room.people, remembered);
        room_presence::apply(
            &mut room.people,
            event.event_type,
            &info.user_id,
            info.at_ms(),
            |user, stream| room_presence::wanted(trtc, user, stream),
        );
    }
    (room != old).then_some(room)
}

/// A room id as the client entered it (a number or a string), as text.
fn room_text(room: &Value) -> Option<String> {
    match room {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The job records this room of this application.
pub fn in_room(job: &RecordingJob, sdk_app_id: u64, room: &str) -> bool {
    let Some(trtc) = &job.spec.source.trtc else {
        return false;
    };
    trtc.sdk_app_id == sdk_app_id && trtc.room_text().as_deref() == Some(room)
}

/// `sign` is base64(HMAC-SHA256(key, body)), checked in constant time.
fn signed(key: &[u8], sign: Option<&str>, body: &[u8]) -> bool {
    let Some(given) = sign.and_then(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
    }) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Binds now (a bad address fails at start) and serves until the process ends.
pub async fn serve(address: SocketAddr, receiver: Receiver) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    crate::http::spawn_server(listener, move |request| {
        let receiver = receiver.clone();
        async move { answer(&receiver, request).await }
    });
    Ok(bound)
}

async fn answer(
    receiver: &Receiver,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (status, body) = if request.method() != hyper::Method::POST {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST TRTC room events here\n".to_string(),
        )
    } else {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let sign = header("Sign");
        let sdk_app_id = header("SdkAppId").and_then(|v| v.trim().parse().ok());
        match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => {
                receiver
                    .handle(sdk_app_id, sign.as_deref(), &body.to_bytes())
                    .await
            }
            Err(_) => {
                receiver.count("refused-malformed");
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large\n".to_string(),
                )
            }
        }
    };
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_callback_keys_signature_of_the_exact_body_is_accepted() {
        let key = b"abcdefghijklmnopqrstuvwxyz012345";
        let body = br#"{"EventGroupId":1,"EventType":102}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert!(signed(key, Some(&sign), body));
        assert!(!signed(
            key,
            Some(&sign),
            br#"{"EventGroupId":1,"EventType":103}"#
        ));
        assert!(!signed(b"another key", Some(&sign), body));
        assert!(!signed(key, None, body));
        assert!(!signed(key, Some("not base64!"), body));
    }

    #[test]
    fn a_room_matches_by_app_and_id_as_number_or_string() {
        let job: RecordingJob = serde_json::from_value(json!({
            "apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
            "metadata": {"name": "j", "namespace": "n"},
            "spec": {"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 43474, "userId": "r",
                                          "record": ["a"], "playDomain": "p"}}},
        }))
        .unwrap();
        let room = |v: Value| room_text(&v).unwrap();
        assert!(in_room(&job, 1400000000, &room(json!(43474))));
        assert!(in_room(&job, 1400000000, &room(json!("43474"))));
        assert!(!in_room(&job, 1400000001, &room(json!(43474))));
        assert!(!in_room(&job, 1400000000, &room(json!(43475))));
        assert_eq!(room_text(&json!(null)), None);
    }

    use proptest::prelude::*;

    /// A job following the whole room 1400000000/43474 (screen shares too), with one relay.
    fn whole_room_job() -> RecordingJob {
        serde_json::from_value(json!({
            "apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
            "metadata": {"name": "j", "namespace": "n"},
            "spec": {"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 43474, "userId": "r",
                                          "wholeRoom": {"screenShare": true}, "playDomain": "p"}}},
            "status": {"workers": [{"userId": "a", "state": "Recording", "attempts": 1,
                "relay": {"taskId": "t", "agentUserId": "r_1", "startedAt": "2026-12-07T10:00:00Z"}}]}
        }))
        .unwrap()
    }

    /// An event as a sender that is not TRTC might write it: TRTC's fields with values of any
    /// type and size, the event types roomrec reads more often than not.
    fn event_like() -> impl Strategy<Value = Value> {
        let int = prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from)
        ];
        let anything = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            int.clone(),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,20}".prop_map(Value::from),
        ];
        let event_type = prop_oneof![
            3 => prop::sample::select(vec![101u32, 102, 103, 104, 201, 202, 203, 204, 205, 206])
                .prop_map(Value::from),
            1 => anything.clone(),
        ];
        let user = prop_oneof![
            3 => prop::sample::select(vec!["a", "b", "r_1", ""]).prop_map(Value::from),
            1 => anything.clone(),
        ];
        (
            event_type,
            int.clone(),
            anything.clone(),
            int.clone(),
            user,
            int.clone(),
            anything,
        )
            .prop_map(
                |(event_type, callback_ts, room, event_ts, user, reason, ms)| {
                    json!({"EventGroupId": 1, "EventType": event_type, "CallbackTs": callback_ts,
                       "EventInfo": {"RoomId": room, "EventTs": event_ts, "UserId": user,
                                     "Reason": reason, "EventMsTs": ms}})
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_body_is_refused_or_read_without_a_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = signed(b"key", Some("c2lnbg=="), &body);
            if let Ok(event) = serde_json::from_slice::<Event>(&body) {
                let _ = updated_room(&whole_room_job(), &event, &Default::default());
            }
        }

        #[test]
        fn any_event_shaped_json_changes_the_room_into_a_valid_status_or_not_at_all(v in event_like()) {
            let Ok(event) = serde_json::from_value::<Event>(v.clone()) else {
                return Ok(());
            };
            let _ = room_text(&event.event_info.room_id);
            if let Some(room) = updated_room(&whole_room_job(), &event, &Default::default()) {
                // What is written into status.room reads back as the same status.
                let text = serde_json::to_value(&room).unwrap();
                let back: RoomStatus = serde_json::from_value(text).unwrap();
                prop_assert_eq!(back, room);
            }
        }
    }
}
