//! Prometheus metrics of one worker, served on `/metrics` when `--metrics-address` is given.
//! The names are a contract (the chart's dashboard and alerts use them); labels are bounded.
//!
//! One process records one stream, so the registry is process-wide, like the prometheus
//! crate's default one: the upload tasks, the spool and opendal's retry hook count into it
//! without a handle threaded through each of them.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::LazyLock;
use tokio::net::TcpListener;

pub struct Metrics {
    registry: Registry,
    /// Bytes the store confirmed: each checkpoint once the journal holds it (every recorded
    /// byte goes through the journal once), so the count grows while a long part records.
    pub recorded_bytes: IntCounter,
    pub recorded_seconds: Counter,
    pub upload_retries: IntCounter,
    parts: IntCounterVec,
    pub spool_bytes: IntGauge,
    pub spool_limit_bytes: IntGauge,
    pub source_reconnects: IntCounter,
    pub recording: IntGauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let parts = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "roomrec_worker_parts_total",
                    "Parts finished, by status (complete: the object is stored; failed: it is not)",
                ),
                &["status"],
            ),
        );
        // Both series exist from the start, so rates and alerts see zeros.
        for status in ["complete", "failed"] {
            parts.with_label_values(&[status]);
        }
        Self {
            recorded_bytes: register(
                &registry,
                IntCounter::new(
                    "roomrec_worker_recorded_bytes_total",
                    "Recorded bytes the object store confirmed",
                ),
            ),
            recorded_seconds: register(
                &registry,
                Counter::new(
                    "roomrec_worker_recorded_seconds_total",
                    "Media seconds recorded",
                ),
            ),
            upload_retries: register(
                &registry,
                IntCounter::new(
                    "roomrec_worker_upload_retries_total",
                    "Object store requests retried after an error",
                ),
            ),
            parts,
            spool_bytes: register(
                &registry,
                IntGauge::new(
                    "roomrec_worker_spool_bytes",
                    "Recorded bytes waiting for the object store (memory and spool directory)",
                ),
            ),
            spool_limit_bytes: register(
                &registry,
                IntGauge::new(
                    "roomrec_worker_spool_limit_bytes",
                    "Spool bytes at which the recording fails (--spool-max)",
                ),
            ),
            source_reconnects: register(
                &registry,
                IntCounter::new(
                    "roomrec_worker_source_reconnects_total",
                    "Source drops after which the recording continued as a new part",
                ),
            ),
            recording: register(
                &registry,
                IntGauge::new(
                    "roomrec_worker_recording",
                    "1 while ffmpeg is recording, 0 otherwise",
                ),
            ),
            registry,
        }
    }

    /// A part's object is stored (`true`), or it is not.
    pub fn part_finished(&self, stored: bool) {
        let status = if stored { "complete" } else { "failed" };
        self.parts.with_label_values(&[status]).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

/// Adds `metric` (valid by construction: fixed names and help) to the registry.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// Binds now (so a taken port fails at start) and serves `/metrics` until the task is dropped.
pub async fn serve(
    address: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            // An accept error (a full file table) passes; the server must not end with it.
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(answer(request.uri().path()))
                }),
            ));
        }
    });
    Ok((bound, task))
}

fn answer(path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics().encode(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
