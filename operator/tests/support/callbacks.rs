//! A callback receiver: an HTTP server on loopback that records every request (headers and
//! body) and refuses the first ones, as a client's endpoint that fails for a while — or
//! answers each request as a test says (a redirect, a huge body, never).

use std::sync::{Arc, Mutex};

/// A request the receiver got: its headers and body.
pub type Received = (Vec<(String, String)>, Vec<u8>);

/// How the receiver answers one request.
#[allow(dead_code, reason = "each test binary uses the answers it needs")]
pub enum Answer {
    Status(u16, Vec<u8>),
    /// 307 to this location (a redirect that keeps the method and body).
    Redirect(String),
    /// No answer, ever.
    Hang,
}

/// Receives callbacks: records each request; the first `fail_first` get HTTP 500.
pub struct Receiver {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        Self::answering(move |n| {
            let status = if n <= fail_first { 500 } else { 200 };
            Answer::Status(status, b"ok".to_vec())
        })
        .await
    }

    /// Answers the `n`th request (from 1) with `answer(n)`.
    pub async fn answering(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        use http_body_util::{BodyExt, Full};
        let answer = Arc::new(answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            let answer = answer.clone();
                            async move {
                                let headers: Vec<(String, String)> = request
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .unwrap()
                                    .to_bytes()
                                    .to_vec();
                                let n = {
                                    let mut seen = seen.lock().unwrap();
                                    seen.push((headers, body));
                                    seen.len()
                                };
                                let response = match answer(n) {
                                    Answer::Status(status, body) => hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(bytes::Bytes::from(body))),
                                    Answer::Redirect(to) => hyper::Response::builder()
                                        .status(307)
                                        .header("Location", to)
                                        .body(Full::new(bytes::Bytes::new())),
                                    Answer::Hang => std::future::pending().await,
                                };
                                Ok::<_, std::convert::Infallible>(response.unwrap())
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/recording", self.port)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
