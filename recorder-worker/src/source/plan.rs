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
    /// The input's length when ffmpeg knows one (a file, an HLS playlist that has ended); a
    /// live source has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
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
    /// Copied AAC arrives as ADTS (MPEG-TS sources): MP4 stores it without those headers.
    pub adts_audio: bool,
    /// Mode 02 without one of its tracks: the track that is missing ("video" or "audio"), and
    /// the note each part recorded so carries.
    pub missing: Option<(&'static str, String)>,
    /// The tracks are mapped as optional (`-map 0:v:0?`): ffmpeg records what the source has.
    pub optional_tracks: bool,
}

/// Video codecs MP4 carries and roomrec remuxes as they are.
const MP4_VIDEO: &[&str] = &["h264", "hevc", "av1", "vp9", "mpeg4"];
/// Audio codecs fragmented MP4 carries.
const MP4_AUDIO: &[&str] = &["aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"];

/// The source lacks a track the mode records: the same source fails the same way, so the
/// recording fails for good. The message names the source, the mode and the mode to use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the source {input} has no audio track, and mode {mode} ({}) records audio; {}",
        mode.code(),
        if *has_video { "record its video with mode VideoMp4 (01)" } else { "it has no video either: is it the right stream?" }
    )]
    NoAudio {
        input: String,
        mode: Mode,
        has_video: bool,
    },
    #[error(
        "the source {input} has no video track, and mode {mode} ({}) records video; {}",
        mode.code(),
        if *has_audio { "record its audio with mode AudioMp3 (00)" } else { "it has no audio either: is it the right stream?" }
    )]
    NoVideo {
        input: String,
        mode: Mode,
        has_audio: bool,
    },
}

pub fn plan(mode: Mode, tracks: &SourceTracks, source: &str) -> Result<Plan, PlanError> {
    if mode.wants_audio() && tracks.audio.is_none() {
        return Err(PlanError::NoAudio {
            input: source.to_string(),
            mode,
            has_video: tracks.video.is_some(),
        });
    }
    if mode.wants_video() && tracks.video.is_none() {
        return Err(PlanError::NoVideo {
            input: source.to_string(),
            mode,
            has_audio: tracks.audio.is_some(),
        });
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
        adts_audio: false,
        missing: None,
        optional_tracks: false,
    })
}

/// The plan for what the source has now. Mode 02 records a person whose camera is off as
/// audio only, and whose microphone is off as video only (`Plan::missing` says which, for the
/// part's message), rather than nothing: a class that starts with the camera off is still a
/// class. Modes 00 and 01 need their one track, as `plan` says.
pub fn plan_present(mode: Mode, tracks: &SourceTracks, source: &str) -> Result<Plan, PlanError> {
    let missing = match (mode, &tracks.video, &tracks.audio) {
        (Mode::AudioVideoMp4, None, Some(_)) => (
            "video",
            "recorded as audio only: the camera was off (the source had no video track); a new part begins when it comes on",
        ),
        (Mode::AudioVideoMp4, Some(_), None) => (
            "audio",
            "recorded as video only: the microphone was off (the source had no audio track); a new part begins when it comes on",
        ),
        _ => return plan(mode, tracks, source),
    };
    // The same rules as a one-track mode would apply to the track that is there.
    let one = match missing.0 {
        "video" => Mode::AudioMp3,
        _ => Mode::VideoMp4,
    };
    let mut p = plan(one, tracks, source)?;
    if one == Mode::AudioMp3 {
        // MP4, not MP3: copy what MP4 carries, encode the rest to AAC.
        let codec = tracks.audio.as_deref().unwrap_or_default();
        let (action, name) = if MP4_AUDIO.contains(&codec) {
            (Action::Copy, codec.to_string())
        } else {
            (
                Action::Encode {
                    codec: "aac",
                    args: vec!["-b:a", "128k"],
                },
                "aac".to_string(),
            )
        };
        p.audio = Some(action);
        p.output_audio = Some(name);
    }
    p.mode = mode;
    p.missing = Some((missing.0, missing.1.to_string()));
    Ok(p)
}
impl Plan {
    /// The plan for the usual source (H.264 + AAC, what RTMP and TRTC deliver), so ffmpeg can
    /// start before its input's tracks are known; `plan` with the tracks it reports decides
    /// whether that ffmpeg may go on.
    pub fn likely(mode: Mode) -> Plan {
        let usual = SourceTracks {
            video: Some("h264".into()),
            audio: Some("aac".into()),
            duration: None,
        };
        plan(mode, &usual, "").expect("the usual source has every track")
    }

    /// The same plan for a source whose copied AAC arrives as ADTS (see `DropRule`).
    pub fn with_adts_audio(mut self, adts: bool) -> Self {
        self.adts_audio = adts;
        self
    }

    /// The same plan with its tracks optional (for the command ffmpeg starts with, before its
    /// input's tracks are known): a track the source lacks is left out instead of failing.
    pub fn with_optional_tracks(mut self, optional: bool) -> Self {
        self.optional_tracks = optional;
        self
    }

    /// What this plan's ffmpeg does with a source of `tracks`: optional tracks the source
    /// lacks are not recorded.
    pub fn as_run_on(&self, tracks: &SourceTracks) -> Plan {
        let mut p = self.clone();
        if p.optional_tracks {
            if tracks.video.is_none() {
                (p.video, p.output_video) = (None, None);
            }
            if tracks.audio.is_none() {
                (p.audio, p.output_audio) = (None, None);
            }
            p.optional_tracks = false;
        }
        p
    }

    /// Whether ffmpeg runs the same way for both plans (codec names aside).
    pub fn same_command(&self, other: &Plan) -> bool {
        self.output_args() == other.output_args()
    }

    /// ffmpeg output arguments (after the input), writing to stdout.
    pub fn output_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let optional = if self.optional_tracks { "?" } else { "" };
        if self.video.is_some() {
            args.extend(["-map".into(), format!("0:v:0{optional}")]);
        }
        if self.audio.is_some() {
            args.extend(["-map".into(), format!("0:a:0{optional}")]);
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
        // ffmpeg's MP4 writer strips ADTS headers by itself only when it writes its moov after
        // the first packets, not the empty one a fragmented stream starts with: the filter
        // does it, and the moov waits for the first fragment (`delay_moov`) so that it holds
        // the audio configuration the filter found (without it the file had none, and a mono
        // track read as stereo).
        let adts = self.adts_audio
            && self.mode != Mode::AudioMp3
            && self.audio == Some(Action::Copy)
            && self.output_audio.as_deref() == Some("aac");
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
                    if adts {
                        "+frag_keyframe+empty_moov+delay_moov+default_base_moof"
                    } else {
                        "+frag_keyframe+empty_moov+default_base_moof"
                    },
                    "-frag_duration",
                    "1000000",
                ]
                .map(String::from),
            ),
        }
        if adts {
            // A moov written late knows where each track starts and would say so in an edit
            // list; parts are cut out of the stream and rebased to 0, so it must say nothing.
            args.extend(["-bsf:a", "aac_adtstoasc", "-use_editlist", "0"].map(String::from));
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
            duration: None,
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
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no audio track")
                && e.contains("VideoMp4 (01)")
                && e.contains("rtmp://x/live/a"),
            "{e}"
        );
        let e = plan(Mode::VideoMp4, &tracks(None, Some("aac")), "s")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no video track") && e.contains("AudioMp3 (00)"),
            "{e}"
        );
        let e = plan(Mode::AudioVideoMp4, &tracks(Some("h264"), None), "s").unwrap_err();
        assert_eq!(
            e,
            PlanError::NoAudio {
                input: "s".into(),
                mode: Mode::AudioVideoMp4,
                has_video: true
            }
        );
        assert!(e.to_string().contains("no audio track"), "{e}");
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
    fn mode_02_records_the_track_that_is_there_and_says_which_is_missing() {
        let p = plan_present(Mode::AudioVideoMp4, &tracks(None, Some("aac")), "s").unwrap();
        assert_eq!(
            (p.video.clone(), p.audio.clone()),
            (None, Some(Action::Copy))
        );
        assert_eq!(p.missing.as_ref().unwrap().0, "video");
        assert!(p.missing.as_ref().unwrap().1.contains("camera was off"));
        let args = p.output_args().join(" ");
        assert!(args.contains("-map 0:a:0 -c:a copy -f mp4"), "{args}");
        let p = plan_present(Mode::AudioVideoMp4, &tracks(None, Some("pcm_alaw")), "s").unwrap();
        assert!(matches!(p.audio, Some(Action::Encode { codec: "aac", .. })));
        let p = plan_present(Mode::AudioVideoMp4, &tracks(Some("h264"), None), "s").unwrap();
        assert_eq!(
            (p.video.clone(), p.audio.clone()),
            (Some(Action::Copy), None)
        );
        assert!(p.missing.as_ref().unwrap().1.contains("microphone was off"));
        assert!(p.output_args().join(" ").contains("-f mp4"));
        // Both there: the usual plan; neither, or a one-track mode without its track: refused.
        let both = plan_present(Mode::AudioVideoMp4, &tracks(Some("h264"), Some("aac")), "s");
        assert_eq!(both.unwrap().missing, None);
        assert!(plan_present(Mode::AudioVideoMp4, &tracks(None, None), "s").is_err());
        assert!(plan_present(Mode::VideoMp4, &tracks(None, Some("aac")), "s").is_err());
        assert!(plan_present(Mode::AudioMp3, &tracks(Some("h264"), None), "s").is_err());
    }

    #[test]
    fn the_first_command_of_mode_02_records_a_source_with_one_track_as_it_is() {
        let likely = Plan::likely(Mode::AudioVideoMp4).with_optional_tracks(true);
        assert!(
            likely
                .output_args()
                .join(" ")
                .contains("-map 0:v:0? -map 0:a:0?")
        );
        let camera_off = tracks(None, Some("aac"));
        let wanted = plan_present(Mode::AudioVideoMp4, &camera_off, "s").unwrap();
        assert!(
            wanted.same_command(&likely.as_run_on(&camera_off)),
            "no restart"
        );
        let both = tracks(Some("h264"), Some("aac"));
        let usual = plan_present(Mode::AudioVideoMp4, &both, "s").unwrap();
        assert!(usual.same_command(&likely.as_run_on(&both)));
        let pcm = tracks(None, Some("pcm_mulaw"));
        let encode = plan_present(Mode::AudioVideoMp4, &pcm, "s").unwrap();
        assert!(
            !encode.same_command(&likely.as_run_on(&pcm)),
            "G.711 is encoded"
        );
    }

    #[test]
    fn adts_aac_from_mpeg_ts_is_unwrapped_for_mp4() {
        let p = plan(Mode::AudioVideoMp4, &tracks(Some("h264"), Some("aac")), "s")
            .unwrap()
            .with_adts_audio(true);
        let args = p.output_args().join(" ");
        assert!(
            args.ends_with("-bsf:a aac_adtstoasc -use_editlist 0 pipe:1")
                && args.contains("+delay_moov"),
            "{args}"
        );
        let opus = plan(
            Mode::AudioVideoMp4,
            &tracks(Some("hevc"), Some("opus")),
            "s",
        )
        .unwrap()
        .with_adts_audio(true);
        assert!(!opus.output_args().join(" ").contains("-bsf"));
        let mp3 = plan(Mode::AudioMp3, &tracks(None, Some("aac")), "s")
            .unwrap()
            .with_adts_audio(true);
        assert!(
            !mp3.output_args().join(" ").contains("-bsf"),
            "encoded, not copied"
        );
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
