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
//! rebuilt into the object by the next run (`store::journal`). With `--faststart` a local copy
//! of each MP4 part (`store::scratch`) is remuxed into a classic MP4 that replaces the part's
//! object (`store::faststart`).
//!
//! The folders follow that path: `source` (ffmpeg on the source), `media` (the cutter), `store`
//! (the part writer, its uploads and journal), `report` (what the recording tells the world),
//! with `shared` under them all. Imports point one way, down the declarations below: `cli` and
//! `recorder` (the loop) use what they need below them; `report` uses `config`, `source` and
//! `shared`; `config` uses `source` and `store`; `store` uses `media`, `source` (ffmpeg, for
//! `--faststart`) and `shared`; `media` and `source` use only their own modules; `shared` uses
//! nothing of the crate.

pub mod cli;
pub mod recorder;

pub mod report;

pub mod config;

pub mod store;

pub mod media;
pub mod source;

pub mod shared;
