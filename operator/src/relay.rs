//! Relays roomrec starts (`spec.source.trtc.relay: start`): one StartPublishCdnStream task per
//! recorded person, whose agent joins the room as the recording identity and pushes the
//! person's stream, untranscoded, to the job's push domain under the relay's standard stream id
//! — so the worker plays it exactly as it plays an existing relay to CDN.
//!
//! Every relay started is written into the person's `status.workers[].relay` before anything
//! else happens, and stopped (StopPublishCdnStream) once that person's recording has ended, so
//! an operator restart finds every relay in the status and none is left running. A second
//! start with the same agent UserId ends TRTC's earlier task (one user cannot be in a room
//! twice), so a start whose status write was lost leaves no orphan either.

use crate::build::Person;
use crate::secrets::{self, SecretError};
use crate::trtc_api::{
    AgentParams, AudioEncode, AudioParams, PublishCdnParam, RoomIdType, SingleSubscribeParams,
    StartPublishCdnStreamRequest, StopPublishCdnStreamRequest, StreamType, TrtcApiError,
    TrtcClient, UserInfo, UserMediaStream,
};
use kube::{Client, ResourceExt};
use roomrec_api::crd::{RecordingJob, RelayMode, RelayStatus, TrtcSource};
use roomrec_api::relay::{RelayStream, StreamIdForm, StreamKind};
use roomrec_api::trtc::{push_auth, usersig};

/// The worker of a relay roomrec started waits this much longer for media than the relay's
/// `MaxIdleTime` (the job's idle timeout): when the room goes idle, TRTC's verdict (the agent's
/// exit, a room event) then arrives before the worker gives up on its own, and the recording
/// ends as `room-idle` rather than `idle-timeout`.
pub const VERDICT_GRACE_SECONDS: u32 = 30;

/// TRTC's longest user id.
const MAX_USER_ID_BYTES: usize = 32;
/// A UserSig roomrec makes lives this long: the agent needs it only to enter the room.
pub const GENERATED_USERSIG_SECONDS: i64 = 3600;
/// A UserSig must stay valid at least this long after the check, or the relay could not start.
const USERSIG_MARGIN_SECONDS: i64 = 60;
/// How long a push URL's txTime allows the relay to (re)connect to the push domain: the longest
/// recording a job may ask for.
const PUSH_URL_SECONDS: i64 = 7 * 24 * 3600;

/// The TRTC source, when the job asks roomrec to start its relays.
pub fn started_by_roomrec(job: &RecordingJob) -> Option<&TrtcSource> {
    job.spec
        .source
        .trtc
        .as_ref()
        .filter(|t| t.relay == RelayMode::Start)
}

/// The agent's UserId for `person`: the job's `userId` when one named person is recorded (so
/// the heritage `RemoveUser` of that identity works unchanged); with several (or a whole
/// room), TRTC refuses one user twice in a room, so each agent is `{userId}_{n}` (n = the
/// person's position in `record`, or in the room's order of publishing, from 1), the `userId`
/// cut so the whole fits TRTC's 32 bytes.
pub fn agent_user_id(trtc: &TrtcSource, person: &Person) -> String {
    if trtc.record.len() == 1 && trtc.whole_room.is_none() {
        return trtc.user_id.clone();
    }
    let suffix = format!("_{}", person.index + 1);
    let keep = MAX_USER_ID_BYTES - suffix.len();
    let base = &trtc.user_id[..trtc.user_id.len().min(keep)];
    format!("{base}{suffix}")
}

/// Why a relay could not start, in the terms of the job.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A field of the job is wrong (the message names it): only an edit helps.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Api(#[from] TrtcApiError),
}

impl RelayError {
    pub fn is_retryable(&self) -> bool {
        match self {
            RelayError::Invalid(_)
            | RelayError::Secret(SecretError::Missing(_) | SecretError::NotGranted(_)) => false,
            RelayError::Secret(SecretError::Read { .. }) => true,
            RelayError::Api(e) => e.is_retryable(),
        }
    }
}

/// The agent's UserSig: the caller's (userSigSecret, the heritage `UserSig`) or one made now
/// from the application's key (secretKeySecret). Checked against the job before use: its app,
/// its user (the agent) and that it is still valid; its signature too when the key is known.
pub async fn agent_user_sig(
    client: &Client,
    job: &RecordingJob,
    trtc: &TrtcSource,
    agent: &str,
    now: i64,
) -> Result<String, RelayError> {
    let ns = job.namespace().unwrap_or_default();
    if let Some(reference) = &trtc.secret_key_secret {
        let field = "spec.source.trtc.secretKeySecret";
        let key = secrets::read_key(client, &ns, reference, field).await?;
        let key = trim_newline(&key);
        return Ok(usersig::generate(
            trtc.sdk_app_id,
            agent,
            key,
            now,
            GENERATED_USERSIG_SECONDS,
            None,
        ));
    }
    let reference = trtc.user_sig_secret.as_ref().ok_or_else(|| {
        RelayError::Invalid(
            "relay: start needs spec.source.trtc.userSigSecret or secretKeySecret".into(),
        )
    })?;
    let field = "spec.source.trtc.userSigSecret";
    let value = secrets::read_key(client, &ns, reference, field).await?;
    let sig = String::from_utf8_lossy(trim_newline(&value)).to_string();
    check_user_sig(&sig, trtc.sdk_app_id, agent, now).map_err(RelayError::Invalid)?;
    Ok(sig)
}

/// A UserSig given for `agent` of `sdk_app_id`, still valid a minute from `now`: the problem,
/// naming the field, otherwise. (Without the application's key its signature cannot be
/// checked here; TRTC checks it when the relay starts.)
pub fn check_user_sig(sig: &str, sdk_app_id: u64, agent: &str, now: i64) -> Result<(), String> {
    let field = "spec.source.trtc.userSigSecret";
    let decoded =
        usersig::decode(sig).map_err(|e| format!("{field} does not hold a UserSig: {e}"))?;
    if decoded.sdk_app_id != sdk_app_id {
        return Err(format!(
            "{field} holds a UserSig for application {}, but the job records application {sdk_app_id}",
            decoded.sdk_app_id
        ));
    }
    if decoded.user_id != agent {
        return Err(format!(
            "{field} holds a UserSig for user {:?}, but the recording identity is {agent:?} (spec.source.trtc.userId)",
            decoded.user_id
        ));
    }
    if decoded.expires_at() < now + USERSIG_MARGIN_SECONDS {
        return Err(format!(
            "{field} holds a UserSig that expired at {} (unix {}): make a new one",
            roomrec_api::trtc::tc3::rfc3339_utc(decoded.expires_at()),
            decoded.expires_at()
        ));
    }
    Ok(())
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// `person`'s stream on the relay: what a relay roomrec starts pushes (the standard stream id;
/// the CRD refuses a legacy bizid with relay: start) and what the worker plays. The room id
/// wins over a string room id; the worker is told only the one in force.
pub fn stream(trtc: &TrtcSource, person: &Person) -> RelayStream {
    RelayStream {
        sdk_app_id: trtc.sdk_app_id,
        room_id: trtc.room_id,
        str_room_id: trtc
            .room_id
            .is_none()
            .then(|| trtc.str_room_id.clone())
            .flatten(),
        user_id: person.user_id.clone(),
        stream: person.stream,
        stream_id: match trtc.legacy_biz_id {
            Some(bizid) => StreamIdForm::Legacy { bizid },
            None => StreamIdForm::Standard,
        },
        play_domain: trtc.play_domain.clone(),
        protocol: trtc.protocol,
    }
}

/// Starts `person`'s relay.
pub async fn start(
    api: &TrtcClient,
    client: &Client,
    job: &RecordingJob,
    person: &Person,
    idle_timeout_seconds: u32,
    now: i64,
) -> Result<RelayStatus, RelayError> {
    let trtc = started_by_roomrec(job)
        .ok_or_else(|| RelayError::Invalid("the job does not ask for relay: start".into()))?;
    let agent = agent_user_id(trtc, person);
    let user_sig = agent_user_sig(client, job, trtc, &agent, now).await?;
    let push_domain = trtc.push_domain.clone().ok_or_else(|| {
        RelayError::Invalid("relay: start needs spec.source.trtc.pushDomain".into())
    })?;
    let stream_id = stream(trtc, person).stream_id();
    let publish_cdn_url = match &trtc.push_key_secret {
        Some(reference) => {
            let ns = job.namespace().unwrap_or_default();
            let field = "spec.source.trtc.pushKeySecret";
            let key = secrets::read_key(client, &ns, reference, field).await?;
            let key = String::from_utf8_lossy(trim_newline(&key)).to_string();
            let expires = u32::try_from(now + PUSH_URL_SECONDS).unwrap_or(u32::MAX);
            push_auth::push_url(&push_domain, &stream_id, &key, expires)
        }
        None => format!("rtmp://{push_domain}/live/{stream_id}"),
    };
    let (room_id, room_id_type) = match (trtc.room_id, &trtc.str_room_id) {
        (Some(id), _) => (id.to_string(), RoomIdType::Integer),
        (None, Some(s)) => (s.clone(), RoomIdType::String),
        (None, None) => return Err(RelayError::Invalid("the job names no room".into())),
    };
    let request = StartPublishCdnStreamRequest {
        sdk_app_id: trtc.sdk_app_id,
        room_id: room_id.clone(),
        room_id_type,
        agent_params: AgentParams {
            user_id: agent.clone(),
            user_sig,
            // TRTC ends the task when no anchor publishes for this long: the room is idle.
            max_idle_time: idle_timeout_seconds.clamp(5, 86400),
        },
        with_transcoding: 0,
        // Required even for pass-through; not applied to a pass-through stream.
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
                    user_id: person.user_id.clone(),
                    room_id,
                    room_id_type,
                },
                stream_type: match person.stream {
                    StreamKind::Main => StreamType::Main,
                    StreamKind::Aux => StreamType::Aux,
                },
            },
        },
        publish_cdn_params: vec![PublishCdnParam {
            publish_cdn_url,
            is_tencent_cdn: true,
        }],
    };
    let answer = api.start_publish_cdn_stream(&request).await?;
    Ok(RelayStatus {
        task_id: answer.task_id,
        agent_user_id: agent,
        started_at: jiff::Timestamp::from_second(now)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        stopped_at: None,
    })
}

/// Stops a relay; one TRTC has ended already (idle, removed, dismissed) counts as stopped.
pub async fn stop(api: &TrtcClient, sdk_app_id: u64, task_id: &str) -> Result<(), TrtcApiError> {
    let request = StopPublishCdnStreamRequest {
        sdk_app_id,
        task_id: task_id.to_string(),
    };
    match api.stop_publish_cdn_stream(&request).await {
        Ok(_) => Ok(()),
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// TRTC's answer for a task that no longer runs.
fn is_gone(e: &TrtcApiError) -> bool {
    e.code().is_some_and(|code| {
        code.contains("TaskNotExist") || code.contains("TaskId") || code.contains("NotFound")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomrec_api::trtc::usersig;

    fn trtc(record: &[&str], user_id: &str) -> TrtcSource {
        serde_json::from_value(serde_json::json!({
            "sdkAppId": 1400000000u64, "roomId": 43474, "userId": user_id,
            "record": record, "playDomain": "play.example.com", "relay": "start",
            "pushDomain": "push.example.com",
        }))
        .unwrap()
    }

    fn person(index: usize, user_id: &str) -> Person {
        Person::named(index, user_id.into(), StreamKind::Main)
    }

    #[test]
    fn one_person_keeps_the_identity_and_several_get_one_agent_each_within_32_bytes() {
        let one = trtc(&["alice"], "recorder-1");
        assert_eq!(agent_user_id(&one, &person(0, "alice")), "recorder-1");
        let two = trtc(&["alice", "bob"], "recorder-1");
        assert_eq!(agent_user_id(&two, &person(0, "alice")), "recorder-1_1");
        assert_eq!(agent_user_id(&two, &person(1, "bob")), "recorder-1_2");
        let long = "r".repeat(32);
        let many: Vec<String> = (0..16).map(|i| format!("p{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let t = trtc(&many, &long);
        let agents: Vec<String> = (0..16)
            .map(|i| agent_user_id(&t, &person(i, many[i])))
            .collect();
        assert!(agents.iter().all(|a| a.len() <= 32), "{agents:?}");
        let unique: std::collections::HashSet<_> = agents.iter().collect();
        assert_eq!(unique.len(), 16);
        assert_eq!(agents[15], format!("{}_16", "r".repeat(29)));
    }

    #[test]
    fn a_usersig_for_another_app_user_or_already_expired_is_refused_naming_the_field() {
        let key = b"5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
        let now = 1_764_000_000;
        let good = usersig::generate(1400000000, "recorder-1", key, now, 86400, None);
        assert_eq!(check_user_sig(&good, 1400000000, "recorder-1", now), Ok(()));
        let e = check_user_sig(&good, 1400000001, "recorder-1", now).unwrap_err();
        assert!(
            e.contains("userSigSecret") && e.contains("application 1400000000"),
            "{e}"
        );
        let e = check_user_sig(&good, 1400000000, "bob", now).unwrap_err();
        assert!(
            e.contains("user \"recorder-1\"") && e.contains("bob"),
            "{e}"
        );
        let e = check_user_sig(&good, 1400000000, "recorder-1", now + 86400).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let e = check_user_sig("not a usersig", 1400000000, "recorder-1", now).unwrap_err();
        assert!(e.contains("does not hold a UserSig"), "{e}");
    }
}
