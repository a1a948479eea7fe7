//! One part of a recording on its way to storage: the bytes stream into the part's object
//! through opendal's multipart writer and, every checkpoint interval, into the journal
//! (see `journal`). Both run as tasks fed through queues, so a slow or unreachable store never
//! stalls ffmpeg; the queues are the spool, bounded by `SpoolLimits`.

use crate::journal::{self, PartMeta};
use crate::live::Status;
use crate::metrics::metrics;
use bytes::Bytes;
use opendal::{Buffer, Operator, Writer};
use roomrec_api::FileState;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How much recorded data may wait for the store, in memory and then in a scratch directory,
/// before the recording fails.
#[derive(Debug, Clone)]
pub struct SpoolLimits {
    pub memory_bytes: u64,
    /// Spill directory (None: memory only). Checkpoints that could not be uploaded stay here,
    /// laid out like the journal, and the next run uploads them.
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
}

/// Bytes waiting for the store, across all parts.
#[derive(Debug)]
pub struct Spool {
    pub limits: SpoolLimits,
    memory: AtomicU64,
    disk: AtomicU64,
}

impl Spool {
    pub fn new(limits: SpoolLimits) -> Self {
        metrics().spool_limit_bytes.set(limits.max_bytes as i64);
        metrics().spool_bytes.set(0);
        Self {
            limits,
            memory: AtomicU64::new(0),
            disk: AtomicU64::new(0),
        }
    }
    fn hold(&self, n: usize) {
        self.memory.fetch_add(n as u64, Ordering::Relaxed);
        self.publish();
    }
    fn release(&self, n: usize) {
        self.memory.fetch_sub(n as u64, Ordering::Relaxed);
        self.publish();
    }
    fn spilled(&self, n: u64) {
        self.disk.fetch_add(n, Ordering::Relaxed);
        self.publish();
    }
    fn unspilled(&self, n: u64) {
        self.disk.fetch_sub(n, Ordering::Relaxed);
        self.publish();
    }
    /// Kept exact at every change, so a scrape after the recording sees the spool drained.
    fn publish(&self) {
        metrics().spool_bytes.set(self.bytes() as i64);
    }
    /// Memory is past its limit: new checkpoints go to disk and streaming uploads give way.
    fn under_pressure(&self) -> bool {
        self.memory.load(Ordering::Relaxed) > self.limits.memory_bytes
    }
    pub fn bytes(&self) -> u64 {
        self.memory.load(Ordering::Relaxed) + self.disk.load(Ordering::Relaxed)
    }
    pub fn full(&self) -> bool {
        self.bytes() > self.limits.max_bytes
    }
}

/// A checkpoint on its way to the journal.
enum Block {
    /// The part's units themselves, shared with the streaming upload (not a copy).
    Memory(Buffer),
    /// Spilled to the spool directory.
    Disk(PathBuf, u64),
}

impl Block {
    fn len(&self) -> u64 {
        match self {
            Block::Memory(b) => b.len() as u64,
            Block::Disk(_, n) => *n,
        }
    }
}

/// The recording is stopping: uploads must be done by `deadline` (the rest of the shutdown
/// time keeps what they could not store and writes the manifest).
#[derive(Debug)]
pub struct Stopping {
    // A watch, not a polled flag: the tasks waiting on it sleep until it is set (a poll
    // every 100 ms per waiting task cost more CPU than the recording itself).
    deadline: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
}

impl Default for Stopping {
    fn default() -> Self {
        Self {
            deadline: tokio::sync::watch::Sender::new(None),
        }
    }
}

impl Stopping {
    /// The first call sets the deadline; later ones keep it.
    pub fn begin(&self, uploads_within: Duration) {
        self.deadline.send_if_modified(|deadline| {
            let first = deadline.is_none();
            if first {
                *deadline = Some(tokio::time::Instant::now() + uploads_within);
            }
            first
        });
    }

    /// Resolves when the recording is stopping and its upload deadline has passed.
    pub(crate) async fn passed(&self) {
        let mut watch = self.deadline.subscribe();
        let deadline = match watch.wait_for(Option::is_some).await {
            Ok(deadline) => *deadline,
            // Unreachable while `self` lives (it owns the sender).
            Err(_) => None,
        };
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Multipart chunk size: sized so the longest recording fits in 10,000 parts.
    pub chunk: usize,
    pub checkpoint: Duration,
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
    /// Set when the streaming upload gives way to the journal (memory pressure).
    main_abandoned: Arc<AtomicBool>,
    stopping: Arc<Stopping>,
    journal_tx: mpsc::UnboundedSender<Checkpoint>,
    journal_task: JoinHandle<Vec<(u32, Block)>>,
    /// Units since the last checkpoint.
    pending: Vec<Bytes>,
    /// Units written (the init segment counts as one).
    units: u32,
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
        stopping: Arc<Stopping>,
        status: Arc<Status>,
    ) -> Self {
        let journal_dir = journal::journal_dir(prefix, &meta.key);
        let (main_tx, main_rx) = mpsc::unbounded_channel();
        let main_abandoned = Arc::new(AtomicBool::new(false));
        let main_task = tokio::spawn(upload_main(
            op.clone(),
            meta.clone(),
            journal_dir.clone(),
            settings.chunk,
            main_rx,
            spool.clone(),
            main_abandoned.clone(),
        ));
        let (journal_tx, journal_rx) = mpsc::unbounded_channel();
        let meta_json = Bytes::from(serde_json::to_vec(&meta).expect("PartMeta serializes"));
        let journal_task = tokio::spawn(upload_journal(
            op.clone(),
            journal_dir.clone(),
            meta_json,
            journal_rx,
            spool.clone(),
            stopping.clone(),
            {
                let part = meta.part;
                move |bytes, seconds| status.open_durable(part, bytes, seconds)
            },
        ));
        Self {
            meta,
            op,
            settings,
            spool,
            journal_dir,
            main_tx,
            main_task,
            main_abandoned,
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
        if self.spool.under_pressure() && !self.main_abandoned.swap(true, Ordering::Relaxed) {
            tracing::warn!(key = %self.meta.key, "the store is slow: the streaming upload gives way, the file will be assembled from its checkpoints");
        }
        if !self.main_abandoned.load(Ordering::Relaxed) {
            self.spool.hold(data.len());
            let _ = self.main_tx.send(data);
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
    pub async fn finish(mut self) -> PartRecord {
        self.checkpoint();
        let PartWriter {
            meta,
            op,
            settings,
            spool,
            journal_dir,
            main_tx,
            mut main_task,
            journal_tx,
            journal_task,
            bytes,
            seconds,
            stopping,
            ..
        } = self;
        drop(main_tx);
        drop(journal_tx);
        // The journal task bounds itself once the recording is stopping.
        let undelivered = journal_task.await.unwrap_or_default();
        let main = tokio::select! {
            result = &mut main_task => result.unwrap_or_else(|e| Err(e.to_string())),
            _ = stopping.passed() => {
                main_task.abort();
                Err("the streaming upload did not complete before the shutdown timeout".into())
            }
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
            let kept = keep_undelivered(&spool.limits.dir, &journal_dir, &meta, undelivered);
            let message = match (main, kept) {
                (Err(e), Ok(dir)) => format!(
                    "the object store stayed unreachable ({e}); the unsent checkpoints are kept in {} and the next run with the same --spool-dir uploads and assembles them",
                    dir.display()
                ),
                (Err(e), Err(lost)) => format!("the object store stayed unreachable ({e}); {lost}"),
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
                match journal::salvage(&op, &journal_dir, settings.chunk, None).await {
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

/// Writes a checkpoint into the spool directory, mirroring the journal's layout (with its
/// meta.json), so a later run can upload it as it is.
fn spill(
    dir: &std::path::Path,
    journal_dir: &str,
    seq: u32,
    data: Buffer,
    meta: &PartMeta,
) -> std::io::Result<PathBuf> {
    let part_dir = dir.join(journal_dir);
    std::fs::create_dir_all(&part_dir)?;
    let meta_path = part_dir.join("meta.json");
    if !meta_path.exists() {
        std::fs::write(
            &meta_path,
            serde_json::to_vec(meta).expect("PartMeta serializes"),
        )?;
    }
    let path = part_dir.join(format!("{seq:08}.seg"));
    let mut file = std::fs::File::create(&path)?;
    for piece in data {
        std::io::Write::write_all(&mut file, &piece)?;
    }
    Ok(path)
}

/// Puts every undelivered checkpoint into the spool directory; Err says what is lost.
fn keep_undelivered(
    dir: &Option<PathBuf>,
    journal_dir: &str,
    meta: &PartMeta,
    undelivered: Vec<(u32, Block)>,
) -> Result<PathBuf, String> {
    let Some(dir) = dir else {
        let lost: u64 = undelivered.iter().map(|(_, b)| b.len()).sum();
        return Err(format!(
            "{lost} bytes of checkpoints could not be stored (set --spool-dir to keep them on disk)"
        ));
    };
    for (seq, block) in undelivered {
        if let Block::Memory(data) = block {
            spill(dir, journal_dir, seq, data, meta)
                .map_err(|e| format!("the spool directory {} failed too: {e}", dir.display()))?;
        }
    }
    Ok(dir.join(journal_dir))
}

/// Uploads checkpoints an earlier run left in the spool directory into the journal, so that
/// journal recovery assembles them. Files are removed once stored.
pub async fn upload_spooled(op: &Operator, dir: &std::path::Path) -> Result<usize, String> {
    let mut uploaded = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    // meta.json sorts before the segments of its directory.
    files.sort();
    for path in files {
        // Only journals: the directory may also hold --faststart's copies.
        let Ok(relative) = path.strip_prefix(dir) else {
            continue;
        };
        if !relative
            .components()
            .any(|c| c.as_os_str() == journal::JOURNAL_DIR)
        {
            continue;
        }
        let key = relative.to_string_lossy().to_string();
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = data.len() as u64;
        op.write(&key, data)
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        // An earlier run recorded these checkpoints, but the store confirms them only now.
        if path.extension().is_some_and(|e| e == "seg") {
            metrics().recorded_bytes.inc_by(len);
        }
        let _ = std::fs::remove_file(&path);
        uploaded += 1;
    }
    Ok(uploaded)
}

/// One checkpoint for the journal, with the part's size and media once it is stored.
struct Checkpoint {
    seq: u32,
    block: Block,
    bytes: u64,
    seconds: f64,
}

/// Streams the part into its object. After an error, or when it is abandoned under memory
/// pressure, it keeps draining (and releasing) the queue: the journal holds the data, and
/// `finish` assembles the object from it.
async fn upload_main(
    op: Operator,
    meta: PartMeta,
    journal_dir: String,
    chunk: usize,
    rx: mpsc::UnboundedReceiver<Bytes>,
    spool: Arc<Spool>,
    abandoned: Arc<AtomicBool>,
) -> Result<(), String> {
    if op.info().capability().write_can_copy_from {
        upload_by_chunk_objects(op, meta, journal_dir, chunk, rx, spool, abandoned).await
    } else {
        upload_streaming(op, meta, chunk, rx, spool, abandoned).await
    }
}

/// For stores that copy ranges server-side (S3's UploadPartCopy): each full chunk is stored at
/// once as an object of its own in the part's journal directory, and at the part's end the
/// part's object is assembled from them by the store, with only the last partial chunk sent
/// again. One chunk is in memory at a time: opendal's multipart writer keeps the last chunk it
/// was given until the next one (so a one-chunk file can be a single PUT), which with S3's
/// 5 MiB minimum part held two. The chunks go with the journal when the part is complete.
async fn upload_by_chunk_objects(
    op: Operator,
    meta: PartMeta,
    journal_dir: String,
    chunk: usize,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    spool: Arc<Spool>,
    abandoned: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut failure: Option<String> = None;
    let mut filling: Vec<Bytes> = Vec::new();
    let mut filled = 0usize;
    let mut stored: Vec<(String, u64)> = Vec::new();
    while let Some(data) = rx.recv().await {
        let len = data.len();
        give_way(&abandoned, &mut failure);
        if failure.is_none() {
            filled += len;
            filling.push(data);
            if filled >= chunk {
                let key = format!("{journal_dir}{:05}.chunk", stored.len() + 1);
                let buffer = Buffer::from(std::mem::take(&mut filling));
                match op.write(&key, buffer).await {
                    Ok(_) => stored.push((key, filled as u64)),
                    Err(e) => {
                        tracing::warn!(key = %meta.key, "streaming upload failed, the journal keeps the data: {e}");
                        failure = Some(e.to_string());
                    }
                }
                filled = 0;
            }
        }
        spool.release(len);
    }
    // Abandoned after the last queued write: the object must not be assembled short.
    give_way(&abandoned, &mut failure);
    if let Some(e) = failure {
        return Err(e);
    }
    // Parts as they come, not cut to `chunk`: with an exact chunk size opendal copies only
    // whole chunks natively and downloads and re-uploads the rest of each stored chunk (they
    // run a little over `chunk`, ending on a unit), which moved nearly every byte twice more.
    let mut writer = object_writer(&op, &meta, None)
        .await
        .map_err(|e| e.to_string())?;
    let assembled = async {
        for (key, len) in &stored {
            writer.copy_from(key, 0..*len).await?;
        }
        writer.write(Buffer::from(filling)).await?;
        writer.close().await
    }
    .await;
    match assembled {
        Ok(_) => {
            if !stored.is_empty() {
                tracing::info!(key = %meta.key, chunks = stored.len(), "part assembled by the store from its stored chunks");
            }
            Ok(())
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(e.to_string())
        }
    }
}

/// For other stores: the part streams into opendal's multipart writer as it is recorded.
async fn upload_streaming(
    op: Operator,
    meta: PartMeta,
    chunk: usize,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    spool: Arc<Spool>,
    abandoned: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut failure: Option<String> = None;
    let mut writer = match object_writer(&op, &meta, Some(chunk)).await {
        Ok(w) => Some(w),
        Err(e) => {
            failure = Some(e.to_string());
            None
        }
    };
    while let Some(data) = rx.recv().await {
        let len = data.len();
        if give_way(&abandoned, &mut failure)
            && let Some(mut w) = writer.take()
        {
            let _ = w.abort().await;
        }
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
    // Abandoned after the last queued write: the object must not be completed short.
    if give_way(&abandoned, &mut failure)
        && let Some(mut w) = writer.take()
    {
        let _ = w.abort().await;
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

/// The writer of the part's object: in chunks of exactly `chunk` bytes when given, else in
/// parts of any size the store accepts (for a store that copies ranges, the stored chunks' own
/// sizes).
async fn object_writer(
    op: &Operator,
    meta: &PartMeta,
    chunk: Option<usize>,
) -> opendal::Result<Writer> {
    let writer = op
        .writer_with(&meta.key)
        .content_type(meta.mode.content_type());
    match chunk {
        Some(chunk) => writer.chunk(chunk).await,
        None => writer.await,
    }
}

/// Whether the streaming upload gave way to the checkpoints just now (the spool was under
/// pressure): the first time, `failure` records why, and the object must not be completed.
fn give_way(abandoned: &AtomicBool, failure: &mut Option<String>) -> bool {
    let first = abandoned.load(Ordering::Relaxed) && failure.is_none();
    if first {
        *failure = Some("it gave way to the checkpoints while the store was slow".into());
    }
    first
}

/// Writes `meta.json`, then each checkpoint as a numbered segment, retrying each write until it
/// succeeds; once the recording is stopping, gives up after the shutdown deadline and returns
/// what it could not write.
async fn upload_journal(
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
