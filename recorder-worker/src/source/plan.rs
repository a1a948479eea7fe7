//! The plan (`Plan`): ffmpeg's output arguments for a source's tracks in a mode.
//!
//! What ffmpeg does with a source in a mode: copy what the container can carry, encode only
//! audio it cannot (or MP3 from anything else), and refuse a source that lacks a track the mode
//! records. Pure, so every rule is unit-tested.

use roomrec_api::Mode;
use serde::{Deserialize, Serialize};

/// The tracks ffmpeg reported for its input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceTracks {
    pub video: Option<String>,
    pub audio: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Copy,
    Encode {
        codec: &'static str,
        args: Vec<&'static str>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    pub video: Option<Action>,
    pub audio: Option<Action>,
    /// Codec names of the output, for the manifest.
    pub output_video: Option<String>,
    pub output_audio: Option<String>,
}

/// Video codecs MP4 carries and roomrec remuxes as they are.
const MP4_VIDEO: &[&str] = &["h264", "hevc", "av1", "vp9", "mpeg4"];
/// Audio codecs fragmented MP4 carries.
const MP4_AUDIO: &[&str] = &["aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"];

pub fn plan(mode: Mode, tracks: &SourceTracks, source: &str) -> Result<Plan, String> {
    if mode.wants_audio() && tracks.audio.is_none() {
        return Err(format!(
            "the source {source} has no audio track, and mode {mode} ({}) records audio; {}",
            mode.code(),
            if tracks.video.is_some() {
                "record its video with mode VideoMp4 (01)"
            } else {
                "it has no video either: is it the right stream?"
            }
        ));
    }
    if mode.wants_video() && tracks.video.is_none() {
        return Err(format!(
            "the source {source} has no video track, and mode {mode} ({}) records video; {}",
            mode.code(),
            if tracks.audio.is_some() {
                "record its audio with mode AudioMp3 (00)"
            } else {
                "it has no audio either: is it the right stream?"
            }
        ));
    }
    let video = mode.wants_video().then(|| {
        let codec = tracks.video.as_deref().unwrap_or_default();
        if MP4_VIDEO.contains(&codec) {
            (Action::Copy, codec.to_string())
        } else {
            // Sorenson/VP6/… from old FLV sources: MP4 cannot carry them.
            (
                Action::Encode {
                    codec: "libx264",
                    args: vec!["-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"],
                },
                "h264".into(),
            )
        }
    });
    let audio = mode.wants_audio().then(|| {
        let codec = tracks.audio.as_deref().unwrap_or_default();
        match mode {
            Mode::AudioMp3 if codec == "mp3" => (Action::Copy, "mp3".to_string()),
            Mode::AudioMp3 => (
                Action::Encode {
                    codec: "libmp3lame",
                    args: vec!["-b:a", "128k"],
                },
                "mp3".into(),
            ),
            _ if MP4_AUDIO.contains(&codec) => (Action::Copy, codec.to_string()),
            _ => (
                Action::Encode {
                    codec: "aac",
                    args: vec!["-b:a", "128k"],
                },
                "aac".into(),
            ),
        }
    });
    Ok(Plan {
        mode,
        output_video: video.as_ref().map(|(_, c)| c.clone()),
        output_audio: audio.as_ref().map(|(_, c)| c.clone()),
        video: video.map(|(a, _)| a),
        audio: audio.map(|(a, _)| a),
    })
}

impl Plan {
    /// The plan for the usual source (H.264 + AAC, what RTMP and TRTC deliver), so ffmpeg can
    /// start before its input's tracks are known; `plan` with the tracks it reports decides
    /// whether that ffmpeg may go on.
    pub fn likely(mode: Mode) -> Plan {
        let usual = SourceTracks {
            video: Some("h264".into()),
            audio: Some("aac".into()),
        };
        plan(mode, &usual, "").expect("the usual source has every track")
    }

    /// Whether ffmpeg runs the same way for both plans (codec names aside).
    pub fn same_command(&self, other: &Plan) -> bool {
        self.output_args() == other.output_args()
    }

    /// ffmpeg output arguments (after the input), writing to stdout.
    pub fn output_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        if self.video.is_some() {
            args.extend(["-map".into(), "0:v:0".into()]);
        }
        if self.audio.is_some() {
            args.extend(["-map".into(), "0:a:0".into()]);
        }
        for (flag, action) in [("-c:v", &self.video), ("-c:a", &self.audio)] {
            match action {
                Some(Action::Copy) => args.extend([flag.into(), "copy".into()]),
                Some(Action::Encode { codec, args: extra }) => {
                    args.extend([flag.to_string(), codec.to_string()]);
                    args.extend(extra.iter().map(|s| s.to_string()));
                }
                None => {}
            }
        }
        match self.mode {
            Mode::AudioMp3 => args
                .extend(["-f", "mp3", "-write_xing", "0", "-id3v2_version", "0"].map(String::from)),
            _ => args.extend(
                [
                    "-f",
                    "mp4",
                    // Fragmented MP4 to a pipe: an empty moov first, then a fragment at each
                    // keyframe and at least every second, so little is in flight at any time.
                    "-movflags",
                    "+frag_keyframe+empty_moov+default_base_moof",
                    "-frag_duration",
                    "1000000",
                ]
                .map(String::from),
            ),
        }
        args.push("pipe:1".into());
        args
    }

    pub fn copies_everything(&self) -> bool {
        [&self.video, &self.audio]
            .iter()
            .all(|a| !matches!(a, Some(Action::Encode { .. })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracks(video: Option<&str>, audio: Option<&str>) -> SourceTracks {
        SourceTracks {
            video: video.map(Into::into),
            audio: audio.map(Into::into),
        }
    }

    #[test]
    fn h264_and_aac_are_remuxed_never_transcoded() {
        let p = plan(Mode::AudioVideoMp4, &tracks(Some("h264"), Some("aac")), "s").unwrap();
        assert_eq!(
            (p.video.clone(), p.audio.clone()),
            (Some(Action::Copy), Some(Action::Copy))
        );
        assert!(p.copies_everything());
        let args = p.output_args().join(" ");
        assert!(
            args.contains("-map 0:v:0 -map 0:a:0 -c:v copy -c:a copy -f mp4"),
            "{args}"
        );
        assert!(args.ends_with("pipe:1"));
        let p = plan(Mode::VideoMp4, &tracks(Some("hevc"), Some("aac")), "s").unwrap();
        assert_eq!(
            (p.video.clone(), p.audio.clone()),
            (Some(Action::Copy), None)
        );
        assert!(!p.output_args().join(" ").contains("0:a"));
    }

    #[test]
    fn audio_mp4_cannot_carry_is_encoded_to_aac() {
        let p = plan(
            Mode::AudioVideoMp4,
            &tracks(Some("h264"), Some("pcm_s16le")),
            "s",
        )
        .unwrap();
        assert!(matches!(p.audio, Some(Action::Encode { codec: "aac", .. })));
        assert_eq!(p.output_audio.as_deref(), Some("aac"));
        let p = plan(
            Mode::AudioVideoMp4,
            &tracks(Some("h264"), Some("opus")),
            "s",
        )
        .unwrap();
        assert_eq!(p.audio, Some(Action::Copy));
    }

    #[test]
    fn mp3_mode_copies_mp3_and_encodes_anything_else() {
        let p = plan(Mode::AudioMp3, &tracks(Some("h264"), Some("mp3")), "s").unwrap();
        assert_eq!(
            (p.video.clone(), p.audio.clone()),
            (None, Some(Action::Copy))
        );
        assert!(p.output_args().join(" ").contains("-f mp3"));
        let p = plan(Mode::AudioMp3, &tracks(None, Some("aac")), "s").unwrap();
        assert!(matches!(
            p.audio,
            Some(Action::Encode {
                codec: "libmp3lame",
                ..
            })
        ));
    }

    #[test]
    fn missing_tracks_fail_with_advice() {
        let e = plan(
            Mode::AudioMp3,
            &tracks(Some("h264"), None),
            "rtmp://x/live/a",
        )
        .unwrap_err();
        assert!(
            e.contains("no audio track")
                && e.contains("VideoMp4 (01)")
                && e.contains("rtmp://x/live/a"),
            "{e}"
        );
        let e = plan(Mode::VideoMp4, &tracks(None, Some("aac")), "s").unwrap_err();
        assert!(
            e.contains("no video track") && e.contains("AudioMp3 (00)"),
            "{e}"
        );
        let e = plan(Mode::AudioVideoMp4, &tracks(Some("h264"), None), "s").unwrap_err();
        assert!(e.contains("no audio track"), "{e}");
    }

    #[test]
    fn the_likely_plan_holds_for_copied_sources_and_not_for_encoded_ones() {
        for mode in [Mode::AudioMp3, Mode::VideoMp4, Mode::AudioVideoMp4] {
            let likely = Plan::likely(mode);
            let usual = plan(mode, &tracks(Some("h264"), Some("aac")), "s").unwrap();
            assert!(likely.same_command(&usual), "{mode}");
            // HEVC is copied too: the same command, with its own codec name.
            let hevc = plan(mode, &tracks(Some("hevc"), Some("aac")), "s").unwrap();
            assert!(likely.same_command(&hevc), "{mode}");
        }
        let pcm = plan(
            Mode::AudioVideoMp4,
            &tracks(Some("h264"), Some("pcm_s16le")),
            "s",
        )
        .unwrap();
        assert!(!Plan::likely(Mode::AudioVideoMp4).same_command(&pcm));
        // MP3 audio is copied, not re-encoded as the usual AAC would be.
        let mp3 = plan(Mode::AudioMp3, &tracks(None, Some("mp3")), "s").unwrap();
        assert!(!Plan::likely(Mode::AudioMp3).same_command(&mp3));
        let flv1 = plan(Mode::VideoMp4, &tracks(Some("flv1"), None), "s").unwrap();
        assert!(!Plan::likely(Mode::VideoMp4).same_command(&flv1));
    }

    #[test]
    fn video_mp4_cannot_carry_is_encoded() {
        let p = plan(Mode::VideoMp4, &tracks(Some("flv1"), None), "s").unwrap();
        assert!(matches!(
            p.video,
            Some(Action::Encode {
                codec: "libx264",
                ..
            })
        ));
    }
}
