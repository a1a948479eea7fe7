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
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use roomrec_api::RecordingJob;
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
pub const EXIT_ROOM: u32 = 104;

#[derive(Clone)]
pub struct Receiver {
    client: Client,
    namespace: Option<String>,
    key: Arc<Vec<u8>>,
    metrics: Arc<Metrics>,
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
}

impl Receiver {
    pub fn new(
        client: Client,
        namespace: Option<String>,
        key: Vec<u8>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            namespace,
            key: Arc::new(key),
            metrics,
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

    /// Records the event in every job it concerns; how many.
    async fn apply(&self, sdk_app_id: u64, event: &Event) -> Result<usize, kube::Error> {
        let info = &event.event_info;
        let at = jiff::Timestamp::from_second(info.event_ts)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let patch_of = |job: &RecordingJob| -> Option<Value> {
            match event.event_type {
                ROOM_DISMISSED => Some(json!({"status": {"room": {"dismissedAt": at}}})),
                EXIT_ROOM => {
                    let agent = job.status.as_ref()?.workers.iter().find_map(|w| {
                        w.relay.as_ref().filter(|r| r.agent_user_id == info.user_id)
                    })?;
                    Some(json!({"status": {"room": {"agentExits": {
                        agent.agent_user_id.clone(): {"reason": info.reason, "at": at}
                    }}}}))
                }
                _ => None,
            }
        };
        if !matches!(event.event_type, ROOM_DISMISSED | EXIT_ROOM) {
            return Ok(0);
        }
        let api: Api<RecordingJob> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut applied = 0;
        for job in api.list(&ListParams::default()).await?.items {
            if !in_room(&job, sdk_app_id, &info.room_id) {
                continue;
            }
            let Some(patch) = patch_of(&job) else {
                continue;
            };
            let jobs: Api<RecordingJob> =
                Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            jobs.patch_status(&job.name_any(), &params, &Patch::Merge(&patch))
                .await?;
            applied += 1;
        }
        Ok(applied)
    }
}

/// The job records this room of this application (a room id given as a number or a string).
fn in_room(job: &RecordingJob, sdk_app_id: u64, room: &Value) -> bool {
    let Some(trtc) = &job.spec.source.trtc else {
        return false;
    };
    if trtc.sdk_app_id != sdk_app_id {
        return false;
    }
    let room = match room {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    match (trtc.room_id, &trtc.str_room_id) {
        (Some(id), _) => id.to_string() == room,
        (None, Some(s)) => *s == room,
        (None, None) => false,
    }
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
        assert!(in_room(&job, 1400000000, &json!(43474)));
        assert!(in_room(&job, 1400000000, &json!("43474")));
        assert!(!in_room(&job, 1400000001, &json!(43474)));
        assert!(!in_room(&job, 1400000000, &json!(43475)));
    }
}
