//! One part of a recording on its way to storage: the bytes stream into the part's object
//! through opendal's multipart writer and, every checkpoint interval, into the journal
//! (see `journal`). Both run as tasks fed through queues, so a slow or unreachable store never
//! stalls ffmpeg; the queues are the spool, bounded by `SpoolLimits`.

use crate::journal::{self, PartMeta};
use bytes::{Bytes, BytesMut};
use opendal::Operator;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How much recorded data may wait for the store before the recording fails.
#[derive(Debug, Clone)]
pub struct SpoolLimits {
    pub max_bytes: u64,
}

/// Bytes waiting for the store, across all parts.
#[derive(Debug, Default)]
pub struct Spool {
    pub waiting: AtomicU64,
}

impl Spool {
    fn hold(&self, n: usize) {
        self.waiting.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn release(&self, n: usize) {
        self.waiting.fetch_sub(n as u64, Ordering::Relaxed);
    }
    pub fn bytes(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Multipart chunk size: sized so the longest recording fits in 10,000 parts.
    pub chunk: usize,
    pub checkpoint: Duration,
    /// How long a journal write is retried once the recording is stopping.
    pub shutdown_deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartStatus {
    Succeeded,
    Failed,
}

/// A finished part, as the manifest reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRecord {
    pub part: u32,
    pub user_id: String,
    pub key: String,
    pub url: String,
    pub status: PartStatus,
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
        status: PartStatus,
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
            message,
            bytes,
            duration_seconds: (seconds * 1000.0).round() / 1000.0,
            started_at: meta.started_at.clone(),
            ended_at: crate::now_rfc3339(),
            video_codec: meta.video_codec.clone(),
            audio_codec: meta.audio_codec.clone(),
            recovered,
        }
    }
}

pub struct PartWriter {
    meta: PartMeta,
    op: Operator,
    settings: UploadSettings,
    spool: Arc<Spool>,
    journal_dir: String,
    main_tx: mpsc::UnboundedSender<Bytes>,
    main_task: JoinHandle<Result<(), String>>,
    journal_tx: mpsc::UnboundedSender<(u32, Bytes)>,
    journal_task: JoinHandle<Vec<(u32, Bytes)>>,
    pending: BytesMut,
    next_seq: u32,
    last_checkpoint: Instant,
    pub bytes: u64,
    pub seconds: f64,
}

impl PartWriter {
    pub fn open(
        op: Operator,
        prefix: &str,
        meta: PartMeta,
        settings: UploadSettings,
        spool: Arc<Spool>,
        stopping: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let journal_dir = journal::journal_dir(prefix, &meta.key);
        let (main_tx, main_rx) = mpsc::unbounded_channel();
        let main_task = tokio::spawn(upload_main(
            op.clone(),
            meta.clone(),
            settings.chunk,
            main_rx,
            spool.clone(),
        ));
        let (journal_tx, journal_rx) = mpsc::unbounded_channel();
        let meta_json = Bytes::from(serde_json::to_vec(&meta).expect("PartMeta serializes"));
        let journal_task = tokio::spawn(upload_journal(
            op.clone(),
            journal_dir.clone(),
            meta_json,
            journal_rx,
            spool.clone(),
            stopping,
            settings.shutdown_deadline,
        ));
        Self {
            meta,
            op,
            settings,
            spool,
            journal_dir,
            main_tx,
            main_task,
            journal_tx,
            journal_task,
            pending: BytesMut::new(),
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
        self.bytes += data.len() as u64;
        self.pending.extend_from_slice(&data);
        self.spool.hold(data.len());
        let _ = self.main_tx.send(data);
        self.checkpoint_if_due();
    }

    /// Checkpoints when the interval has passed (called on a timer too, for slow streams).
    pub fn checkpoint_if_due(&mut self) {
        if self.last_checkpoint.elapsed() >= self.settings.checkpoint {
            self.checkpoint();
        }
    }

    /// Sends what is pending to the journal now.
    pub fn checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        let block = self.pending.split().freeze();
        self.spool.hold(block.len());
        let _ = self.journal_tx.send((self.next_seq, block));
        self.next_seq += 1;
    }

    /// Closes the part: the journal is flushed, the upload completed (or, if it failed, the
    /// object rebuilt from the journal), and the journal deleted once the object is whole.
    pub async fn finish(mut self) -> PartRecord {
        self.checkpoint();
        let PartWriter {
            meta,
            op,
            settings,
            journal_dir,
            main_tx,
            main_task,
            journal_tx,
            journal_task,
            bytes,
            seconds,
            ..
        } = self;
        drop(main_tx);
        drop(journal_tx);
        let undelivered = journal_task.await.unwrap_or_default();
        let main = main_task.await.unwrap_or_else(|e| Err(e.to_string()));
        if !undelivered.is_empty() {
            let lost: usize = undelivered.iter().map(|(_, b)| b.len()).sum();
            let message = match main {
                Ok(()) => {
                    // The object is whole; only its journal could not be written or deleted.
                    let _ = op.delete_with(&journal_dir).recursive(true).await;
                    return PartRecord::from_meta(
                        &meta,
                        PartStatus::Succeeded,
                        String::new(),
                        bytes,
                        seconds,
                        false,
                    );
                }
                Err(e) => format!(
                    "the object store stayed unreachable ({e}); {lost} bytes of the last checkpoints could not be stored"
                ),
            };
            return PartRecord::from_meta(
                &meta,
                PartStatus::Failed,
                message,
                bytes,
                seconds,
                false,
            );
        }
        match main {
            Ok(()) => {
                if let Err(e) = op.delete_with(&journal_dir).recursive(true).await {
                    tracing::warn!(journal = %journal_dir, "could not delete the journal of a complete part: {e}");
                }
                PartRecord::from_meta(
                    &meta,
                    PartStatus::Succeeded,
                    String::new(),
                    bytes,
                    seconds,
                    false,
                )
            }
            Err(upload_error) => match journal::salvage(&op, &journal_dir, settings.chunk).await {
                Ok(s) => PartRecord::from_meta(
                    &meta,
                    PartStatus::Succeeded,
                    format!(
                        "the streaming upload failed ({upload_error}); the file was rebuilt from its checkpoints"
                    ),
                    s.bytes,
                    s.seconds,
                    true,
                ),
                Err(e) => PartRecord::from_meta(
                    &meta,
                    PartStatus::Failed,
                    format!(
                        "the upload failed ({upload_error}) and rebuilding from checkpoints failed too ({e}); the checkpoints are kept under {journal_dir}"
                    ),
                    bytes,
                    seconds,
                    false,
                ),
            },
        }
    }
}

/// Streams the part into its object. After an error it keeps draining (and releasing) the
/// queue: the journal holds the data, and `finish` rebuilds the object from it.
async fn upload_main(
    op: Operator,
    meta: PartMeta,
    chunk: usize,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    spool: Arc<Spool>,
) -> Result<(), String> {
    let mut failure: Option<String> = None;
    let mut writer = match op
        .writer_with(&meta.key)
        .chunk(chunk)
        .content_type(meta.mode.content_type())
        .await
    {
        Ok(w) => Some(w),
        Err(e) => {
            failure = Some(e.to_string());
            None
        }
    };
    while let Some(data) = rx.recv().await {
        let len = data.len();
        if let Some(w) = writer.as_mut()
            && let Err(e) = w.write(data).await
        {
            tracing::warn!(key = %meta.key, "streaming upload failed, the journal keeps the data: {e}");
            failure = Some(e.to_string());
            if let Some(mut w) = writer.take() {
                let _ = w.abort().await;
            }
        }
        spool.release(len);
    }
    match (writer, failure) {
        (Some(mut w), None) => match w.close().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = w.abort().await;
                Err(e.to_string())
            }
        },
        (_, Some(e)) => Err(e),
        (None, None) => Err("no writer".into()),
    }
}

/// Writes `meta.json`, then each checkpoint block as a numbered segment, retrying each write
/// until it succeeds; once the recording is stopping, gives up after the shutdown deadline and
/// returns what it could not write.
async fn upload_journal(
    op: Operator,
    dir: String,
    meta: Bytes,
    mut rx: mpsc::UnboundedReceiver<(u32, Bytes)>,
    spool: Arc<Spool>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    deadline: Duration,
) -> Vec<(u32, Bytes)> {
    let mut undelivered = Vec::new();
    let mut meta_written = false;
    while let Some((seq, block)) = rx.recv().await {
        let len = block.len();
        if undelivered.is_empty() {
            if !meta_written {
                meta_written = write_with_retry(
                    &op,
                    &journal::meta_key(&dir),
                    meta.clone(),
                    &stopping,
                    deadline,
                )
                .await;
            }
            if !meta_written
                || !write_with_retry(
                    &op,
                    &journal::segment_key(&dir, seq),
                    block.clone(),
                    &stopping,
                    deadline,
                )
                .await
            {
                undelivered.push((seq, block));
            }
        } else {
            // Order matters for rebuilding: after one block is lost, keep the rest together.
            undelivered.push((seq, block));
        }
        spool.release(len);
    }
    undelivered
}

/// Retries a small write with backoff for as long as the recording runs, and for a bounded
/// time once it is stopping. True when the write succeeded.
async fn write_with_retry(
    op: &Operator,
    key: &str,
    data: Bytes,
    stopping: &std::sync::atomic::AtomicBool,
    deadline: Duration,
) -> bool {
    let mut delay = Duration::from_millis(250);
    let mut stop_deadline: Option<Instant> = None;
    loop {
        match op.write(key, data.clone()).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(key, "checkpoint write failed, retrying in {:?}: {e}", delay);
            }
        }
        if stopping.load(Ordering::Relaxed) {
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + deadline);
            if Instant::now() > deadline {
                return false;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
