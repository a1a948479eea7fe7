//! roomrec-worker: records one live stream into object storage.
//!
//! ```text
//! source ──ffmpeg (copy/encode; the plan checked against its input report)──▶ pipe
//!                                                                               │
//!                                  cutter (fMP4 fragments / MP3 frames) ◀───────┘
//!                                                                  │
//!                           part rotation (duration, size, reconnect)
//!                                                                  ▼
//!                     PartWriter ──▶ multipart upload of the part's object (opendal)
//!                                └─▶ checkpoint journal every N s (small complete objects)
//! ```
//! A part's journal is deleted once its object is complete; a killed worker's journal is
//! rebuilt into the object by the next run (`journal`). With `--faststart` a local copy of each
//! MP4 part (`scratch`) is remuxed into a classic MP4 that replaces the part's object
//! (`faststart`).

pub mod cli;
pub mod cutter;
pub mod faststart;
pub mod ffmpeg;
pub mod fmp4;
pub mod journal;
pub mod keys;
pub mod live;
pub mod manifest;
pub mod metrics;
pub mod mp3;
pub mod numbering;
pub mod part;
pub mod plan;
pub mod readbuf;
pub mod recorder;
pub mod report;
pub mod scratch;
pub mod source;
pub mod storage;
pub mod termination;

/// The current time as RFC 3339 with seconds precision (`2025-11-24T16:00:00Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}
