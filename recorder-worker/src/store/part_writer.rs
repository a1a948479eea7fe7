//! `PartWriter`: writes one part, unit by unit, and closes it into its `PartRecord`.
//!
//! One part of a recording on its way to storage: into an object store the bytes stream into
//! the part's object through opendal's multipart writer and, every checkpoint interval, into
//! the journal (see `journal`); into a directory each checkpoint is written into the part's
//! file in place (see `in_place`). Both run as tasks fed through queues, so a slow or
//! unreachable store never stalls ffmpeg; the queues are the spool, bounded by `SpoolLimits`.

use crate::shared::live::Status;
use crate::shared::metrics::metrics;
use crate::shared::part::{PartMeta, PartRecord};
use crate::store::claim::Checkpoints;
use crate::store::cos_multipart::CosMultipart;
use crate::store::in_place::InPlace;
use crate::store::journal;
use crate::store::journal_upload::{Checkpoint, Destination, JournalEnd, upload_journal};
use crate::store::object_upload::{UploadError, upload_main};
use crate::store::spool::{Block, Spool, keep_undelivered, spill};
use crate::store::stopping::Stopping;
use bytes::Bytes;
use opendal::{Buffer, Operator};
use roomrec_api::FileState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Multipart chunk size: sized so the longest recording fits in 10,000 parts.
    pub chunk: usize,
    pub checkpoint: Duration,
    /// COS: the part's object is assembled from its stored chunks by part copies.
    pub cos_parts: Option<Arc<CosMultipart>>,
    /// A directory: each part is written in place, its checkpoints into its own file.
    pub in_place: Option<Arc<InPlace>>,
}

/// The part's own upload beside its journal (an object store).
struct MainUpload {
    tx: mpsc::UnboundedSender<Bytes>,
    task: JoinHandle<Result<(), UploadError>>,
    /// Set when it gives way to the journal (memory pressure).
    abandoned: Arc<AtomicBool>,
}

pub struct PartWriter {
    meta: PartMeta,
    op: Operator,
    settings: UploadSettings,
    spool: Arc<Spool>,
    journal_dir: String,
    /// None for a part written in place.
    main: Option<MainUpload>,
    stopping: Arc<Stopping>,
    journal_tx: mpsc::UnboundedSender<Checkpoint>,
    journal_task: JoinHandle<JournalEnd>,
    /// Units since the last checkpoint.
    pending: Vec<Bytes>,
    /// Units written (the init segment counts as one).
    units: u32,
    next_seq: u32,
    last_checkpoint: Instant,
    pub bytes: u64,
    pub seconds: f64,
}

/// What every part of one run shares.
pub struct RunShared {
    pub spool: Arc<Spool>,
    pub stopping: Arc<Stopping>,
    /// The live status: shows each part's durable bytes and seconds.
    pub status: Arc<Status>,
    /// Each stored checkpoint also shows others, through the run's lease, that it is alive.
    pub checkpoints: Arc<Checkpoints>,
}

impl PartWriter {
    pub fn open(
        op: Operator,
        prefix: &str,
        meta: PartMeta,
        settings: UploadSettings,
        run: RunShared,
    ) -> Self {
        let RunShared {
            spool,
            stopping,
            status,
            checkpoints,
        } = run;
        let journal_dir = journal::journal_dir(prefix, &meta.key);
        let (main, destination) = match &settings.in_place {
            Some(place) => (
                None,
                Destination::InPlace {
                    place: place.clone(),
                    key: meta.key.clone(),
                },
            ),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                let abandoned = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(upload_main(
                    op.clone(),
                    settings.cos_parts.clone(),
                    meta.clone(),
                    journal_dir.clone(),
                    settings.chunk,
                    rx,
                    spool.clone(),
                    abandoned.clone(),
                ));
                let main = MainUpload {
                    tx,
                    task,
                    abandoned,
                };
                (Some(main), Destination::Segments)
            }
        };
        let (journal_tx, journal_rx) = mpsc::unbounded_channel();
        let meta_json = Bytes::from(serde_json::to_vec(&meta).expect("PartMeta serializes"));
        let journal_task = tokio::spawn(upload_journal(
            op.clone(),
            journal_dir.clone(),
            meta_json,
            destination,
            journal_rx,
            spool.clone(),
            stopping.clone(),
            {
                let (part, dir) = (meta.part, Arc::<str>::from(journal_dir.as_str()));
                move |bytes, seconds| {
                    status.open_durable(part, bytes, seconds);
                    checkpoints.stored(&dir);
                }
            },
        ));
        Self {
            meta,
            op,
            settings,
            spool,
            journal_dir,
            main,
            stopping,
            journal_tx,
            journal_task,
            pending: Vec::new(),
            units: 0,
            next_seq: 0,
            last_checkpoint: Instant::now(),
            bytes: 0,
            seconds: 0.0,
        }
    }

    pub fn meta(&self) -> &PartMeta {
        &self.meta
    }

    /// Appends whole units (fragments, frames, or the init segment).
    pub fn write(&mut self, data: Bytes) {
        self.units += 1;
        self.bytes += data.len() as u64;
        // The journal and the streaming upload share the unit; the spool counts it once per
        // queue it waits in, so its memory limit errs on the safe side.
        self.pending.push(data.clone());
        if let Some(main) = &self.main {
            if self.spool.under_pressure() && !main.abandoned.swap(true, Ordering::Relaxed) {
                tracing::warn!(key = %self.meta.key, "the store is slow: the streaming upload gives way, the file will be assembled from its checkpoints");
            }
            if !main.abandoned.load(Ordering::Relaxed) {
                self.spool.hold(data.len());
                let _ = main.tx.send(data);
            }
        }
        self.checkpoint_if_due();
    }

    /// Checkpoints when the interval has passed (called on a timer too, for slow streams), and
    /// at once for a part's first media: a live source opens with a burst of several seconds
    /// (the server's GOP cache), and until a part has a checkpoint a restarted worker would
    /// not know it existed and would reuse its number.
    pub fn checkpoint_if_due(&mut self) {
        let first_media = self.next_seq == 0 && self.units > self.meta.mode.header_units();
        if first_media || self.last_checkpoint.elapsed() >= self.settings.checkpoint {
            self.checkpoint();
        }
    }

    /// When a stream that went quiet after `last_media` must checkpoint what it left pending.
    /// Given when nothing is pending too, so that media only ever moves the recorder's deadline
    /// later: a timer moved earlier than the one tokio's driver last waited for makes the
    /// driver wake itself (an eventfd write and another epoll_wait), at every other fragment.
    pub fn checkpoint_due(&self, last_media: Instant) -> Instant {
        last_media.max(self.last_checkpoint) + self.settings.checkpoint
    }

    /// Sends what is pending to the journal now: in memory, or spilled to the spool directory
    /// when memory is past its limit.
    pub fn checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        let data = Buffer::from(std::mem::take(&mut self.pending));
        let block = match (&self.spool.limits.dir, self.spool.under_pressure()) {
            (Some(dir), true) => {
                match spill(
                    dir,
                    &self.journal_dir,
                    self.next_seq,
                    data.clone(),
                    &self.meta,
                ) {
                    Ok(path) => {
                        self.spool.spilled(data.len() as u64);
                        Block::Disk(path, data.len() as u64)
                    }
                    Err(e) => {
                        tracing::error!("cannot spill to the spool directory: {e}");
                        self.spool.hold(data.len());
                        Block::Memory(data)
                    }
                }
            }
            _ => {
                self.spool.hold(data.len());
                Block::Memory(data)
            }
        };
        let _ = self.journal_tx.send(Checkpoint {
            seq: self.next_seq,
            block,
            bytes: self.bytes,
            seconds: self.seconds,
        });
        self.next_seq += 1;
    }

    /// Closes the part: the journal is flushed, the upload completed (or, if it failed, the
    /// object rebuilt from the journal), and the journal deleted once the object is whole.
    /// Checkpoints the store never confirmed are kept in the spool directory, never dropped.
    /// A part written in place is whole once its checkpoints are all stored.
    pub async fn finish(mut self) -> PartRecord {
        self.checkpoint();
        let PartWriter {
            meta,
            op,
            settings,
            spool,
            journal_dir,
            main,
            journal_tx,
            journal_task,
            bytes,
            seconds,
            stopping,
            ..
        } = self;
        let main_task = main.map(|MainUpload { tx, task, .. }| {
            drop(tx);
            task
        });
        drop(journal_tx);
        // The journal task bounds itself once the recording is stopping. If it died instead
        // (a panic), what it held is gone and the journal may be short: never "all delivered".
        let (undelivered, stored_length, journal_died) = match journal_task.await {
            Ok(end) => (end.undelivered, end.stored_length, None),
            Err(e) => (Vec::new(), None, Some(e)),
        };
        let main = match main_task {
            Some(mut main_task) => tokio::select! {
                result = &mut main_task => result.unwrap_or_else(|e| Err(e.into())),
                _ = stopping.passed() => {
                    main_task.abort();
                    Err(UploadError::Late)
                }
            },
            // In place: the checkpoints are the part.
            None if undelivered.is_empty() && journal_died.is_none() => Ok(()),
            None => Err(UploadError::NotStored),
        };
        if !undelivered.is_empty() {
            if main.is_ok() {
                // The object is whole; only its journal could not be written, so the bytes
                // the journal did not confirm are confirmed now.
                metrics()
                    .recorded_bytes
                    .inc_by(undelivered.iter().map(|(_, b)| b.len()).sum());
                for (_, block) in &undelivered {
                    if let Block::Disk(path, _) = block {
                        let _ = std::fs::remove_file(path);
                    }
                }
                let _ = op.delete_with(&journal_dir).recursive(true).await;
                return PartRecord::from_meta(
                    &meta,
                    FileState::Succeeded,
                    String::new(),
                    bytes,
                    seconds,
                    false,
                );
            }
            let kept = keep_undelivered(
                &spool.limits.dir,
                &journal_dir,
                &meta,
                undelivered,
                stored_length,
            );
            let message = match (main, kept) {
                (Err(e), Ok(dir)) => format!(
                    "the store stayed unreachable ({e}); the unsent checkpoints are kept in {} and the next run with the same --spool-dir stores and assembles them",
                    dir.display()
                ),
                (Err(e), Err(lost)) => format!("the store stayed unreachable ({e}); {lost}"),
                (Ok(()), _) => unreachable!("handled above"),
            };
            return PartRecord::from_meta(&meta, FileState::Failed, message, bytes, seconds, false);
        }
        // Everything reached the journal: the part's spill directory (if any) is done with.
        if let Some(dir) = &spool.limits.dir {
            let _ = std::fs::remove_dir_all(dir.join(&journal_dir));
        }
        match main {
            Ok(()) => {
                if let Err(e) = op.delete_with(&journal_dir).recursive(true).await {
                    tracing::warn!(journal = %journal_dir, "could not delete the journal of a complete part: {e}");
                }
                PartRecord::from_meta(
                    &meta,
                    FileState::Succeeded,
                    String::new(),
                    bytes,
                    seconds,
                    false,
                )
            }
            Err(upload_error) => {
                let in_place = settings.in_place.as_deref();
                match journal::salvage(&op, &journal_dir, settings.chunk, in_place, None).await {
                    Ok(s) if let Some(died) = &journal_died => {
                        rebuilt_from_a_journal_that_died(&meta, &s, seconds, &upload_error, died)
                    }
                    Ok(s) => PartRecord::from_meta(
                        &meta,
                        FileState::Succeeded,
                        format!(
                            "the streaming upload did not complete ({upload_error}); the file was assembled from its checkpoints"
                        ),
                        s.bytes,
                        s.seconds,
                        true,
                    ),
                    Err(e) => PartRecord::from_meta(
                        &meta,
                        FileState::Failed,
                        format!(
                            "the upload failed ({upload_error}) and assembling from checkpoints failed too ({e}); the checkpoints are kept under {journal_dir}"
                        ),
                        bytes,
                        seconds,
                        false,
                    ),
                }
            }
        }
    }
}

/// A rebuilt part can measure a little shorter than what was recorded (its container's own
/// duration against the sum of fragments).
const SALVAGE_TOLERANCE_SECONDS: f64 = 0.5;

/// The part when neither its upload nor its journal finished: the journal's task died, so its
/// checkpoints may stop short of the recording's end. What was rebuilt is kept, and the part
/// succeeds only if it holds what was recorded; otherwise it fails, saying how much it holds.
fn rebuilt_from_a_journal_that_died(
    meta: &PartMeta,
    rebuilt: &journal::Salvaged,
    recorded_seconds: f64,
    upload_error: &UploadError,
    died: &tokio::task::JoinError,
) -> PartRecord {
    let whole = rebuilt.seconds + SALVAGE_TOLERANCE_SECONDS >= recorded_seconds;
    PartRecord::from_meta(
        meta,
        if whole {
            FileState::Succeeded
        } else {
            FileState::Failed
        },
        format!(
            "the streaming upload did not complete ({upload_error}) and the journal's upload stopped ({died}); the file was assembled from the checkpoints stored before that: {:.1} s of the {recorded_seconds:.1} s recorded",
            rebuilt.seconds
        ),
        rebuilt.bytes,
        rebuilt.seconds,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn a_panic() -> tokio::task::JoinError {
        tokio::spawn(async { panic!("failed printing to stderr") })
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_part_rebuilt_after_its_journal_died_fails_unless_it_holds_the_whole_recording() {
        let meta = PartMeta::example(1);
        let died = a_panic().await;
        let rebuilt = |seconds| journal::Salvaged {
            meta: meta.clone(),
            bytes: 1000,
            seconds,
        };
        // What a full disk behind stderr did: 3064 s of 3600 s rebuilt, once called succeeded.
        let short = rebuilt_from_a_journal_that_died(
            &meta,
            &rebuilt(3064.0),
            3600.0,
            &UploadError::Late,
            &died,
        );
        assert_eq!(short.status, FileState::Failed);
        assert!(
            short.message.contains("3064.0 s of the 3600.0 s"),
            "{}",
            short.message
        );
        assert!(short.message.contains("panicked"), "{}", short.message);
        let whole = rebuilt_from_a_journal_that_died(
            &meta,
            &rebuilt(3599.8),
            3600.0,
            &UploadError::Late,
            &died,
        );
        assert_eq!(whole.status, FileState::Succeeded);
        assert!(whole.recovered);
    }
}
