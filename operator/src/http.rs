//! `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz` (this replica
//! leads and its controller runs; a standby replica is alive but not ready).

use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct Probes {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

/// Binds now (so a bad address fails at start), serves until the task is dropped.
pub async fn serve(
    address: SocketAddr,
    probes: Probes,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let task = spawn_server(listener, move |request| {
        let response = answer(&probes, request.uri().path());
        async move { response }
    });
    Ok((bound, task))
}

/// Serves HTTP/1 on `listener`, a task per connection, `handler` answering each request, until
/// the returned task is dropped or aborted.
pub fn spawn_server<H, F>(listener: TcpListener, handler: H) -> tokio::task::JoinHandle<()>
where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    })
}

fn answer(probes: &Probes, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            probes.metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if probes.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not leading\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
