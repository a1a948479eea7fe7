//! `--faststart` (`Faststart`): a part's local copy remuxed and put over the part's object.
//!
//! `--faststart`: each finished MP4 part becomes a classic MP4 (`moov` first, one `mdat`, no
//! fragments). The part was stored as fragmented MP4 as always (streamed, checkpointed); its
//! local copy (`scratch`) is remuxed by ffmpeg, checked, and uploaded under the same key,
//! replacing the fragmented object only once the classic one is whole:
//!
//! * S3 and COS show an upload only when it completes, and then atomically in place of the old
//!   object; an upload that fails or is cut short is aborted and the fragmented object stays.
//! * A directory has no such upload: the classic file is written into the journal directory,
//!   its size checked, and renamed over the part (a rename is atomic).
//!
//! So the key always holds a complete, playable file. Whatever goes wrong (no room in the
//! scratch directory, ffmpeg, the store, the shutdown deadline after a signal) leaves the
//! fragmented object, says so in the part's message, and never fails the recording.

use crate::media::fmp4;
use crate::shared::part::PartRecord;
use crate::source::ffmpeg::{self, FfmpegError, Tools};
use crate::store::journal;
use crate::store::scratch::{Scratch, ScratchError};
use crate::store::stopping::Stopping;
use bytes::BytesMut;
use opendal::Operator;
use roomrec_api::FileState;
use roomrec_api::Mode;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// How far the classic file's duration may stray from the part's before it is refused: remuxing
/// copies every sample, so only a broken file differs by more.
const MAX_DRIFT_SECONDS: f64 = 1.0;

/// Why a part stays fragmented MP4: said in its message, never a failed recording.
#[derive(Debug, thiserror::Error)]
pub enum FaststartError {
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    #[error("the scratch copy holds {copied} bytes, the stored part {stored}")]
    CopyIncomplete { copied: u64, stored: u64 },
    #[error(
        "the shutdown timeout passed before the classic copy was stored (raise --shutdown-timeout)"
    )]
    CutShort,
    #[error(transparent)]
    Ffmpeg(#[from] FfmpegError),
    #[error("the remuxed file cannot be read: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("the remuxed file is not a classic MP4 with its moov first (boxes {boxes})")]
    NotClassic { boxes: String },
    #[error("the remuxed file lasts {remuxed:.2} s, the part {part:.2} s")]
    Duration { remuxed: f64, part: f64 },
    #[error("uploading it failed: {0}")]
    Upload(#[source] opendal::Error),
    #[error("completing its upload failed: {0}")]
    Complete(#[source] opendal::Error),
    #[error("it cannot be checked in the store: {0}")]
    Check(#[source] opendal::Error),
    #[error("the store holds {held} bytes of its {len}")]
    Short { held: u64, len: u64 },
    #[error("renaming it over {key} failed: {source}")]
    Rename {
        key: String,
        #[source]
        source: opendal::Error,
    },
}

pub struct Faststart {
    op: Operator,
    prefix: String,
    mode: Mode,
    tools: Tools,
    chunk: usize,
    scratch_dir: PathBuf,
    /// Begun only when a signal stops the recording (the pod's grace period is running then);
    /// a recording that ends on its own waits for its classic copies.
    pub deadline: Stopping,
}

impl Faststart {
    pub fn new(
        op: Operator,
        prefix: &str,
        mode: Mode,
        tools: Tools,
        chunk: usize,
        scratch_dir: PathBuf,
    ) -> Self {
        Self {
            op,
            prefix: prefix.to_string(),
            mode,
            tools,
            chunk,
            scratch_dir,
            deadline: Stopping::default(),
        }
    }

    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }

    /// The local copy of the part stored under `key`, filled while it is recorded.
    pub fn scratch(&self, key: &str) -> Scratch {
        Scratch::create(&self.scratch_dir, key)
    }

    /// Turns a stored part into a classic MP4, or keeps it fragmented and says why. The copy is
    /// removed either way.
    pub async fn finish(&self, mut record: PartRecord, scratch: Scratch) -> PartRecord {
        if record.status != FileState::Succeeded {
            return record;
        }
        match self.replace(&record, &scratch).await {
            Ok(bytes) => {
                tracing::info!(key = %record.key, bytes, "stored as a classic MP4");
                record.bytes = bytes;
            }
            Err(reason) => {
                tracing::warn!(key = %record.key, "--faststart: {reason}");
                let note =
                    format!("stored as fragmented MP4, not as a classic (faststart) MP4: {reason}");
                record.message = match record.message.as_str() {
                    "" => note,
                    earlier => format!("{earlier}; {note}"),
                };
            }
        }
        record
    }

    /// Remuxes, checks and stores the classic file; its size as stored.
    async fn replace(&self, record: &PartRecord, scratch: &Scratch) -> Result<u64, FaststartError> {
        let (copy, copied) = scratch.copy()?;
        if copied != record.bytes {
            return Err(FaststartError::CopyIncomplete {
                copied,
                stored: record.bytes,
            });
        }
        let output = scratch.output();
        // Cut short at the deadline, ffmpeg is killed with its future.
        let len = tokio::select! {
            checked = self.remux(copy, &output, record.duration_seconds) => checked?,
            _ = self.deadline.passed() => return Err(FaststartError::CutShort),
        };
        self.store(&record.key, &output, len).await
    }

    /// The classic file, checked: `moov` before `mdat`, no fragments, the part's duration.
    async fn remux(&self, copy: &Path, output: &Path, seconds: f64) -> Result<u64, FaststartError> {
        ffmpeg::remux_faststart(&self.tools, copy, output).await?;
        let boxes = fmp4::top_level_boxes(output).map_err(FaststartError::Unreadable)?;
        let at = |kind: &[u8; 4]| boxes.iter().position(|b| b == kind);
        if !matches!((at(b"moov"), at(b"mdat"), at(b"moof")), (Some(moov), Some(mdat), None) if moov < mdat)
        {
            let names: Vec<_> = boxes.iter().map(|b| String::from_utf8_lossy(b)).collect();
            return Err(FaststartError::NotClassic {
                boxes: names.join(" "),
            });
        }
        let remuxed = ffmpeg::file_seconds(&self.tools, output).await?;
        if (remuxed - seconds).abs() > MAX_DRIFT_SECONDS {
            return Err(FaststartError::Duration {
                remuxed,
                part: seconds,
            });
        }
        std::fs::metadata(output)
            .map(|m| m.len())
            .map_err(FaststartError::Unreadable)
    }

    /// Uploads the classic file over the part (see the module's notes); the stored size.
    async fn store(&self, key: &str, file: &Path, len: u64) -> Result<u64, FaststartError> {
        // Only a directory renames; its writes are not atomic, so it writes beside the part.
        let renames = self.op.info().capability().rename;
        let target = match renames {
            true => format!(
                "{}{}.faststart",
                journal::journal_root(&self.prefix),
                key.rsplit('/').next().unwrap_or(key)
            ),
            false => key.to_string(),
        };
        let stored = self.upload(&target, file).await;
        let stored = match (stored, renames) {
            (Ok(()), true) => match self.op.stat(&target).await {
                Ok(meta) if meta.content_length() == len => self
                    .op
                    .rename(&target, key)
                    .await
                    .map_err(|source| FaststartError::Rename {
                        key: key.to_string(),
                        source,
                    }),
                Ok(meta) => Err(FaststartError::Short {
                    held: meta.content_length(),
                    len,
                }),
                Err(e) => Err(FaststartError::Check(e)),
            },
            (stored, _) => stored,
        };
        if stored.is_err() && renames {
            let _ = self.op.delete(&target).await;
        }
        stored?;
        // What the store holds now; the upload completed, so its own size if it cannot say.
        Ok(self
            .op
            .stat(key)
            .await
            .map(|m| m.content_length())
            .unwrap_or(len))
    }

    /// One upload of the file; a failed or late one is aborted, so it never becomes visible.
    async fn upload(&self, target: &str, file: &Path) -> Result<(), FaststartError> {
        let mut writer = self
            .op
            .writer_with(target)
            .chunk(self.chunk)
            .content_type(self.mode.content_type())
            .await
            .map_err(FaststartError::Upload)?;
        let copied = tokio::select! {
            copied = copy_file(file, &mut writer, self.chunk) => copied,
            _ = self.deadline.passed() => Err(FaststartError::CutShort),
        };
        match copied {
            Ok(()) => writer
                .close()
                .await
                .map(|_| ())
                .map_err(FaststartError::Complete),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

/// Streams a local file into a writer, a chunk at a time.
async fn copy_file(
    path: &Path,
    writer: &mut opendal::Writer,
    chunk: usize,
) -> Result<(), FaststartError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(FaststartError::Unreadable)?;
    loop {
        let mut buffer = BytesMut::with_capacity(chunk);
        while buffer.len() < chunk {
            let n = file
                .read_buf(&mut buffer)
                .await
                .map_err(FaststartError::Unreadable)?;
            if n == 0 {
                break;
            }
        }
        if buffer.is_empty() {
            return Ok(());
        }
        writer
            .write(buffer.freeze())
            .await
            .map_err(FaststartError::Upload)?;
    }
}
