//! Where the media comes from and how ffmpeg reads it: the source, the plan, ffmpeg itself.

pub mod ffmpeg;
pub mod input;
pub mod plan;
