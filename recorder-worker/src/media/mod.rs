//! ffmpeg's output cut into whole units (fMP4 init and fragments, MP3 frames) without copies.

pub mod cutter;
pub mod fmp4;
pub mod mp3;
pub mod readbuf;
