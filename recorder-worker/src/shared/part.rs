//! A part as every layer sees it: what it is (`PartMeta`) and how it ended (`PartRecord`).

use roomrec_api::{FileState, Mode};
use serde::{Deserialize, Serialize};

/// What a journal needs to rebuild its part without the worker that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartMeta {
    pub part: u32,
    pub key: String,
    pub url: String,
    pub user_id: String,
    pub mode: Mode,
    pub started_at: String,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// Something every reader of the part should know, for its status message: in mode 02,
    /// that it holds audio only because the camera was off (or video only: the microphone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
impl PartMeta {
    /// A part of an audio+video recording, for unit tests.
    pub(crate) fn example(part: u32) -> Self {
        PartMeta {
            part,
            key: format!("p/{part}.mp4"),
            url: format!("http://s3/b/p/{part}.mp4"),
            user_id: "alice".into(),
            mode: Mode::AudioVideoMp4,
            started_at: "2026-01-01T00:00:00Z".into(),
            video_codec: None,
            audio_codec: None,
            note: None,
        }
    }
}

/// A finished part, as the manifest reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRecord {
    pub part: u32,
    pub user_id: String,
    pub key: String,
    pub url: String,
    pub status: FileState,
    pub message: String,
    pub bytes: u64,
    pub duration_seconds: f64,
    pub started_at: String,
    pub ended_at: String,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// Rebuilt from the checkpoint journal (after a crash or a failed upload).
    pub recovered: bool,
}

impl PartRecord {
    pub fn from_meta(
        meta: &PartMeta,
        status: FileState,
        message: String,
        bytes: u64,
        seconds: f64,
        recovered: bool,
    ) -> Self {
        Self {
            part: meta.part,
            user_id: meta.user_id.clone(),
            key: meta.key.clone(),
            url: meta.url.clone(),
            status,
            message: match (&meta.note, message.is_empty()) {
                (Some(note), true) => note.clone(),
                (Some(note), false) => format!("{note}; {message}"),
                (None, _) => message,
            },
            bytes,
            duration_seconds: (seconds * 1000.0).round() / 1000.0,
            started_at: meta.started_at.clone(),
            ended_at: crate::shared::format::now_rfc3339(),
            video_codec: meta.video_codec.clone(),
            audio_codec: meta.audio_codec.clone(),
            recovered,
        }
    }
}
