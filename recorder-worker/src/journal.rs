//! The checkpoint journal: what makes a recording survive a SIGKILL.
//!
//! While a part streams into its object through a multipart upload (invisible until it
//! completes), the same bytes are also written, every `checkpoint` interval, as small completed
//! objects under `{prefix}/.roomrec-journal/{part file}/`: `meta.json` first, then numbered
//! segments. Segments always hold whole fragments (fMP4) or whole frames (MP3), so their
//! concatenation is playable media. When the part's upload completes, its journal is deleted.
//! If the worker dies first, or the upload fails for good, the next run (or the same run, at
//! the part's end) rebuilds the part's object from the journal: nothing confirmed durable is
//! lost, and the worst case loss is one checkpoint interval plus one fragment.

use crate::fmp4;
use crate::mode::Mode;
use crate::mp3;
use opendal::Operator;
use serde::{Deserialize, Serialize};

pub const JOURNAL_DIR: &str = ".roomrec-journal";

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
}

/// `{prefix}/.roomrec-journal/{file name of key}/`
pub fn journal_dir(prefix: &str, key: &str) -> String {
    let file = key.rsplit('/').next().unwrap_or(key);
    if prefix.is_empty() {
        format!("{JOURNAL_DIR}/{file}/")
    } else {
        format!("{prefix}/{JOURNAL_DIR}/{file}/")
    }
}

pub fn segment_key(dir: &str, seq: u32) -> String {
    format!("{dir}{seq:08}.seg")
}

pub fn meta_key(dir: &str) -> String {
    format!("{dir}meta.json")
}

/// The result of rebuilding a part from its journal.
#[derive(Debug, Clone)]
pub struct Salvaged {
    pub meta: PartMeta,
    pub bytes: u64,
    pub seconds: f64,
}

/// Rebuilds the part of journal `dir` into its object, then deletes the journal.
pub async fn salvage(op: &Operator, dir: &str, chunk: usize) -> Result<Salvaged, String> {
    let meta_bytes = op
        .read(&meta_key(dir))
        .await
        .map_err(|e| format!("journal {dir}: {e}"))?;
    let meta: PartMeta = serde_json::from_slice(&meta_bytes.to_vec())
        .map_err(|e| format!("journal {dir}meta.json: {e}"))?;
    let mut segments: Vec<String> = op
        .list(dir)
        .await
        .map_err(|e| format!("journal {dir}: {e}"))?
        .into_iter()
        .map(|entry| entry.path().to_string())
        .filter(|path| path.ends_with(".seg"))
        .collect();
    segments.sort();

    let mut writer = op
        .writer_with(&meta.key)
        .chunk(chunk)
        .content_type(meta.mode.content_type())
        .await
        .map_err(|e| format!("{}: {e}", meta.key))?;
    let mut bytes = 0u64;
    let mut media = MediaClock::new(meta.mode);
    for segment in &segments {
        let data = op
            .read(segment)
            .await
            .map_err(|e| format!("{segment}: {e}"))?
            .to_bytes();
        media.push(&data);
        bytes += data.len() as u64;
        writer
            .write(data)
            .await
            .map_err(|e| format!("{}: {e}", meta.key))?;
    }
    writer
        .close()
        .await
        .map_err(|e| format!("{}: {e}", meta.key))?;
    op.delete_with(dir)
        .recursive(true)
        .await
        .map_err(|e| format!("deleting journal {dir}: {e}"))?;
    Ok(Salvaged {
        meta,
        bytes,
        seconds: media.seconds(),
    })
}

/// Every journal left under `prefix` (by workers that did not finish).
pub async fn leftovers(op: &Operator, prefix: &str) -> Result<Vec<String>, String> {
    let root = if prefix.is_empty() {
        format!("{JOURNAL_DIR}/")
    } else {
        format!("{prefix}/{JOURNAL_DIR}/")
    };
    let entries = match op.list(&root).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("listing {root}: {e}")),
    };
    Ok(entries
        .into_iter()
        .map(|e| e.path().to_string())
        .filter(|p| p.ends_with('/') && p != &root)
        .collect())
}

/// Media time of a stream of recorded bytes (fMP4 or MP3), as it is re-read.
pub struct MediaClock {
    mp4: Option<(fmp4::Splitter, fmp4::Timeline)>,
    mp3: Option<(mp3::Splitter, f64)>,
}

impl MediaClock {
    pub fn new(mode: Mode) -> Self {
        match mode {
            Mode::AudioMp3 => Self {
                mp4: None,
                mp3: Some((mp3::Splitter::default(), 0.0)),
            },
            _ => Self {
                mp4: Some((fmp4::Splitter::default(), fmp4::Timeline::default())),
                mp3: None,
            },
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if let Some((splitter, timeline)) = &mut self.mp4 {
            splitter.push(data);
            while let Ok(Some(unit)) = splitter.next_unit() {
                if let fmp4::Unit::Fragment(f) = unit {
                    timeline.add(&f);
                }
            }
        }
        if let Some((splitter, seconds)) = &mut self.mp3 {
            splitter.push(data);
            while let Some(frames) = splitter.next_frames() {
                *seconds += frames.seconds;
            }
        }
    }

    pub fn seconds(&self) -> f64 {
        if let Some((splitter, timeline)) = &self.mp4 {
            return splitter
                .tracks()
                .map(|t| timeline.seconds(t))
                .unwrap_or(0.0);
        }
        self.mp3.as_ref().map(|(_, s)| *s).unwrap_or(0.0)
    }
}
