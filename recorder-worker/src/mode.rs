//! Recording modes. The heritage template's codes keep their meaning: `00` MP3 audio,
//! `01` MP4 video only, `02` MP4 audio + video.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    AudioMp3,
    VideoMp4,
    AudioVideoMp4,
}

impl Mode {
    pub fn code(self) -> &'static str {
        match self {
            Mode::AudioMp3 => "00",
            Mode::VideoMp4 => "01",
            Mode::AudioVideoMp4 => "02",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Mode::AudioMp3 => "mp3",
            _ => "mp4",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Mode::AudioMp3 => "audio/mpeg",
            Mode::VideoMp4 | Mode::AudioVideoMp4 => "video/mp4",
        }
    }

    /// Units a part starts with before any media: MP4's init segment (ftyp + moov).
    pub fn header_units(self) -> u32 {
        match self {
            Mode::AudioMp3 => 0,
            Mode::VideoMp4 | Mode::AudioVideoMp4 => 1,
        }
    }

    pub fn wants_audio(self) -> bool {
        matches!(self, Mode::AudioMp3 | Mode::AudioVideoMp4)
    }

    pub fn wants_video(self) -> bool {
        matches!(self, Mode::VideoMp4 | Mode::AudioVideoMp4)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::AudioMp3 => "AudioMp3",
            Mode::VideoMp4 => "VideoMp4",
            Mode::AudioVideoMp4 => "AudioVideoMp4",
        })
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "00" | "AudioMp3" => Ok(Mode::AudioMp3),
            "01" | "VideoMp4" => Ok(Mode::VideoMp4),
            "02" | "AudioVideoMp4" => Ok(Mode::AudioVideoMp4),
            other => Err(format!(
                "unknown mode {other:?}: use 00 or AudioMp3 (MP3 audio), 01 or VideoMp4 (MP4 video only), 02 or AudioVideoMp4 (MP4 audio + video)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heritage_codes_and_names_parse_to_the_same_mode() {
        for (code, name, mode) in [
            ("00", "AudioMp3", Mode::AudioMp3),
            ("01", "VideoMp4", Mode::VideoMp4),
            ("02", "AudioVideoMp4", Mode::AudioVideoMp4),
        ] {
            assert_eq!(code.parse::<Mode>().unwrap(), mode);
            assert_eq!(name.parse::<Mode>().unwrap(), mode);
            assert_eq!(mode.code(), code);
            assert_eq!(mode.to_string(), name);
        }
        let err = "03".parse::<Mode>().unwrap_err();
        assert!(err.contains("00 or AudioMp3"), "{err}");
    }
}
