//! Callback: the end-of-job POST and its retry state machine (`status.callback`: attempts,
//! backoff, delivered, gave up). The payload is the heritage one, exactly (`SdkAppId`, `RoomId`, `UserId`,
//! `StrRoomId`, `Files[{UserId, RecordFile, Status, Message}]`), so receivers written for the
//! serverless template keep working. roomrec's additions travel in headers only:
//!
//! - `Idempotency-Key`: the job's uid, the same on every retry (a receiver that saw it skips).
//! - `X-Roomrec-Job` (`namespace/name`) and `X-Roomrec-Phase`.
//! - `X-Roomrec-Signature: t={unix seconds},v1={hex HMAC-SHA256(key, "{t}.{body}")}` when
//!   `spec.callback.signingSecret` is set (the timestamp in the MAC stops replays).

use crate::build;
use crate::controller::Context;
use crate::secrets;
use crate::settings::backoff;
use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use kube::ResourceExt;
use roomrec_api::crd::{CallbackStatus, FileStatus, Phase, RecordingJob, RecordingJobStatus};
use roomrec_api::{FileState, StopReason};
use serde::Serialize;
use sha2::Sha256;
use std::time::Duration;

#[derive(Serialize, Debug, PartialEq)]
pub struct Payload {
    #[serde(rename = "SdkAppId")]
    pub sdk_app_id: u64,
    #[serde(rename = "RoomId")]
    pub room_id: u64,
    #[serde(rename = "UserId")]
    pub user_id: String,
    #[serde(rename = "StrRoomId")]
    pub str_room_id: String,
    #[serde(rename = "Files")]
    pub files: Vec<PayloadFile>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct PayloadFile {
    #[serde(rename = "UserId")]
    pub user_id: String,
    #[serde(rename = "RecordFile")]
    pub record_file: String,
    /// 1 stored, 0 failed.
    #[serde(rename = "Status")]
    pub status: u8,
    #[serde(rename = "Message")]
    pub message: String,
}

/// The payload for an ended job: every file in person then part order, and a failed entry for
/// a person with no file (so "nothing recorded" is never an empty list).
pub fn payload(job: &RecordingJob) -> Payload {
    let status = job.status.clone().unwrap_or_default();
    let people = build::people(job);
    let mut files: Vec<&FileStatus> = status.files.iter().collect();
    let order = |f: &FileStatus| {
        people
            .iter()
            .position(|p| p.user_id == f.user_id)
            .unwrap_or(usize::MAX)
    };
    files.sort_by(|a, b| (order(a), a.part, &a.url).cmp(&(order(b), b.part, &b.url)));
    // The room's end of a person's recording (removed, room idle, room dismissed) is what the
    // heritage users asked for: their stored files say so; any other end leaves it empty.
    // A person who left before the room ended (a whole room's) carries the room's end too.
    let is_room_end = |r: &StopReason| {
        matches!(
            r,
            StopReason::Removed | StopReason::RoomIdle | StopReason::RoomDismissed
        )
    };
    let room_end = |user_id: &str| -> String {
        status
            .workers
            .iter()
            .find(|w| people.len() == 1 || w.user_id == user_id)
            .and_then(|w| w.stop_reason)
            .filter(is_room_end)
            .or(status.stop_reason.filter(is_room_end))
            .map(|r| r.as_str().to_string())
            .unwrap_or_default()
    };
    let mut out: Vec<PayloadFile> = files
        .iter()
        .map(|f| PayloadFile {
            user_id: f.user_id.clone(),
            record_file: f.url.clone(),
            status: u8::from(f.status == FileState::Succeeded),
            message: match f.status {
                FileState::Succeeded => room_end(&f.user_id),
                FileState::Recording if f.message.is_empty() => {
                    "the worker stopped before closing this file".into()
                }
                _ => f.message.clone(),
            },
        })
        .collect();
    for person in &people {
        let has_files = if people.len() == 1 {
            !status.files.is_empty()
        } else {
            status.files.iter().any(|f| f.user_id == person.user_id)
        };
        if !has_files {
            let message = status
                .workers
                .iter()
                .find(|w| w.user_id == person.key)
                .map(|w| w.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "nothing was recorded".into());
            out.push(PayloadFile {
                user_id: person.user_id.clone(),
                record_file: String::new(),
                status: 0,
                message,
            });
        }
    }
    let trtc = job.spec.source.trtc.as_ref();
    Payload {
        sdk_app_id: trtc.map(|t| t.sdk_app_id).unwrap_or(0),
        room_id: trtc.and_then(|t| t.room_id).unwrap_or(0),
        user_id: trtc
            .map(|t| t.user_id.clone())
            .or_else(|| people.first().map(|p| p.user_id.clone()))
            .unwrap_or_default(),
        str_room_id: trtc.and_then(|t| t.str_room_id.clone()).unwrap_or_default(),
        files: out,
    }
}

/// Delivers the callback when it is due; returns when to try again.
pub(crate) async fn step(
    ended: &RecordingJob,
    status: &mut RecordingJobStatus,
    ctx: &Context,
    now: Timestamp,
    deleting: bool,
) -> Option<Duration> {
    let settings = &ctx.settings.callback;
    let mut state = status.callback.clone().unwrap_or_default();
    if state.delivered_at.is_some() || state.gave_up {
        return None;
    }
    if let Some(last) = state
        .last_attempt_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
    {
        let due = backoff(settings.backoff, state.attempts);
        let since = now.duration_since(last).unsigned_abs();
        // A job being deleted gets one more try now: there is no later.
        if since < due && !deleting {
            return Some(due - since);
        }
    }
    let phase = status.phase.unwrap_or(Phase::Failed);
    let key = match signing_key(ended, ctx).await {
        Ok(key) => key,
        Err(problem) => {
            state.attempts += 1;
            state.last_attempt_at = Some(now.to_string());
            state.last_error = Some(problem.clone());
            ctx.metrics.callback_failures.inc();
            ctx.event(ended, true, "CallbackFailed", problem).await;
            state.gave_up = state.attempts >= settings.max_attempts;
            status.callback = Some(state.clone());
            return (!state.gave_up).then(|| backoff(settings.backoff, state.attempts));
        }
    };
    let result = deliver(&ctx.http, ended, phase, key.as_deref(), settings.timeout).await;
    state.attempts += 1;
    state.last_attempt_at = Some(Timestamp::now().to_string());
    let next = match result {
        Ok(()) => {
            ctx.metrics.callback_deliveries.inc();
            state.delivered_at = Some(Timestamp::now().to_string());
            state.last_error = None;
            ctx.event(
                ended,
                false,
                "CallbackDelivered",
                format!("after {} attempt(s)", state.attempts),
            )
            .await;
            None
        }
        Err(problem) => {
            ctx.metrics.callback_failures.inc();
            state.gave_up = state.attempts >= settings.max_attempts;
            let note = if state.gave_up {
                format!("gave up after {} attempts: {problem}", state.attempts)
            } else {
                problem.clone()
            };
            ctx.event(ended, true, "CallbackFailed", note).await;
            state.last_error = Some(problem);
            (!state.gave_up).then(|| backoff(settings.backoff, state.attempts))
        }
    };
    status.callback = Some(CallbackStatus { ..state });
    next
}

async fn signing_key(job: &RecordingJob, ctx: &Context) -> Result<Option<Vec<u8>>, String> {
    let Some(reference) = job
        .spec
        .callback
        .as_ref()
        .and_then(|c| c.signing_secret.as_ref())
    else {
        return Ok(None);
    };
    let ns = job.namespace().unwrap_or_default();
    secrets::read_key(&ctx.client, &ns, reference, "spec.callback.signingSecret")
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// `t={timestamp},v1={hex HMAC-SHA256(key, "{timestamp}.{body}")}`.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// One POST. Ok when the receiver answered 2xx.
/// The most of a refusing receiver's body that is read (and quoted, up to 200 characters).
const REFUSAL_BODY_BYTES: usize = 4096;

/// The client callbacks go out with. Redirects are not followed: the body names the job's files
/// and is signed for the receiver the job names, not for wherever that receiver points.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client without custom TLS settings builds")
}

pub async fn deliver(
    http: &reqwest::Client,
    job: &RecordingJob,
    phase: Phase,
    signing_key: Option<&[u8]>,
    timeout: Duration,
) -> Result<(), String> {
    let callback = job
        .spec
        .callback
        .as_ref()
        .ok_or("the job has no callback")?;
    let body = serde_json::to_vec(&payload(job)).expect("the payload serializes");
    let mut request = http
        .post(&callback.url)
        .timeout(timeout)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", job.uid().unwrap_or_default())
        .header(
            "X-Roomrec-Job",
            format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        )
        .header("X-Roomrec-Phase", phase.as_str());
    if let Some(key) = signing_key {
        let now = jiff::Timestamp::now().as_second();
        request = request.header("X-Roomrec-Signature", signature(key, now, &body));
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {} failed: {}", callback.url, error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("nowhere");
        return Err(format!(
            "POST {} answered {status} to {to}: redirects are not followed; set \
             spec.callback.url to the address that takes the callback",
            callback.url
        ));
    }
    // A refusal's reason, from the start of its body only: a receiver decides how much it sends.
    let mut response = response;
    let mut head = Vec::new();
    while head.len() < REFUSAL_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text: String = String::from_utf8_lossy(&head)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Err(format!("POST {} answered {status}: {text}", callback.url))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
