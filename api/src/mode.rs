//! Recording modes. The heritage template's codes keep their meaning and are accepted wherever
//! a mode is (the CRD, the worker's flag, the heritage API): `00` MP3 audio, `01` MP4 video
//! only, `02` MP4 audio + video. Written out, a mode is always its name.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// MP3, audio only (heritage 00): the heritage template's default.
    #[default]
    AudioMp3,
    /// MP4, video only (01).
    VideoMp4,
    /// MP4, audio and video (02).
    AudioVideoMp4,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::AudioMp3, Mode::VideoMp4, Mode::AudioVideoMp4];

    /// The heritage code.
    pub fn code(self) -> &'static str {
        match self {
            Mode::AudioMp3 => "00",
            Mode::VideoMp4 => "01",
            Mode::AudioVideoMp4 => "02",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::AudioMp3 => "AudioMp3",
            Mode::VideoMp4 => "VideoMp4",
            Mode::AudioVideoMp4 => "AudioVideoMp4",
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
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| s == m.code() || s == m.name())
            .ok_or_else(|| {
                format!(
                    "unknown mode {s:?}: use 00 or AudioMp3 (MP3 audio), 01 or VideoMp4 (MP4 video only), 02 or AudioVideoMp4 (MP4 audio + video)"
                )
            })
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The names and the heritage codes: the API server accepts either.
impl JsonSchema for Mode {
    fn schema_name() -> Cow<'static, str> {
        "Mode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "enum": ["AudioMp3", "VideoMp4", "AudioVideoMp4", "00", "01", "02"],
        })
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
            let from_code: Mode = serde_json::from_str(&format!("\"{code}\"")).unwrap();
            assert_eq!(from_code, mode);
            assert_eq!(
                serde_json::to_string(&from_code).unwrap(),
                format!("\"{name}\"")
            );
        }
        let err = "03".parse::<Mode>().unwrap_err();
        assert!(err.contains("00 or AudioMp3"), "{err}");
        assert!(serde_json::from_str::<Mode>("\"audiomp3\"").is_err());
    }
}
