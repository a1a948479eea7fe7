//! The part's journal: `meta.json`, then each checkpoint as a segment, retried until the deadline.

use crate::shared::metrics::metrics;
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

/// Writes `meta.json`, then each checkpoint as a numbered segment, retrying each write until it
/// succeeds; once the recording is stopping, gives up after the shutdown deadline and returns
/// what it could not write.
pub(super) async fn upload_journal(
    op: Operator,
    dir: String,
    meta: Bytes,
    mut rx: mpsc::UnboundedReceiver<Checkpoint>,
    spool: Arc<Spool>,
    stopping: Arc<Stopping>,
    // Told each stored checkpoint's figures (the live status shows what is durable).
    on_stored: impl Fn(u64, f64),
) -> Vec<(u32, Block)> {
    let mut undelivered = Vec::new();
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
            meta_written = write_with_retry(
                &op,
                &journal::meta_key(&dir),
                meta.clone().into(),
                &stopping,
            )
            .await;
        }
        let data = match &block {
            Block::Memory(b) => Some(b.clone()),
            Block::Disk(path, _) => std::fs::read(path).ok().map(Buffer::from),
        };
        let stored = match data {
            Some(data) if meta_written => {
                write_with_retry(&op, &journal::segment_key(&dir, seq), data, &stopping).await
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
    undelivered
}

/// Retries a small write with backoff for as long as the recording runs; once it is stopping,
/// every attempt and wait ends at the stop deadline. True when the write succeeded.
async fn write_with_retry(op: &Operator, key: &str, data: Buffer, stopping: &Stopping) -> bool {
    let mut delay = Duration::from_millis(250);
    loop {
        let result = tokio::select! {
            r = op.write(key, data.clone()) => r,
            _ = stopping.passed() => return false,
        };
        match result {
            Ok(_) => return true,
            Err(e) => tracing::warn!(key, "checkpoint write failed, retrying in {delay:?}: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.passed() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
