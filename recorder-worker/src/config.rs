//! What one recording is asked to do (`RecordConfig`), as the command line gives it.

use crate::source::ffmpeg::Tools;
use crate::source::input::Source;
use crate::store::keys::KeyTemplate;
use crate::store::spool::SpoolLimits;
use crate::store::storage::{RetryPolicy, StorageConfig};
use roomrec_api::Mode;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub source: Source,
    pub mode: Mode,
    pub storage: StorageConfig,
    pub key_template: KeyTemplate,
    pub session_start: jiff::Timestamp,
    pub segment_duration: Option<Duration>,
    pub segment_bytes: Option<u64>,
    pub reconnect_grace: Duration,
    pub idle_timeout: Duration,
    /// A connection that delivers nothing for this long counts as dropped (and reconnects).
    pub stall_timeout: Duration,
    pub max_duration: Option<Duration>,
    pub stop_file: Option<PathBuf>,
    pub shutdown_timeout: Duration,
    pub checkpoint: Duration,
    pub spool: SpoolLimits,
    pub tools: Tools,
    pub retry: RetryPolicy,
    /// Used only to size multipart chunks for the longest expected part.
    pub expected_bitrate: u64,
    /// --faststart: the scratch directory; each MP4 part is stored as a classic MP4.
    pub faststart: Option<PathBuf>,
}

/// S3 allows 10,000 parts per multipart upload; keep a margin.
pub(crate) const MAX_CHUNKS: u64 = 9_500;
const MIN_CHUNK: u64 = 5 * 1024 * 1024;

impl RecordConfig {
    /// Multipart chunk size such that the longest part fits within the part limit.
    pub fn chunk_size(&self) -> usize {
        let longest = self
            .segment_duration
            .or(self.max_duration)
            .unwrap_or(Duration::from_secs(24 * 3600))
            .as_secs();
        let bytes = self.expected_bitrate / 8 * longest.max(1);
        let needed = bytes.div_ceil(MAX_CHUNKS);
        let mib = 1024 * 1024;
        needed.max(MIN_CHUNK).div_ceil(mib) as usize * mib as usize
    }
}
