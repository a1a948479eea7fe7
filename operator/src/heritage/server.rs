//! The heritage API's HTTP server (`--heritage-address`): every request must carry
//! `Authorization: Bearer <token>` (compared in constant time) before anything else is read;
//! a POST body is read up to 64 KiB. Routes:
//!
//! - `POST /` or `POST /recordings`: start a recording; answers at once, as the template did,
//!   `200 Async run task submitted` with `x-scf-reqid: {request id}` and
//!   `X-Roomrec-Job: {namespace}/{name}`.
//! - `GET /recordings/{request id}`: the recording's heritage result, `Phase` and `StopReason`.
//! - `DELETE /recordings/{request id}`: asks it to stop (`spec.stop`); 202 with the same body.
//!
//! Each answer counts once in `roomrec_heritage_requests_total{result}`.

use super::error::HeritageError;
use super::naming;
use super::recordings::{Recordings, Started};
use super::request;
use super::view;
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use kube::ResourceExt;
use roomrec_api::crd::RecordingJob;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::info;

/// Larger bodies are not heritage requests (a real one is under 2 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The template's answer to a submitted request, word for word.
pub const SUBMITTED: &str = "Async run task submitted";
/// A shorter token is too easy to guess for an API on the internet.
const MIN_TOKEN_LEN: usize = 16;

/// The bearer token, kept only as its SHA-256: comparing digests takes the same time whatever
/// the token sent, its length included.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    /// Reads `--heritage-token-file` (a mounted Secret's key): trimmed, at least 16 characters.
    pub fn from_file(path: &Path) -> Result<Self, HeritageError> {
        let flag = "--heritage-token-file";
        let text = std::fs::read_to_string(path).map_err(|e| {
            HeritageError::config(flag, format!("{} cannot be read: {e}", path.display()))
        })?;
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(HeritageError::config(
                flag,
                format!(
                    "{} holds {} characters; the token must have at least {MIN_TOKEN_LEN} (e.g. openssl rand -hex 32)",
                    path.display(),
                    token.chars().count()
                ),
            ));
        }
        Ok(Token(Sha256::digest(token.as_bytes()).into()))
    }

    /// Whether `authorization` is `Bearer {the token}`.
    fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given.trim_ascii()).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    }
}

#[derive(Clone)]
pub struct Server {
    recordings: Recordings,
    token: Token,
    metrics: Arc<Metrics>,
}

impl Server {
    pub fn new(recordings: Recordings, token: Token, metrics: Arc<Metrics>) -> Self {
        Self {
            recordings,
            token,
            metrics,
        }
    }
}

/// Binds now (a bad address fails at start) and serves until the process ends.
pub async fn serve(address: SocketAddr, server: Server) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    crate::http::spawn_server(listener, move |request| {
        let server = server.clone();
        async move { answer(&server, request).await }
    });
    Ok(bound)
}

/// The routes' paths, for 405 answers.
const RECORDINGS: &str = "/recordings";
const ONE_RECORDING: &str = "/recordings/{request id}";

async fn answer(server: &Server, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let outcome = route(server, request).await;
    let result = match &outcome {
        Ok((result, _)) => *result,
        Err(e) => e.result(),
    };
    server
        .metrics
        .heritage_requests
        .with_label_values(&[result])
        .inc();
    match outcome {
        Ok((_, response)) => response,
        Err(e) => {
            // The message never holds a secret value: it names fields, not their contents.
            info!(%method, %path, result, status = e.status().as_u16(), error = %e, "heritage request refused");
            e.response()
        }
    }
}

type Answer = (&'static str, Response<Full<Bytes>>);

async fn route(
    server: &Server,
    request: Request<hyper::body::Incoming>,
) -> Result<Answer, HeritageError> {
    let header = |name: &str| request.headers().get(name).map(|v| v.as_bytes());
    if !server.token.admits(header("Authorization")) {
        return Err(HeritageError::Unauthorized);
    }
    let path = request.uri().path().trim_end_matches('/').to_string();
    let method = request.method().clone();
    match (path.as_str(), path.strip_prefix("/recordings/")) {
        ("" | RECORDINGS, _) if method == Method::POST => start(server, request).await,
        ("" | RECORDINGS, _) => Err(HeritageError::Method {
            path: "/ and /recordings",
            allowed: "POST",
        }),
        (_, Some(id)) if !id.is_empty() && !id.contains('/') => {
            if method == Method::GET {
                let job = server.recordings.find(id).await?;
                Ok(("status", recording(StatusCode::OK, id, &job)))
            } else if method == Method::DELETE {
                let job = server.recordings.stop(id).await?;
                Ok(("stopped", recording(StatusCode::ACCEPTED, id, &job)))
            } else {
                Err(HeritageError::Method {
                    path: ONE_RECORDING,
                    allowed: "GET, DELETE",
                })
            }
        }
        _ => Err(HeritageError::NoRoute),
    }
}

async fn start(
    server: &Server,
    request: Request<hyper::body::Incoming>,
) -> Result<Answer, HeritageError> {
    let key = naming::idempotency_key(
        request
            .headers()
            .get("Idempotency-Key")
            .map(|v| v.as_bytes()),
    )?;
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| HeritageError::TooLarge {
            limit: MAX_BODY_BYTES,
        })?
        .to_bytes();
    let parsed = request::parse(&body, jiff::Timestamp::now().as_second())?;
    let Started {
        request_id,
        job,
        created,
    } = server.recordings.start(&parsed, key.as_deref()).await?;
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("x-scf-reqid", &request_id)
        .header("X-Roomrec-Job", job_ref(&job))
        .body(Full::new(Bytes::from_static(SUBMITTED.as_bytes())))
        .expect("a valid response");
    Ok((if created { "created" } else { "existing" }, response))
}

fn job_ref(job: &RecordingJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

fn recording(status: StatusCode, request_id: &str, job: &RecordingJob) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&view::of(job)).expect("the view serializes");
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("x-scf-reqid", request_id)
        .header("X-Roomrec-Job", job_ref(job))
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Result<Token, HeritageError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        Token::from_file(&path)
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = token("0123456789abcdef0123\n").unwrap();
        assert!(token.admits(Some(b"Bearer 0123456789abcdef0123")));
        assert!(!token.admits(Some(b"Bearer 0123456789abcdef012")));
        assert!(!token.admits(Some(b"Bearer 0123456789abcdef01234")));
        assert!(!token.admits(Some(b"bearer 0123456789abcdef0123")));
        assert!(!token.admits(Some(b"0123456789abcdef0123")));
        assert!(!token.admits(None));
    }

    #[test]
    fn a_short_or_missing_token_file_stops_the_start_naming_the_flag() {
        for outcome in [
            token("short"),
            Token::from_file(Path::new("/nonexistent/token")),
        ] {
            match outcome {
                Err(HeritageError::Config { field, .. }) => {
                    assert_eq!(field, "--heritage-token-file")
                }
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("accepted"),
            }
        }
    }
}
