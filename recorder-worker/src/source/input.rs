//! The source (`Source`), its URL for ffmpeg, its protocol's drop rules, and that URL redacted
//! for logs.
//!
//! Where the media comes from: any URL ffmpeg reads, or a person on a TRTC relay, which
//! resolves to a URL by the relay's rules (`roomrec_api::relay`). What counts as a drop, per
//! protocol, is decided here and nowhere else (`Protocol`, `DropRule`; docs/architecture.md,
//! "What counts as a drop").

use roomrec_api::relay::{RelayStream, stream_name};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the source is read, as far as drops go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// rtmp://, rtmps://…: FLV over RTMP.
    Rtmp,
    /// http(s)://….flv: FLV over HTTP (also the TRTC relay's `flv` play URL).
    HttpFlv,
    /// http(s)://….m3u8: a live HLS playlist (also the TRTC relay's `hls` play URL).
    Hls,
    /// srt://: MPEG-TS over SRT.
    Srt,
    /// rtsp://, rtsps://: RTP, interleaved in the RTSP connection.
    Rtsp,
    /// udp://, rtp://: MPEG-TS or RTP without a connection.
    Datagram,
    /// A file or another URL that ends when it is read: no drops.
    File,
}

/// What the worker treats as the source going away while ffmpeg is still connected, and how
/// often it tries to reopen a source that went away.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropRule {
    /// No media for this long on an open connection: the source counts as gone, ffmpeg is
    /// stopped (it writes out what it holds) and the source reopened. `None`: the connection
    /// itself follows the source (ffmpeg's HLS client refreshes the playlist and waits for
    /// it to grow), so only the reconnect grace ends the wait.
    pub quiet: Option<Duration>,
    /// Whether the source's timeline may restart inside one connection (a publisher that left
    /// and returned on a server that kept its players): ffmpeg reports it ("out of order"),
    /// joins the new timeline onto the old one, and the worker begins a new part at its first
    /// keyframe.
    pub restarts_in_connection: bool,
    /// Whether copied AAC arrives as ADTS (MPEG-TS), which MP4 stores without its headers.
    pub adts_audio: bool,
}

/// Between attempts to reopen a source that went away: often at first, so that a quick return
/// loses little (a server that refuses players while nobody publishes is joined only after
/// the publisher is back), then once a second.
pub fn retry_delay(away: Duration) -> Duration {
    if away < Duration::from_secs(10) {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    }
}

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
        self.protocol() != Protocol::File
    }

    /// The protocol, from the URL's scheme (and for HTTP its path: `.flv` or `.m3u8`).
    pub fn protocol(&self) -> Protocol {
        let url = self.url();
        let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match scheme.as_str() {
            "rtmp" | "rtmps" | "rtmpt" | "rtmpe" | "rtmpte" | "rtmpts" => Protocol::Rtmp,
            "srt" => Protocol::Srt,
            "rtsp" | "rtsps" => Protocol::Rtsp,
            "udp" | "rtp" => Protocol::Datagram,
            "http" | "https" if path.ends_with(".flv") || url.contains(".flv?") => {
                Protocol::HttpFlv
            }
            "http" | "https" if path.ends_with(".m3u8") || url.contains(".m3u8") => Protocol::Hls,
            "http" | "https" if url.contains(".flv") => Protocol::HttpFlv,
            _ => Protocol::File,
        }
    }

    /// What counts as a drop for this source (docs/architecture.md, "What counts as a drop").
    /// `stall` is `--stall-seconds`: how long an open connection may deliver nothing.
    pub fn drop_rule(&self, stall: Duration) -> DropRule {
        let protocol = self.protocol();
        DropRule {
            quiet: match protocol {
                Protocol::Hls | Protocol::File => None,
                _ => Some(stall),
            },
            restarts_in_connection: matches!(protocol, Protocol::Rtmp | Protocol::HttpFlv),
            adts_audio: matches!(protocol, Protocol::Hls | Protocol::Srt | Protocol::Datagram),
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

    /// ffmpeg input options that make a dead or stalled source fail instead of hanging, and
    /// read a live FLV stream as live: `live_flv` joins a timeline that restarts (a publisher
    /// that returned while the server kept the connection) onto the one before, where the
    /// plain `flv` reader squeezes every later timestamp into the last one's and the rest of
    /// the recording is lost. FLV's own metadata gives the frame rate, so ffmpeg need not
    /// count frames to estimate it before it reports the tracks (`-fpsprobesize 0`): that
    /// count held the recording's start back by 1.7–2.7 s on a 30 fps stream, 0.4–0.7 s
    /// without it, every track still found (see docs/benchmarks.md, start latency).
    pub fn input_options(&self) -> Vec<String> {
        let options: &[&str] = match self.protocol() {
            Protocol::Rtsp => &["-rtsp_transport", "tcp", "-timeout", "10000000"],
            Protocol::Rtmp => &["-fpsprobesize", "0", "-f", "live_flv"],
            // No reconnecting inside ffmpeg: a new response starts a new FLV stream, header
            // and all, which the reader cannot take mid-stream. The worker reopens it.
            Protocol::HttpFlv => &[
                "-rw_timeout",
                "10000000",
                "-fpsprobesize",
                "0",
                "-f",
                "live_flv",
            ],
            // MPEG-TS: a publisher's return restarts its timestamps (and HLS marks it with a
            // discontinuity). ffmpeg joins any jump of more than a second onto the timeline
            // before it; by default only those of more than 10 s, and a shorter one left a hole
            // as long as the source was away.
            Protocol::Hls => &[
                "-rw_timeout",
                "10000000",
                "-reconnect",
                "1",
                "-reconnect_streamed",
                "1",
                "-reconnect_delay_max",
                "4",
                "-dts_delta_threshold",
                "1",
            ],
            Protocol::Srt | Protocol::Datagram => &["-dts_delta_threshold", "1"],
            Protocol::File => &[],
        };
        options.iter().map(|s| s.to_string()).collect()
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

    #[test]
    fn each_protocol_has_its_drop_rule() {
        let stall = Duration::from_secs(10);
        let rule = |url: &str| Source::Url(url.into()).drop_rule(stall);
        for url in [
            "rtmp://h/live/x",
            "https://h/live/x.flv",
            "http://h/live/x.flv?token=y",
        ] {
            let r = rule(url);
            assert_eq!(r.quiet, Some(stall), "{url}");
            assert!(r.restarts_in_connection && !r.adts_audio, "{url}");
            let options = Source::Url(url.into()).input_options().join(" ");
            assert!(options.ends_with("-f live_flv"), "{url}: {options}");
        }
        let hls = rule("https://h/live/x.m3u8");
        assert_eq!(hls.quiet, None, "the HLS client waits for its playlist");
        assert!(hls.adts_audio && !hls.restarts_in_connection);
        let srt = rule("srt://h:8890?streamid=read:x");
        assert_eq!(srt.quiet, Some(stall));
        assert!(srt.adts_audio);
        assert_eq!(rule("rtsp://h/x").quiet, Some(stall));
        assert!(!rule("rtsp://h/x").adts_audio);
        assert_eq!(
            Source::Url("https://h/live/x.m3u8".into()).protocol(),
            Protocol::Hls
        );
        assert_eq!(Source::Url("/tmp/a.flv".into()).protocol(), Protocol::File);
        assert_eq!(
            retry_delay(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(retry_delay(Duration::from_secs(30)), Duration::from_secs(1));
    }
}
