//! The part's journal: `meta.json`, then each checkpoint, as a segment or into the part's file
//! in place, retried until the deadline.

use crate::shared::metrics::metrics;
use crate::store::in_place::{InPlace, PartFile};
use crate::store::journal;
use crate::store::spool::{Block, Spool};
use crate::store::stopping::Stopping;
use bytes::Bytes;
use opendal::{Buffer, Operator};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One checkpoint for the journal, with the part's size and media once it is stored.
pub(super) struct Checkpoint {
    pub(super) seq: u32,
    pub(super) block: Block,
    pub(super) bytes: u64,
    pub(super) seconds: f64,
}

/// Where a part's checkpoints are stored.
pub(super) enum Destination {
    /// Numbered segments in the journal: an object store, where the part's own upload is
    /// invisible until it completes.
    Segments,
    /// The part's own file, `key` under a directory store (see `in_place`).
    InPlace { place: Arc<InPlace>, key: String },
}

/// What the journal's task leaves: the checkpoints it could not store, in order, and for a
/// part written in place where the stored ones end in its file.
pub(super) struct JournalEnd {
    pub(super) undelivered: Vec<(u32, Block)>,
    pub(super) stored_length: Option<u64>,
}

/// Writes `meta.json`, then each checkpoint to `destination`, retrying each write until it
/// succeeds; once the recording is stopping, gives up after the shutdown deadline and returns
/// what it could not write.
#[allow(clippy::too_many_arguments)]
pub(super) async fn upload_journal(
    op: Operator,
    dir: String,
    meta: Bytes,
    destination: Destination,
    mut rx: mpsc::UnboundedReceiver<Checkpoint>,
    spool: Arc<Spool>,
    stopping: Arc<Stopping>,
    // Told each stored checkpoint's figures (the live status shows what is durable).
    on_stored: impl Fn(u64, f64),
) -> JournalEnd {
    let mut undelivered = Vec::new();
    let mut file: Option<PartFile> = None;
    let mut meta_written = false;
    while let Some(Checkpoint {
        seq,
        block,
        bytes,
        seconds,
    }) = rx.recv().await
    {
        if !undelivered.is_empty() {
            // Order matters for assembling: after one is not stored, keep the rest together.
            undelivered.push((seq, block));
            continue;
        }
        if !meta_written {
            let key = journal::meta_key(&dir);
            meta_written = with_retry(&key, &stopping, || op.write(&key, meta.clone()))
                .await
                .is_some();
        }
        let data = match &block {
            Block::Memory(b) => Some(b.clone()),
            Block::Disk(path, _) => std::fs::read(path).ok().map(Buffer::from),
        };
        let stored = match (data, &destination) {
            (Some(data), Destination::Segments) if meta_written => {
                let key = journal::segment_key(&dir, seq);
                with_retry(&key, &stopping, || op.write(&key, data.clone()))
                    .await
                    .is_some()
            }
            (Some(data), Destination::InPlace { place, key }) if meta_written => {
                if file.is_none() {
                    file = with_retry(key, &stopping, || place.create(key)).await;
                }
                match &file {
                    Some(part) => with_retry(key, &stopping, || part.store(data.clone()))
                        .await
                        .is_some(),
                    None => false,
                }
            }
            _ => false,
        };
        if stored {
            on_stored(bytes, seconds);
            metrics().recorded_bytes.inc_by(block.len());
            match block {
                Block::Memory(b) => spool.release(b.len()),
                Block::Disk(path, n) => {
                    let _ = std::fs::remove_file(&path);
                    spool.unspilled(n);
                }
            }
        } else {
            undelivered.push((seq, block));
        }
    }
    JournalEnd {
        undelivered,
        stored_length: match destination {
            Destination::Segments => None,
            Destination::InPlace { .. } => Some(file.map_or(0, |f| f.stored())),
        },
    }
}

/// Retries a small write with backoff for as long as the recording runs; once it is stopping,
/// every attempt and wait ends at the stop deadline. What the write returned, once it succeeded.
async fn with_retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    key: &str,
    stopping: &Stopping,
    mut attempt: impl FnMut() -> F,
) -> Option<T> {
    let mut delay = Duration::from_millis(250);
    loop {
        let result = tokio::select! {
            r = attempt() => r,
            _ = stopping.passed() => return None,
        };
        match result {
            Ok(done) => return Some(done),
            Err(e) => tracing::warn!(key, "checkpoint write failed, retrying in {delay:?}: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.passed() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
