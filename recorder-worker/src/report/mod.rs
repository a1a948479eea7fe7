//! What a recording tells the world: its manifest, its RecordingJob's status, its exit message.

pub mod job;
pub mod manifest;
pub mod termination;
