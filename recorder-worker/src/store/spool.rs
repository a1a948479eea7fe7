//! The spool: recorded bytes waiting for the store, held to `SpoolLimits`, spilled to disk.
//!
//! A part's object upload and its journal upload run as tasks fed through queues, so a slow or
//! unreachable store never stalls ffmpeg; the queues are the spool. Checkpoints the store never
//! confirmed are kept in the spool directory, laid out like the journal, and the next run
//! uploads them (`upload_spooled`).

use crate::shared::metrics::metrics;
use crate::shared::part::PartMeta;
use crate::store::in_place::STORED_LENGTH;
use crate::store::journal;
use opendal::{Buffer, Operator};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Why checkpoints could not be kept in, or taken from, the spool directory.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// No spool directory: what the store never took is gone.
    #[error(
        "{bytes} bytes of checkpoints could not be stored (set --spool-dir to keep them on disk)"
    )]
    Lost { bytes: u64 },
    #[error("the spool directory {} failed too: {source}", dir.display())]
    Spill {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {source}")]
    Upload {
        key: String,
        #[source]
        source: opendal::Error,
    },
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
    pub(super) fn hold(&self, n: usize) {
        self.memory.fetch_add(n as u64, Ordering::Relaxed);
        self.publish();
    }
    pub(super) fn release(&self, n: usize) {
        self.memory.fetch_sub(n as u64, Ordering::Relaxed);
        self.publish();
    }
    pub(super) fn spilled(&self, n: u64) {
        self.disk.fetch_add(n, Ordering::Relaxed);
        self.publish();
    }
    pub(super) fn unspilled(&self, n: u64) {
        self.disk.fetch_sub(n, Ordering::Relaxed);
        self.publish();
    }
    /// Kept exact at every change, so a scrape after the recording sees the spool drained.
    fn publish(&self) {
        metrics().spool_bytes.set(self.bytes() as i64);
    }
    /// Memory is past its limit: new checkpoints go to disk and streaming uploads give way.
    pub(super) fn under_pressure(&self) -> bool {
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
pub(super) enum Block {
    /// The part's units themselves, shared with the streaming upload (not a copy).
    Memory(Buffer),
    /// Spilled to the spool directory.
    Disk(PathBuf, u64),
}

impl Block {
    pub(super) fn len(&self) -> u64 {
        match self {
            Block::Memory(b) => b.len() as u64,
            Block::Disk(_, n) => *n,
        }
    }
}

/// Writes a checkpoint into the spool directory, mirroring the journal's layout (with its
/// meta.json), so a later run can upload it as it is.
pub(super) fn spill(
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

/// Puts every undelivered checkpoint into the spool directory; Err says what is lost. For a
/// part written in place, `stored_length` (where its stored checkpoints end in its file) goes
/// first: the kept ones follow there.
pub(super) fn keep_undelivered(
    dir: &Option<PathBuf>,
    journal_dir: &str,
    meta: &PartMeta,
    undelivered: Vec<(u32, Block)>,
    stored_length: Option<u64>,
) -> Result<PathBuf, SpoolError> {
    let Some(dir) = dir else {
        let bytes = undelivered.iter().map(|(_, b)| b.len()).sum();
        return Err(SpoolError::Lost { bytes });
    };
    let spill_error = |source| SpoolError::Spill {
        dir: dir.clone(),
        source,
    };
    if let Some(length) = stored_length {
        let part_dir = dir.join(journal_dir);
        std::fs::create_dir_all(&part_dir)
            .and_then(|()| std::fs::write(part_dir.join(STORED_LENGTH), length.to_string()))
            .map_err(spill_error)?;
    }
    for (seq, block) in undelivered {
        if let Block::Memory(data) = block {
            spill(dir, journal_dir, seq, data, meta).map_err(spill_error)?;
        }
    }
    Ok(dir.join(journal_dir))
}

/// Uploads checkpoints an earlier run left in the spool directory into the journal, so that
/// journal recovery assembles them. Files are removed once stored.
pub async fn upload_spooled(op: &Operator, dir: &std::path::Path) -> Result<usize, SpoolError> {
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
    // Each journal's segments after its meta.json and stored length: a later run that finds
    // segments assembles them, and must know where they go.
    files.sort_by_cached_key(|path| {
        let segment = path.extension().is_some_and(|e| e == "seg");
        (path.parent().map(PathBuf::from), segment, path.clone())
    });
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
        let data = std::fs::read(&path).map_err(|source| SpoolError::Read {
            path: path.clone(),
            source,
        })?;
        let len = data.len() as u64;
        if let Err(source) = op.write(&key, data).await {
            return Err(SpoolError::Upload { key, source });
        }
        // An earlier run recorded these checkpoints, but the store confirms them only now.
        if path.extension().is_some_and(|e| e == "seg") {
            metrics().recorded_bytes.inc_by(len);
        }
        let _ = std::fs::remove_file(&path);
        uploaded += 1;
    }
    Ok(uploaded)
}
