//! Where the media comes from: any URL ffmpeg reads, or a TRTC room member, which resolves to
//! a URL through TRTC's relay-to-CDN stream id on the application's play domain.
//!
//! Starting the relay through TRTC's server API (StartPublishCdnStream) is the operator's
//! business; the worker only needs the resulting URL, so `Source::Trtc` is the seam for it.

use md5::{Digest, Md5};
use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Source {
    Url(String),
    Trtc(TrtcSource),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrtcSource {
    pub sdk_app_id: u64,
    /// Numeric room id (wins over `str_room_id` when both are given, as the template did).
    pub room_id: Option<u64>,
    pub str_room_id: Option<String>,
    /// The room member to record.
    pub user_id: String,
    pub stream: StreamKind,
    pub stream_id: StreamIdForm,
    pub play_domain: String,
    pub protocol: PlayProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// Camera and microphone.
    Main,
    /// Screen share.
    Aux,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamIdForm {
    /// `{sdkAppId}_{roomId}_{userId}_{main|aux}`, for applications created from 2020-01-09 on.
    Standard,
    /// `{bizid}_{MD5(roomId_userId_main)}`, for older applications.
    Legacy { bizid: u64 },
    /// A stream id the client set when entering the room.
    Explicit(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlayProtocol {
    Rtmp,
    Flv,
    Hls,
}

impl TrtcSource {
    pub fn room(&self) -> String {
        match (self.room_id, &self.str_room_id) {
            (Some(id), _) => id.to_string(),
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        }
    }

    pub fn stream_id(&self) -> String {
        let kind = match self.stream {
            StreamKind::Main => "main",
            StreamKind::Aux => "aux",
        };
        match &self.stream_id {
            StreamIdForm::Standard => {
                let raw = format!(
                    "{}_{}_{}_{kind}",
                    self.sdk_app_id,
                    self.room(),
                    self.user_id
                );
                utf8_percent_encode(&raw, crate::URL_UNRESERVED).to_string()
            }
            StreamIdForm::Legacy { bizid } => {
                let digest = Md5::digest(format!("{}_{}_{kind}", self.room(), self.user_id));
                let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
                format!("{bizid}_{hex}")
            }
            StreamIdForm::Explicit(id) => id.clone(),
        }
    }

    pub fn url(&self) -> String {
        let id = self.stream_id();
        let domain = self.play_domain.trim_end_matches('/');
        match self.protocol {
            PlayProtocol::Rtmp => format!("rtmp://{domain}/live/{id}"),
            PlayProtocol::Flv => format!("https://{domain}/live/{id}.flv"),
            PlayProtocol::Hls => format!("https://{domain}/live/{id}.m3u8"),
        }
    }
}

impl Source {
    /// The URL ffmpeg opens.
    pub fn url(&self) -> String {
        match self {
            Source::Url(url) => url.clone(),
            Source::Trtc(t) => t.url(),
        }
    }

    /// A live source may drop and come back; a file or VOD URL that ends is simply done.
    pub fn is_live(&self) -> bool {
        let url = self.url();
        let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "rtmp" | "rtmps" | "rtmpt" | "rtmpe" | "srt" | "rtsp" | "rtsps" | "udp" | "rtp" => true,
            "http" | "https" => url.contains(".flv") || url.contains(".m3u8"),
            _ => false,
        }
    }

    /// The name the recorded user goes by in keys and the manifest.
    pub fn user_id(&self) -> String {
        match self {
            Source::Trtc(t) => t.user_id.clone(),
            Source::Url(url) => stream_name(url),
        }
    }

    /// `{sdkAppId}_{room}_{user}` for TRTC, the stream name for a URL: the `{stream}` of keys.
    pub fn stream_label(&self) -> String {
        match self {
            Source::Trtc(t) => sanitize(&format!("{}_{}_{}", t.sdk_app_id, t.room(), t.user_id)),
            Source::Url(url) => stream_name(url),
        }
    }

    /// ffmpeg input options that make a dead or stalled source fail instead of hanging.
    pub fn input_options(&self) -> Vec<String> {
        let url = self.url();
        let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
        let mut options: Vec<String> = Vec::new();
        match scheme.as_str() {
            "rtsp" | "rtsps" => options.extend([
                "-rtsp_transport".into(),
                "tcp".into(),
                "-timeout".into(),
                "10000000".into(),
            ]),
            "http" | "https" => options.extend([
                "-rw_timeout".into(),
                "10000000".into(),
                "-reconnect".into(),
                "1".into(),
                "-reconnect_streamed".into(),
                "1".into(),
                "-reconnect_delay_max".into(),
                "4".into(),
            ]),
            "srt" => {}
            "rtmp" | "rtmps" => {}
            _ => {}
        }
        options
    }
}

/// The last path segment of a URL without extension or query: `rtmp://h/live/abc?x` → `abc`.
fn stream_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("stream");
    let name = last.split('.').next().unwrap_or(last);
    let name = sanitize(name);
    if name.is_empty() {
        "stream".into()
    } else {
        name
    }
}

/// Keeps `[A-Za-z0-9_.-]`, replacing anything else with `-`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trtc() -> TrtcSource {
        TrtcSource {
            sdk_app_id: 1400000000,
            room_id: Some(43474),
            str_room_id: None,
            user_id: "alice".into(),
            stream: StreamKind::Main,
            stream_id: StreamIdForm::Standard,
            play_domain: "play.example.com".into(),
            protocol: PlayProtocol::Rtmp,
        }
    }

    #[test]
    fn standard_stream_id_and_urls() {
        let mut t = trtc();
        assert_eq!(t.stream_id(), "1400000000_43474_alice_main");
        assert_eq!(
            t.url(),
            "rtmp://play.example.com/live/1400000000_43474_alice_main"
        );
        t.protocol = PlayProtocol::Flv;
        assert_eq!(
            t.url(),
            "https://play.example.com/live/1400000000_43474_alice_main.flv"
        );
        t.protocol = PlayProtocol::Hls;
        t.stream = StreamKind::Aux;
        assert_eq!(
            t.url(),
            "https://play.example.com/live/1400000000_43474_alice_aux.m3u8"
        );
    }

    #[test]
    fn room_id_wins_over_str_room_id_and_string_rooms_are_url_encoded() {
        let mut t = trtc();
        t.str_room_id = Some("ignored".into());
        assert_eq!(t.room(), "43474");
        t.room_id = None;
        t.str_room_id = Some("class 7/b".into());
        assert_eq!(t.stream_id(), "1400000000_class%207%2Fb_alice_main");
    }

    #[test]
    fn legacy_stream_id_is_bizid_and_uppercase_md5() {
        let mut t = trtc();
        t.stream_id = StreamIdForm::Legacy { bizid: 8888 };
        // MD5("43474_alice_main"), uppercase hex.
        let expected: String = Md5::digest(b"43474_alice_main")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(t.stream_id(), format!("8888_{expected}"));
        assert_eq!(expected.len(), 32);
        assert!(
            expected
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        t.stream_id = StreamIdForm::Explicit("custom-id".into());
        assert_eq!(t.stream_id(), "custom-id");
    }

    #[test]
    fn url_sources_name_their_stream() {
        assert_eq!(
            Source::Url("rtmp://h:1935/live/cam-1?token=x".into()).stream_label(),
            "cam-1"
        );
        assert_eq!(
            Source::Url("https://h/live/abc.m3u8".into()).stream_label(),
            "abc"
        );
        assert_eq!(
            Source::Url("/tmp/in put.flv".into()).stream_label(),
            "in-put"
        );
        assert!(Source::Url("rtmp://h/live/x".into()).is_live());
        assert!(Source::Url("https://h/live/x.flv".into()).is_live());
        assert!(!Source::Url("/tmp/file.mp4".into()).is_live());
    }
}
