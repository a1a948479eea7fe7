//! What `GET` and `DELETE /recordings/{request id}` answer: the heritage result the callback
//! sends (`callback::payload`: `SdkAppId`, `RoomId`, `UserId`, `StrRoomId`, `Files`), with the
//! job's `Phase` and `StopReason` beside it. Once the job has ended it is the callback's body
//! exactly. Before that, `Files` lists what is stored so far: the payload is made for an ended
//! job, so a file still being written is shown as `Message: "recording"` (not as a worker that
//! stopped), and a person with no file yet is left out (not "nothing was recorded").

use crate::callback::{self, Payload};
use roomrec_api::FileState;
use roomrec_api::crd::{Phase, RecordingJob};
use serde::Serialize;

#[derive(Serialize, Debug, PartialEq)]
pub struct RecordingView {
    #[serde(flatten)]
    pub payload: Payload,
    /// Pending, Recording, Finalizing, Succeeded, Failed or Stopped.
    #[serde(rename = "Phase")]
    pub phase: &'static str,
    /// Why it ended (`room-dismissed`, `stop-requested`, …); empty while it runs.
    #[serde(rename = "StopReason")]
    pub stop_reason: String,
}

pub fn of(job: &RecordingJob) -> RecordingView {
    let status = job.status.as_ref();
    let phase = status.and_then(|s| s.phase).unwrap_or(Phase::Pending);
    let mut payload = callback::payload(job);
    if !phase.is_terminal() {
        let files = status.map(|s| s.files.as_slice()).unwrap_or_default();
        payload.files.retain(|f| !f.record_file.is_empty());
        for entry in &mut payload.files {
            let writing = files
                .iter()
                .any(|f| f.url == entry.record_file && f.status == FileState::Recording);
            if writing {
                entry.message = "recording".into();
            }
        }
    }
    RecordingView {
        payload,
        phase: phase.as_str(),
        stop_reason: status
            .and_then(|s| s.stop_reason)
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn job(status: Value) -> RecordingJob {
        serde_json::from_value(json!({
            "apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
            "metadata": {"name": "heritage-x-1", "namespace": "ns"},
            "spec": {"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 43474,
                "userId": "user_55952145", "record": ["alice", "bob"], "playDomain": "p"}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_running_job_shows_the_file_being_written_and_no_failure_for_people_without_one() {
        let view = of(&job(json!({"phase": "Recording", "files": [
            {"url": "https://b.cos/a1.mp4", "userId": "alice", "status": "recording", "part": 1}
        ]})));
        let body = serde_json::to_value(&view).unwrap();
        assert_eq!(
            body,
            json!({"SdkAppId": 1400000000u64, "RoomId": 43474, "UserId": "user_55952145",
                   "StrRoomId": "", "Phase": "Recording", "StopReason": "",
                   "Files": [{"UserId": "alice", "RecordFile": "https://b.cos/a1.mp4",
                              "Status": 0, "Message": "recording"}]})
        );
    }

    #[test]
    fn an_ended_job_shows_exactly_the_callbacks_payload() {
        let ended = job(
            json!({"phase": "Stopped", "stopReason": "stop-requested", "files": [
                {"url": "https://b.cos/a1.mp4", "userId": "alice", "status": "succeeded", "part": 1}
            ]}),
        );
        let view = of(&ended);
        assert_eq!(view.payload, callback::payload(&ended));
        assert_eq!(view.phase, "Stopped");
        assert_eq!(view.stop_reason, "stop-requested");
        // bob recorded nothing: the payload says so, as the callback does.
        assert!(
            view.payload
                .files
                .iter()
                .any(|f| f.user_id == "bob" && f.status == 0)
        );
    }
}
