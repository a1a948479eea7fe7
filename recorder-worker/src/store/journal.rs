//! The checkpoint journal: what makes a recording survive a SIGKILL.
//!
//! While a part streams into its object through a multipart upload (invisible until it
//! completes), the same bytes are also written, every `checkpoint` interval, as small completed
//! objects under `{prefix}/.roomrec-journal/{part file}/`: `claim` (the run that owns the key,
//! see `claim`) before anything, then `meta.json`, then numbered segments. Segments always hold whole fragments (fMP4) or whole frames (MP3), so their
//! concatenation is playable media. When the part's upload completes, its journal is deleted.
//! If the worker dies first, or the upload fails for good, the next run (or the same run, at
//! the part's end) rebuilds the part's object from the journal: nothing confirmed durable is
//! lost, and the worst case loss is one checkpoint interval plus one fragment.

use crate::media::cutter::{Cutter, Piece};
use crate::media::fmp4;
use crate::shared::part::PartMeta;
use crate::store::scratch::Scratch;
use opendal::Operator;
use roomrec_api::Mode;

pub const JOURNAL_DIR: &str = ".roomrec-journal";

/// `{prefix}/.roomrec-journal/{file name of key}/`
pub fn journal_dir(prefix: &str, key: &str) -> String {
    let file = key.rsplit('/').next().unwrap_or(key);
    format!("{}{file}/", journal_root(prefix))
}

/// `{prefix}/.roomrec-journal/`: where every journal under a prefix lives.
pub(crate) fn journal_root(prefix: &str) -> String {
    if prefix.is_empty() {
        format!("{JOURNAL_DIR}/")
    } else {
        format!("{prefix}/{JOURNAL_DIR}/")
    }
}

pub fn segment_key(dir: &str, seq: u32) -> String {
    format!("{dir}{seq:08}.seg")
}

/// The checkpoints stored in journal `dir`, oldest first (`segment_key` numbers them in order).
pub async fn segments(op: &Operator, dir: &str) -> opendal::Result<Vec<String>> {
    let mut segments: Vec<String> = op
        .list(dir)
        .await?
        .into_iter()
        .map(|entry| entry.path().to_string())
        .filter(|path| path.ends_with(".seg"))
        .collect();
    segments.sort();
    Ok(segments)
}

pub fn meta_key(dir: &str) -> String {
    format!("{dir}meta.json")
}

/// Why a journal could not be found or rebuilt; it stays in the store for a later run.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {dir}: {source}")]
    Read {
        dir: String,
        #[source]
        source: opendal::Error,
    },
    #[error("journal {dir}meta.json: {source}")]
    Meta {
        dir: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{key}: {source}")]
    ReadSegment {
        key: String,
        #[source]
        source: opendal::Error,
    },
    #[error("{key}: {source}")]
    WriteObject {
        key: String,
        #[source]
        source: opendal::Error,
    },
    #[error("deleting journal {dir}: {source}")]
    Delete {
        dir: String,
        #[source]
        source: opendal::Error,
    },
    #[error("listing {root}: {source}")]
    List {
        root: String,
        #[source]
        source: opendal::Error,
    },
}

/// The result of rebuilding a part from its journal.
#[derive(Debug, Clone)]
pub struct Salvaged {
    pub meta: PartMeta,
    pub bytes: u64,
    pub seconds: f64,
}

/// Rebuilds the part of journal `dir` into its object (and into `copy`, for --faststart), then
/// deletes the journal.
pub async fn salvage(
    op: &Operator,
    dir: &str,
    chunk: usize,
    mut copy: Option<&mut Scratch>,
) -> Result<Salvaged, JournalError> {
    let read_error = |source| JournalError::Read {
        dir: dir.to_string(),
        source,
    };
    let meta_bytes = op.read(&meta_key(dir)).await.map_err(read_error)?;
    let meta: PartMeta =
        serde_json::from_slice(&meta_bytes.to_vec()).map_err(|source| JournalError::Meta {
            dir: dir.to_string(),
            source,
        })?;
    let write_error = |source| JournalError::WriteObject {
        key: meta.key.clone(),
        source,
    };
    let segments = segments(op, dir).await.map_err(read_error)?;

    let mut writer = op
        .writer_with(&meta.key)
        .chunk(chunk)
        .content_type(meta.mode.content_type())
        .await
        .map_err(write_error)?;
    let mut bytes = 0u64;
    let mut media = MediaClock::new(meta.mode);
    for segment in &segments {
        let data = op
            .read(segment)
            .await
            .map_err(|source| JournalError::ReadSegment {
                key: segment.clone(),
                source,
            })?
            .to_bytes();
        media.push(&data);
        bytes += data.len() as u64;
        if let Some(copy) = copy.as_deref_mut() {
            copy.append(&data);
        }
        writer.write(data).await.map_err(write_error)?;
    }
    writer.close().await.map_err(write_error)?;
    delete_journal(op, dir).await?;
    Ok(Salvaged {
        meta,
        bytes,
        seconds: media.seconds(),
    })
}

/// Deletes journal `dir` when it holds no part (its run claimed the number ahead and ended
/// before the part began); true when it did.
pub async fn discard_if_unwritten(op: &Operator, dir: &str) -> Result<bool, JournalError> {
    let read_error = |source| JournalError::Read {
        dir: dir.to_string(),
        source,
    };
    if op.exists(&meta_key(dir)).await.map_err(read_error)? {
        return Ok(false);
    }
    delete_journal(op, dir).await?;
    Ok(true)
}

async fn delete_journal(op: &Operator, dir: &str) -> Result<(), JournalError> {
    op.delete_with(dir)
        .recursive(true)
        .await
        .map_err(|source| JournalError::Delete {
            dir: dir.to_string(),
            source,
        })
}

/// Every journal left under `prefix` (by workers that did not finish).
pub async fn leftovers(op: &Operator, prefix: &str) -> Result<Vec<String>, JournalError> {
    let root = journal_root(prefix);
    let entries = match op.list(&root).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(JournalError::List { root, source }),
    };
    Ok(entries
        .into_iter()
        .map(|e| e.path().to_string())
        .filter(|p| p.ends_with('/') && p != &root)
        .collect())
}

/// Media time of a stream of recorded bytes (fMP4 or MP3), as it is re-read.
pub struct MediaClock {
    cutter: Cutter,
    tracks: Option<fmp4::Tracks>,
    timeline: fmp4::Timeline,
    mp3_seconds: f64,
}

impl MediaClock {
    pub fn new(mode: Mode) -> Self {
        Self {
            cutter: Cutter::new(mode),
            tracks: None,
            timeline: fmp4::Timeline::default(),
            mp3_seconds: 0.0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        for piece in self.cutter.push(data) {
            match piece {
                Piece::Init(_, tracks) => self.tracks = Some(tracks),
                Piece::Fragment(f) => self.timeline.add(&f),
                Piece::Frames(frames) => self.mp3_seconds += frames.seconds,
            }
        }
    }

    pub fn seconds(&self) -> f64 {
        self.mp3_seconds
            + self
                .tracks
                .as_ref()
                .map_or(0.0, |t| self.timeline.seconds(t))
    }
}
