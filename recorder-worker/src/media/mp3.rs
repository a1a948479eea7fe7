//! The MP3 frame splitter and its media clock.
//!
//! MP3 as a stream of frames: the splitter cuts ffmpeg's MP3 output at frame boundaries (so
//! every part and every checkpoint is decodable on its own) and counts the media time.
//! A leading ID3v2 tag is passed through with the first frame.

use crate::media::readbuf::ReadBuffer;
use bytes::{Bytes, BytesMut};

#[derive(Default)]
pub struct Splitter {
    buffer: ReadBuffer,
    sample_rate: u32,
}

/// A run of whole frames and the media time they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    pub bytes: Bytes,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Header {
    length: usize,
    samples: u32,
    sample_rate: u32,
}

fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (b[1] >> 3) & 0b11; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    let layer = (b[1] >> 1) & 0b11; // 1 = Layer III, 2 = Layer II, 3 = Layer I
    let bitrate_index = (b[2] >> 4) as usize;
    let rate_index = ((b[2] >> 2) & 0b11) as usize;
    let padding = ((b[2] >> 1) & 1) as usize;
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    const RATES: [[u32; 3]; 4] = [
        [11025, 12000, 8000],
        [0, 0, 0],
        [22050, 24000, 16000],
        [44100, 48000, 32000],
    ];
    const V1_L3: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V1_L2: [u32; 15] = [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ];
    const V1_L1: [u32; 15] = [
        0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ];
    const V2_L1: [u32; 15] = [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ];
    const V2_L23: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let sample_rate = RATES[version as usize][rate_index];
    let mpeg1 = version == 3;
    let kbps = match (mpeg1, layer) {
        (true, 1) => V1_L3[bitrate_index],
        (true, 2) => V1_L2[bitrate_index],
        (true, _) => V1_L1[bitrate_index],
        (false, 3) => V2_L1[bitrate_index],
        (false, _) => V2_L23[bitrate_index],
    } as usize;
    let (length, samples) = match layer {
        3 => ((12 * kbps * 1000 / sample_rate as usize + padding) * 4, 384),
        2 => (144 * kbps * 1000 / sample_rate as usize + padding, 1152),
        _ if mpeg1 => (144 * kbps * 1000 / sample_rate as usize + padding, 1152),
        _ => (72 * kbps * 1000 / sample_rate as usize + padding, 576),
    };
    (length >= 4).then_some(Header {
        length,
        samples,
        sample_rate,
    })
}

impl Splitter {
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The buffer to read ffmpeg's output straight into (see `readbuf`).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        self.buffer.make_room()
    }

    /// Bytes pushed that are not yet part of whole frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Every complete frame in the buffer (with any tag before them), or None.
    pub fn next_frames(&mut self) -> Option<Frames> {
        let mut at = 0usize;
        let mut samples = 0u64;
        let mut rate = self.sample_rate;
        // ID3v2: "ID3", version (2), flags (1), syncsafe size (4).
        if self.buffer.starts_with(b"ID3") && self.buffer.len() >= 10 {
            let s = &self.buffer[6..10];
            let size = ((s[0] as usize) << 21)
                | ((s[1] as usize) << 14)
                | ((s[2] as usize) << 7)
                | s[3] as usize;
            if self.buffer.len() < 10 + size {
                return None;
            }
            at = 10 + size;
        }
        loop {
            let rest = &self.buffer[at..];
            match parse_header(rest) {
                Some(h) if rest.len() >= h.length => {
                    samples += h.samples as u64;
                    rate = h.sample_rate;
                    at += h.length;
                }
                Some(_) => break,
                None if rest.len() < 4 => break,
                None => at += 1, // not a frame: skip a byte to resync, as decoders do
            }
        }
        if at == 0 || samples == 0 {
            return None;
        }
        self.sample_rate = rate;
        let bytes = self.buffer.split_to(at).freeze();
        Some(Frames {
            bytes,
            seconds: samples as f64 / rate as f64,
        })
    }

    /// What is left at the end of the stream (an incomplete last frame is dropped).
    pub fn finish(&mut self) -> Option<Frames> {
        let frames = self.next_frames();
        self.buffer.clear();
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mpeg1_layer3_headers() {
        // 128 kbit/s, 44.1 kHz, no padding: 417 bytes, 1152 samples.
        let h = parse_header(&[0xFF, 0xFB, 0x90, 0x64]).unwrap();
        assert_eq!((h.length, h.samples, h.sample_rate), (417, 1152, 44100));
        // Same with padding.
        assert_eq!(parse_header(&[0xFF, 0xFB, 0x92, 0x64]).unwrap().length, 418);
        // MPEG-2 Layer III, 64 kbit/s, 22.05 kHz: 576 samples.
        let h = parse_header(&[0xFF, 0xF3, 0x82, 0x64]).unwrap();
        assert_eq!((h.samples, h.sample_rate), (576, 22050));
        assert!(
            parse_header(&[0xFF, 0xFB, 0xF0, 0x64]).is_none(),
            "bad bitrate index"
        );
        assert!(parse_header(b"RIFF").is_none());
    }

    #[test]
    fn splits_at_frame_boundaries_only() {
        let frame = |pad: u8| {
            let mut f = vec![0xFF, 0xFB, 0x90 | (pad << 1), 0x64];
            f.resize(417 + pad as usize, 0x55);
            f
        };
        let mut stream = Vec::new();
        for i in 0..10 {
            stream.extend(frame((i % 2) as u8));
        }
        let mut s = Splitter::default();
        s.push(&stream[..1000]); // two whole frames and a piece of the third
        let first = s.next_frames().unwrap();
        assert_eq!(first.bytes.len(), 417 + 418);
        assert!((first.seconds - 2.0 * 1152.0 / 44100.0).abs() < 1e-9);
        assert!(s.next_frames().is_none());
        s.push(&stream[1000..]);
        let rest = s.next_frames().unwrap();
        assert_eq!(first.bytes.len() + rest.bytes.len(), stream.len());
    }
}
