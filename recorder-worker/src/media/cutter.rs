//! The cutter (`Cutter`): one interface over the fMP4 and MP3 splitters.
//!
//! Cuts ffmpeg's output into whole units — the init segment and fragments of fragmented MP4,
//! or runs of MP3 frames — for the recorder (live) and for measuring rebuilt parts (journal).

use crate::media::fmp4;
use crate::media::mp3;
use roomrec_api::Mode;

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

    /// Cuts `data` (bytes read elsewhere) into units.
    pub fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        match self {
            Cutter::Mp4(s) => s.push(data),
            Cutter::Mp3(s) => s.push(data),
        }
        self.cut()
    }

    /// The buffer to read ffmpeg's output into; `cut` then takes the whole units it holds.
    pub fn read_buffer(&mut self) -> &mut bytes::BytesMut {
        match self {
            Cutter::Mp4(s) => s.read_buffer(),
            Cutter::Mp3(s) => s.read_buffer(),
        }
    }

    /// The whole units the buffer holds.
    pub fn cut(&mut self) -> Vec<Piece> {
        let mut pieces = Vec::new();
        match self {
            Cutter::Mp4(s) => loop {
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
            },
            Cutter::Mp3(s) => {
                while let Some(frames) = s.next_frames() {
                    pieces.push(Piece::Frames(frames));
                }
            }
        }
        pieces
    }

    /// Bytes pushed that are not yet part of a whole unit.
    pub fn buffered(&self) -> usize {
        match self {
            Cutter::Mp4(s) => s.buffered(),
            Cutter::Mp3(s) => s.buffered(),
        }
    }

    pub fn finish(&mut self) -> Option<mp3::Frames> {
        match self {
            Cutter::Mp3(s) => s.finish(),
            Cutter::Mp4(_) => None,
        }
    }
}
