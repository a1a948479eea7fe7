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
//!
//! Into a directory a part is written in place (see `in_place`): its file is its checkpoints
//! and its journal holds no segments, only those a stop could not write (kept in the spool
//! directory and stored by the next run), after `stored-length`, where they go in the file.

use crate::media::cutter::{Cutter, Piece};
use crate::media::fmp4;
use crate::shared::part::PartMeta;
use crate::store::in_place::{InPlace, STORED_LENGTH};
use crate::store::scratch::Scratch;
use opendal::{Buffer, Operator};
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
    #[error("{key}: {source}")]
    InPlace {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{key} holds {len} bytes, fewer than the {stored} its stored checkpoints filled: it was cut or replaced since"
    )]
    Shorter { key: String, len: u64, stored: u64 },
    #[error("journal {dir}{STORED_LENGTH}: {text:?} is not a length")]
    StoredLength { dir: String, text: String },
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

/// Rebuilds the part of journal `dir` into its object, or its file when parts are written
/// `in_place` (and into `copy`, for --faststart), then deletes the journal.
pub async fn salvage(
    op: &Operator,
    dir: &str,
    chunk: usize,
    in_place: Option<&InPlace>,
    copy: Option<&mut Scratch>,
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
    let segments = segments(op, dir).await.map_err(read_error)?;
    let (bytes, media) = match in_place {
        Some(place) => rebuild_in_place(op, dir, place, &meta, &segments, copy).await?,
        None => rebuild_object(op, chunk, &meta, &segments, copy).await?,
    };
    delete_journal(op, dir).await?;
    Ok(Salvaged {
        meta,
        bytes,
        seconds: media.seconds(),
    })
}

/// The part's object, written anew from its segments: its size and media.
async fn rebuild_object(
    op: &Operator,
    chunk: usize,
    meta: &PartMeta,
    segments: &[String],
    mut copy: Option<&mut Scratch>,
) -> Result<(u64, MediaClock), JournalError> {
    let write_error = |source| JournalError::WriteObject {
        key: meta.key.clone(),
        source,
    };
    let mut writer = op
        .writer_with(&meta.key)
        .chunk(chunk)
        .content_type(meta.mode.content_type())
        .await
        .map_err(write_error)?;
    let mut bytes = 0u64;
    let mut media = MediaClock::new(meta.mode);
    for segment in segments {
        let data = read_segment(op, segment).await?;
        media.push(&data);
        bytes += data.len() as u64;
        if let Some(copy) = copy.as_deref_mut() {
            copy.append(&data);
        }
        writer.write(data).await.map_err(write_error)?;
    }
    writer.close().await.map_err(write_error)?;
    Ok((bytes, media))
}

async fn read_segment(op: &Operator, key: &str) -> Result<bytes::Bytes, JournalError> {
    op.read(key)
        .await
        .map(|b| b.to_bytes())
        .map_err(|source| JournalError::ReadSegment {
            key: key.to_string(),
            source,
        })
}

/// How much of a dead run's part file is read at a time.
const READ_BLOCK: usize = 1 << 20;

/// A part written in place: its file kept up to where its stored checkpoints end, then the
/// segments a stop could not write appended there. Without `stored-length` the file is kept
/// up to its last whole unit (a write torn by a kill ends in part of one), unless the journal
/// holds segments: a worker from before parts were written in place left it, and they hold
/// the whole part. Its size and media.
async fn rebuild_in_place(
    op: &Operator,
    dir: &str,
    place: &InPlace,
    meta: &PartMeta,
    segments: &[String],
    mut copy: Option<&mut Scratch>,
) -> Result<(u64, MediaClock), JournalError> {
    let file_error = |source| JournalError::InPlace {
        key: meta.key.clone(),
        source,
    };
    let keep = match stored_length(op, dir).await? {
        Some(length) => Some(length),
        None if !segments.is_empty() => Some(0),
        None => None,
    };
    let mut media = MediaClock::new(meta.mode);
    let file = match place.open(&meta.key).await.map_err(file_error)? {
        Some((file, len)) => {
            if let Some(stored) = keep.filter(|&stored| stored > len) {
                return Err(JournalError::Shorter {
                    key: meta.key.clone(),
                    len,
                    stored,
                });
            }
            let end = keep.unwrap_or(len);
            // Only whole units go to the copy: held back until the clock has cut them.
            let mut held = Vec::new();
            let mut at = 0u64;
            while at < end {
                let want = READ_BLOCK.min((end - at) as usize);
                let data = file.read_at(at, want).await.map_err(file_error)?;
                if data.is_empty() {
                    break;
                }
                at += data.len() as u64;
                let before = media.whole_bytes();
                media.push(&data);
                if let Some(copy) = copy.as_deref_mut() {
                    held.extend_from_slice(&data);
                    let whole = (media.whole_bytes() - before) as usize;
                    copy.append(&held[..whole]);
                    held.drain(..whole);
                }
            }
            file.cut(keep.unwrap_or(media.whole_bytes()))
                .await
                .map_err(file_error)?;
            file
        }
        None => match keep {
            None | Some(0) => place.create(&meta.key).await.map_err(file_error)?,
            Some(stored) => {
                return Err(JournalError::Shorter {
                    key: meta.key.clone(),
                    len: 0,
                    stored,
                });
            }
        },
    };
    for segment in segments {
        let data = read_segment(op, segment).await?;
        media.push(&data);
        if let Some(copy) = copy.as_deref_mut() {
            copy.append(&data);
        }
        file.store(Buffer::from(data)).await.map_err(file_error)?;
    }
    Ok((file.stored(), media))
}

/// The `stored-length` of journal `dir`, when it has one.
async fn stored_length(op: &Operator, dir: &str) -> Result<Option<u64>, JournalError> {
    let key = format!("{dir}{STORED_LENGTH}");
    let text = match op.read(&key).await {
        Ok(b) => String::from_utf8_lossy(&b.to_vec()).trim().to_string(),
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(JournalError::Read {
                dir: dir.to_string(),
                source,
            });
        }
    };
    text.parse()
        .map(Some)
        .map_err(|_| JournalError::StoredLength {
            dir: dir.to_string(),
            text,
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
    pushed: u64,
    tracks: Option<fmp4::Tracks>,
    timeline: fmp4::Timeline,
    mp3_seconds: f64,
}

impl MediaClock {
    pub fn new(mode: Mode) -> Self {
        Self {
            cutter: Cutter::new(mode),
            pushed: 0,
            tracks: None,
            timeline: fmp4::Timeline::default(),
            mp3_seconds: 0.0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.pushed += data.len() as u64;
        for piece in self.cutter.push(data) {
            match piece {
                Piece::Init(_, tracks) => self.tracks = Some(tracks),
                Piece::Fragment(f) => self.timeline.add(&f),
                Piece::Frames(frames) => self.mp3_seconds += frames.seconds,
            }
        }
    }

    /// Bytes pushed that make whole units (the rest is part of one, so far).
    pub fn whole_bytes(&self) -> u64 {
        self.pushed - self.cutter.buffered() as u64
    }

    pub fn seconds(&self) -> f64 {
        self.mp3_seconds
            + self
                .tracks
                .as_ref()
                .map_or(0.0, |t| self.timeline.seconds(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fmp4::tests::ffmpeg_fmp4;

    /// A directory store holding the journal of part 1 (`p/1.mp4`, MP4), written in place.
    struct InPlaceStore {
        _root: tempfile::TempDir,
        op: Operator,
        place: InPlace,
        meta: PartMeta,
        journal: String,
    }

    impl InPlaceStore {
        async fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            let op = Operator::new(
                opendal::services::Fs::default().root(&root.path().to_string_lossy()),
            )
            .unwrap();
            let meta = PartMeta::example(1);
            let journal = journal_dir("", &meta.key);
            op.write(&meta_key(&journal), serde_json::to_vec(&meta).unwrap())
                .await
                .unwrap();
            Self {
                place: InPlace::new(root.path().to_path_buf()),
                _root: root,
                op,
                meta,
                journal,
            }
        }

        fn file(&self, bytes: &[u8]) {
            let path = self.place.path(&self.meta.key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }

        async fn segment(&self, seq: u32, bytes: &[u8]) {
            self.op
                .write(&segment_key(&self.journal, seq), bytes.to_vec())
                .await
                .unwrap();
        }

        async fn salvage(&self) -> Salvaged {
            let salvaged = salvage(&self.op, &self.journal, 5 << 20, Some(&self.place), None)
                .await
                .unwrap();
            assert!(!self.op.exists(&meta_key(&self.journal)).await.unwrap());
            salvaged
        }

        fn stored(&self) -> Vec<u8> {
            std::fs::read(self.place.path(&self.meta.key)).unwrap()
        }
    }

    /// Where the whole units of `media` end: after its init segment and after each fragment.
    fn unit_ends(media: &[u8]) -> Vec<usize> {
        let mut end = 0;
        Cutter::new(Mode::AudioVideoMp4)
            .push(media)
            .into_iter()
            .map(|piece| {
                end += match piece {
                    Piece::Init(init, _) => init.len(),
                    Piece::Fragment(f) => f.bytes.len(),
                    Piece::Frames(f) => f.bytes.len(),
                };
                end
            })
            .collect()
    }

    fn seconds(media: &[u8]) -> f64 {
        let mut clock = MediaClock::new(Mode::AudioVideoMp4);
        clock.push(media);
        clock.seconds()
    }

    #[tokio::test]
    async fn a_part_written_in_place_is_cut_after_its_last_whole_unit() {
        let media = ffmpeg_fmp4();
        let ends = unit_ends(&media);
        assert!(ends.len() >= 3, "{ends:?}");
        let whole = ends[ends.len() - 2];
        let store = InPlaceStore::new().await;
        // Killed while writing the last fragment: half of it in the file.
        store.file(&media[..(whole + media.len()) / 2]);
        let salvaged = store.salvage().await;
        assert_eq!(salvaged.bytes, whole as u64, "{ends:?}");
        assert!(store.stored() == media[..whole]);
        assert_eq!(salvaged.seconds, seconds(&media[..whole]));
        assert!(salvaged.seconds > 1.0);
    }

    #[tokio::test]
    async fn checkpoints_kept_for_a_later_run_go_where_the_stored_ones_end() {
        let media = ffmpeg_fmp4();
        let ends = unit_ends(&media);
        let (stored, next) = (ends[1], ends[2]);
        let store = InPlaceStore::new().await;
        // The stored checkpoints, then what a write refused half way left.
        store.file(&media[..stored + 900]);
        store
            .op
            .write(
                &format!("{}{STORED_LENGTH}", store.journal),
                stored.to_string(),
            )
            .await
            .unwrap();
        store.segment(7, &media[stored..next]).await;
        store.segment(8, &media[next..]).await;
        let salvaged = store.salvage().await;
        assert_eq!(salvaged.bytes, media.len() as u64);
        assert!(store.stored() == media);
        assert_eq!(salvaged.seconds, seconds(&media));
    }

    #[tokio::test]
    async fn a_journal_of_segments_from_before_parts_were_written_in_place_holds_the_whole_part() {
        let media = ffmpeg_fmp4();
        let ends = unit_ends(&media);
        let store = InPlaceStore::new().await;
        // The streaming upload's file: ahead of the checkpoints, and torn.
        store.file(&media[..ends[2] + 300]);
        store.segment(0, &media[..ends[1]]).await;
        store.segment(1, &media[ends[1]..]).await;
        let salvaged = store.salvage().await;
        assert_eq!(salvaged.bytes, media.len() as u64);
        assert!(store.stored() == media);
    }

    #[tokio::test]
    async fn a_stored_length_beyond_the_file_is_refused_and_the_journal_kept() {
        let media = ffmpeg_fmp4();
        let store = InPlaceStore::new().await;
        store.file(&media[..1000]);
        store
            .op
            .write(&format!("{}{STORED_LENGTH}", store.journal), "5000")
            .await
            .unwrap();
        let refused = salvage(&store.op, &store.journal, 5 << 20, Some(&store.place), None)
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("holds 1000 bytes, fewer than the 5000"),
            "{refused}"
        );
        assert!(store.op.exists(&meta_key(&store.journal)).await.unwrap());
        assert!(store.stored() == media[..1000]);
    }
}
