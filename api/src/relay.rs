//! TRTC's relay to CDN: how a room member's stream is named and played. The operator and the
//! worker both derive from these rules (the operator names a URL source's person, the worker
//! opens the play URL), so they live here once.

use md5::{Digest, Md5};
use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// How the relay is read: RTMP, HTTP-FLV or HLS. (Variants carry no doc comments: schemars
/// would turn them into a `oneOf` and change the CRD's enum.)
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PlayProtocol {
    #[default]
    Rtmp,
    Flv,
    Hls,
}

/// Which of a person's streams: main (camera and microphone) or aux (screen share).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    #[default]
    Main,
    Aux,
}

impl PlayProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PlayProtocol::Rtmp => "rtmp",
            PlayProtocol::Flv => "flv",
            PlayProtocol::Hls => "hls",
        }
    }
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Main => "main",
            StreamKind::Aux => "aux",
        }
    }
}

impl FromStr for PlayProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [PlayProtocol::Rtmp, PlayProtocol::Flv, PlayProtocol::Hls]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown protocol {s:?}: use rtmp, flv or hls"))
    }
}

impl FromStr for StreamKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [StreamKind::Main, StreamKind::Aux]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown stream {s:?}: use main (camera) or aux (screen share)"))
    }
}

/// How the relay names a person's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamIdForm {
    /// `{sdkAppId}_{roomId}_{userId}_{main|aux}`, for applications created from 2020-01-09 on.
    Standard,
    /// `{bizid}_{MD5(roomId_userId_main)}`, for older applications.
    Legacy { bizid: u64 },
    /// A stream id the client set when entering the room.
    Explicit(String),
}

/// One person's stream on the application's relay to CDN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStream {
    pub sdk_app_id: u64,
    /// Numeric room id (wins over `str_room_id` when both are given, as the template did).
    pub room_id: Option<u64>,
    pub str_room_id: Option<String>,
    /// The room member.
    pub user_id: String,
    pub stream: StreamKind,
    pub stream_id: StreamIdForm,
    pub play_domain: String,
    pub protocol: PlayProtocol,
}

impl RelayStream {
    pub fn room(&self) -> String {
        match (self.room_id, &self.str_room_id) {
            (Some(id), _) => id.to_string(),
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        }
    }

    pub fn stream_id(&self) -> String {
        let kind = self.stream.as_str();
        match &self.stream_id {
            StreamIdForm::Standard => {
                let raw = format!(
                    "{}_{}_{}_{kind}",
                    self.sdk_app_id,
                    self.room(),
                    self.user_id
                );
                utf8_percent_encode(&raw, URL_UNRESERVED).to_string()
            }
            StreamIdForm::Legacy { bizid } => {
                let digest = Md5::digest(format!("{}_{}_{kind}", self.room(), self.user_id));
                let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
                format!("{bizid}_{hex}")
            }
            StreamIdForm::Explicit(id) => id.clone(),
        }
    }

    /// The URL a player opens.
    pub fn url(&self) -> String {
        let id = self.stream_id();
        let domain = self.play_domain.trim_end_matches('/');
        match self.protocol {
            PlayProtocol::Rtmp => format!("rtmp://{domain}/live/{id}"),
            PlayProtocol::Flv => format!("https://{domain}/live/{id}.flv"),
            PlayProtocol::Hls => format!("https://{domain}/live/{id}.m3u8"),
        }
    }

    /// `{sdkAppId}_{room}_{user}` (`…_aux` for a screen share): the `{stream}` of its files'
    /// keys.
    pub fn label(&self) -> String {
        // A screen share's files must never share a key with the same person's camera.
        let aux = match self.stream {
            StreamKind::Main => "",
            StreamKind::Aux => "_aux",
        };
        sanitize(&format!(
            "{}_{}_{}{aux}",
            self.sdk_app_id,
            self.room(),
            self.user_id
        ))
    }
}

/// Percent-encoding as `urlencode()` does it: everything but `A-Za-z0-9-_.~`.
pub const URL_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The name a URL source's files carry as their user id and `{stream}`: the last path segment
/// without extension or query (`rtmp://h/live/abc?x` → `abc`), sanitized.
pub fn stream_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name = sanitize(last.split('.').next().unwrap_or(last));
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

    fn alice() -> RelayStream {
        RelayStream {
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
        let mut t = alice();
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
        let mut t = alice();
        t.str_room_id = Some("ignored".into());
        assert_eq!(t.room(), "43474");
        t.room_id = None;
        t.str_room_id = Some("class 7/b".into());
        assert_eq!(t.stream_id(), "1400000000_class%207%2Fb_alice_main");
    }

    #[test]
    fn legacy_stream_id_is_bizid_and_uppercase_md5() {
        let mut t = alice();
        t.stream_id = StreamIdForm::Legacy { bizid: 8888 };
        // An independent vector: `printf '43474_alice_main' | md5sum` (coreutils), upper-cased.
        assert_eq!(t.stream_id(), "8888_6120A6764EE5DC0AA74737A2D9AE8A29");
        t.stream_id = StreamIdForm::Explicit("custom-id".into());
        assert_eq!(t.stream_id(), "custom-id");
    }

    #[test]
    fn url_sources_name_their_stream() {
        assert_eq!(stream_name("rtmp://h:1935/live/cam-1?token=x"), "cam-1");
        assert_eq!(stream_name("https://h/live/abc.m3u8"), "abc");
        assert_eq!(stream_name("/tmp/in put.flv"), "in-put");
        assert_eq!(stream_name("rtmp://h/live/"), "live");
        assert_eq!(stream_name(""), "stream");
    }

    #[test]
    fn protocols_and_kinds_parse_their_serde_names() {
        for p in [PlayProtocol::Rtmp, PlayProtocol::Flv, PlayProtocol::Hls] {
            assert_eq!(p.as_str().parse::<PlayProtocol>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for k in [StreamKind::Main, StreamKind::Aux] {
            assert_eq!(k.as_str().parse::<StreamKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("udp".parse::<PlayProtocol>().is_err());
    }
}
