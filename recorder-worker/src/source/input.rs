//! The source (`Source`), its URL for ffmpeg, and that URL redacted for logs.
//!
//! Where the media comes from: any URL ffmpeg reads, or a person on a TRTC relay, which
//! resolves to a URL by the relay's rules (`roomrec_api::relay`).

use roomrec_api::relay::{RelayStream, stream_name};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Source {
    Url(String),
    Trtc(RelayStream),
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
            Source::Trtc(t) => t.label(),
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

/// A URL without its query (which may hold tokens), for logs and messages.
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_sources_name_their_stream_and_live_ones_are_told_apart() {
        assert_eq!(
            Source::Url("rtmp://h:1935/live/cam-1?token=x".into()).stream_label(),
            "cam-1"
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
