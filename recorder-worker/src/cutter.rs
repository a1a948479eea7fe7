//! Cuts ffmpeg's output into whole units — the init segment and fragments of fragmented MP4,
//! or runs of MP3 frames — for the recorder (live) and for measuring rebuilt parts (journal).

use crate::fmp4;
use crate::mode::Mode;
use crate::mp3;

pub enum Piece {
    Init(bytes::Bytes, fmp4::Tracks),
    Fragment(fmp4::Fragment),
    Frames(mp3::Frames),
}

pub enum Cutter {
    Mp4(fmp4::Splitter),
    Mp3(mp3::Splitter),
}

impl Cutter {
    pub fn new(mode: Mode) -> Self {
        match mode {
            Mode::AudioMp3 => Cutter::Mp3(mp3::Splitter::default()),
            _ => Cutter::Mp4(fmp4::Splitter::default()),
        }
    }

    pub fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        match self {
            Cutter::Mp4(s) => {
                s.push(data);
                loop {
                    match s.next_unit() {
                        Ok(Some(fmp4::Unit::Init(init))) => {
                            let tracks = s.tracks().cloned().unwrap_or_default();
                            pieces.push(Piece::Init(init, tracks));
                        }
                        Ok(Some(fmp4::Unit::Fragment(f))) => pieces.push(Piece::Fragment(f)),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!("ffmpeg wrote malformed MP4: {e}");
                            break;
                        }
                    }
                }
            }
            Cutter::Mp3(s) => {
                s.push(data);
                while let Some(frames) = s.next_frames() {
                    pieces.push(Piece::Frames(frames));
                }
            }
        }
        pieces
    }

    pub fn finish(&mut self) -> Option<mp3::Frames> {
        match self {
            Cutter::Mp3(s) => s.finish(),
            Cutter::Mp4(_) => None,
        }
    }
}
