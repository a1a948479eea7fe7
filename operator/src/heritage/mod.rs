//! The heritage HTTP API: a drop-in for the serverless TRTC recording template roomrec
//! replaces. Its clients POST the template's request (SdkAppId, RoomId or StrRoomId, UserId,
//! UserSig, CosConfig, Callback, Mode) and get `Async run task submitted` with a request id;
//! roomrec records every anchor of the room into their COS bucket as a RecordingJob and POSTs
//! the template's result to their Callback when it ends. Off unless `--heritage-address` is set.
//!
//! ```text
//! server.rs      HTTP: bearer token, body limit, routes, answers, the requests metric
//! request.rs     the request body: parsed and checked field by field (pure)
//! template.rs    --heritage-template: the operator's choices for heritage jobs
//! rules.rs       the CRD's CEL limits on the fields both fill in
//! naming.rs      job names, labels and hashes that make a repeated request start nothing
//! job.rs         the RecordingJob and the request's Secret (pure)
//! recordings.rs  the API server side: start (once), find by request id, stop
//! view.rs        what GET and DELETE answer: the callback's payload, Phase, StopReason
//! error.rs       HeritageError: status, field and metric result of every refusal
//! ```

pub mod error;
pub mod job;
pub mod naming;
pub mod recordings;
pub mod request;
pub mod rules;
pub mod server;
pub mod template;
pub mod view;

pub use error::HeritageError;
pub use recordings::Recordings;
pub use server::{Server, Token, serve};
pub use template::Template;

use std::path::Path;

/// What the heritage API needs from the operator's flags, checked together at start-up.
pub struct Settings {
    /// Where heritage jobs (and their Secrets) are created.
    pub namespace: String,
    pub template: Template,
    pub token: Token,
}

impl Settings {
    /// `watched`: the operator's `--namespace`, if it watches one; `fallback`: its own
    /// namespace; `room_events`: whether it serves TRTC's room events (whole-room jobs, which
    /// heritage jobs are, start people from them).
    pub fn new(
        token_file: Option<&Path>,
        template: Option<Template>,
        namespace: Option<&str>,
        watched: Option<&str>,
        fallback: &str,
        room_events: bool,
    ) -> Result<Self, HeritageError> {
        let token_file = token_file.ok_or_else(|| {
            HeritageError::config(
                "--heritage-token-file",
                "is required with --heritage-address: a file holding the bearer token clients send",
            )
        })?;
        let template = template.ok_or_else(|| {
            HeritageError::config(
                "--heritage-template",
                "is required with --heritage-address: e.g. {\"playDomain\": \"play.example.com\"}",
            )
        })?;
        if !room_events {
            return Err(HeritageError::config(
                "--heritage-address",
                "needs --room-events-address: heritage jobs record the whole room, whose anchors come from TRTC's room events (chart value trtc.events.enabled)",
            ));
        }
        let namespace = namespace.or(watched).unwrap_or(fallback).to_string();
        if let Some(watched) = watched
            && watched != namespace
        {
            return Err(HeritageError::config(
                "--heritage-namespace",
                format!(
                    "is {namespace}, but the operator watches only {watched} (--namespace): its heritage jobs would never run"
                ),
            ));
        }
        Ok(Settings {
            namespace,
            template,
            token: Token::from_file(token_file)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        namespace: Option<&str>,
        watched: Option<&str>,
        room_events: bool,
    ) -> Result<Settings, HeritageError> {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123").unwrap();
        let template = Template::parse(r#"{"playDomain": "play.example.com"}"#).unwrap();
        Settings::new(
            Some(&token),
            Some(template),
            namespace,
            watched,
            "roomrec-system",
            room_events,
        )
    }

    fn refused_flag(outcome: Result<Settings, HeritageError>) -> String {
        match outcome {
            Err(HeritageError::Config { field, .. }) => field,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn heritage_jobs_go_where_the_operator_watches_and_need_room_events() {
        assert_eq!(
            settings(None, None, true).unwrap().namespace,
            "roomrec-system"
        );
        assert_eq!(settings(None, Some("rec"), true).unwrap().namespace, "rec");
        assert_eq!(settings(Some("rec"), None, true).unwrap().namespace, "rec");
        assert_eq!(
            refused_flag(settings(Some("other"), Some("rec"), true)),
            "--heritage-namespace"
        );
        assert_eq!(
            refused_flag(settings(None, None, false)),
            "--heritage-address"
        );
    }
}
