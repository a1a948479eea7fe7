//! Prometheus metrics. Label values are bounded (phases, error steps, results): never a job
//! name, so a thousand jobs cost no more series than one.

use jiff::Timestamp;
use kube::ResourceExt;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use roomrec_api::crd::{Phase, RecordingJob};
use std::collections::HashMap;
use std::sync::Mutex;

/// What became of a room event: applied to a job, acknowledged without effect, or refused
/// (bad signature, stale, malformed).
pub const ROOM_EVENT_RESULTS: [&str; 5] = [
    "applied",
    "ignored",
    "refused-signature",
    "refused-stale",
    "refused-malformed",
];

pub struct Metrics {
    registry: Registry,
    pub jobs: IntGaugeVec,
    pub recordings_active: IntGauge,
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub jobs_started: IntCounter,
    pub jobs_finished: IntCounterVec,
    pub worker_restarts: IntCounter,
    pub callback_deliveries: IntCounter,
    pub callback_failures: IntCounter,
    pub recorded_bytes: IntCounter,
    pub recorded_seconds: prometheus::Counter,
    pub leader: IntGauge,
    /// TRTC room events by what became of them (`ROOM_EVENT_RESULTS`).
    pub room_events: IntCounterVec,
    /// Relays roomrec started and stopped (relay: start).
    pub relays_started: IntCounter,
    pub relays_stopped: IntCounter,
    pub relay_failures: IntCounter,
    /// Heritage API requests by what became of them (`heritage::error::RESULTS`).
    pub heritage_requests: IntCounterVec,
    /// Set at each scrape from `seen`, so it grows while a job waits.
    oldest_pending_age: prometheus::Gauge,
    /// Each job's last phase, running workers and creation time, to keep the gauges exact.
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    phase: Phase,
    running: i64,
    created: Option<Timestamp>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let jobs = IntGaugeVec::new(
            Opts::new("roomrec_jobs", "RecordingJobs by phase"),
            &["phase"],
        )
        .unwrap();
        let recordings_active = IntGauge::new(
            "roomrec_recordings_active",
            "People being recorded now (running worker pods)",
        )
        .unwrap();
        let reconciles = IntCounter::new("roomrec_reconcile_total", "Reconciliations run").unwrap();
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "roomrec_reconcile_errors_total",
                "Reconciliations that failed, by failing step",
            ),
            &["step"],
        )
        .unwrap();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "roomrec_reconcile_duration_seconds",
                "Time one reconciliation took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .unwrap();
        let jobs_started = IntCounter::new(
            "roomrec_jobs_started_total",
            "Jobs whose first worker started",
        )
        .unwrap();
        let jobs_finished = IntCounterVec::new(
            Opts::new("roomrec_jobs_finished_total", "Jobs that ended, by phase"),
            &["phase"],
        )
        .unwrap();
        let worker_restarts = IntCounter::new(
            "roomrec_worker_restarts_total",
            "Worker pods started to replace one that crashed, was evicted or deleted",
        )
        .unwrap();
        let callback_deliveries = IntCounter::new(
            "roomrec_callback_deliveries_total",
            "Callbacks delivered (2xx)",
        )
        .unwrap();
        let callback_failures = IntCounter::new(
            "roomrec_callback_failures_total",
            "Callback attempts that failed",
        )
        .unwrap();
        let recorded_bytes = IntCounter::new(
            "roomrec_recorded_bytes_total",
            "Bytes stored by jobs that ended",
        )
        .unwrap();
        let recorded_seconds = prometheus::Counter::new(
            "roomrec_recorded_seconds_total",
            "Media seconds stored by jobs that ended",
        )
        .unwrap();
        let leader = IntGauge::new(
            "roomrec_leader",
            "1 while this replica holds the leader lease",
        )
        .unwrap();
        let room_events = IntCounterVec::new(
            Opts::new(
                "roomrec_room_events_total",
                "TRTC room event callbacks received, by result",
            ),
            &["result"],
        )
        .unwrap();
        for result in ROOM_EVENT_RESULTS {
            room_events.with_label_values(&[result]);
        }
        let relays_started = IntCounter::new(
            "roomrec_relays_started_total",
            "TRTC relays started (StartPublishCdnStream) for relay: start jobs",
        )
        .unwrap();
        let relays_stopped = IntCounter::new(
            "roomrec_relays_stopped_total",
            "TRTC relays stopped after their person's recording ended",
        )
        .unwrap();
        let relay_failures = IntCounter::new(
            "roomrec_relay_failures_total",
            "Failed attempts to start or stop a TRTC relay",
        )
        .unwrap();
        let heritage_requests = IntCounterVec::new(
            Opts::new(
                "roomrec_heritage_requests_total",
                "Heritage HTTP API requests, by result",
            ),
            &["result"],
        )
        .unwrap();
        for result in crate::heritage::error::RESULTS {
            heritage_requests.with_label_values(&[result]);
        }
        let oldest_pending_age = prometheus::Gauge::new(
            "roomrec_oldest_pending_job_age_seconds",
            "Age of the oldest RecordingJob in phase Pending (no worker started yet), 0 when none",
        )
        .unwrap();
        for c in [
            Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(recordings_active.clone()),
            Box::new(reconciles.clone()),
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(jobs_started.clone()),
            Box::new(jobs_finished.clone()),
            Box::new(worker_restarts.clone()),
            Box::new(callback_deliveries.clone()),
            Box::new(callback_failures.clone()),
            Box::new(recorded_bytes.clone()),
            Box::new(recorded_seconds.clone()),
            Box::new(leader.clone()),
            Box::new(room_events.clone()),
            Box::new(relays_started.clone()),
            Box::new(relays_stopped.clone()),
            Box::new(relay_failures.clone()),
            Box::new(heritage_requests.clone()),
            Box::new(oldest_pending_age.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Every bounded series exists from the start, so rates and alerts see zeros.
        for phase in Phase::ALL {
            jobs.with_label_values(&[phase.as_str()]).set(0);
        }
        for phase in [Phase::Succeeded, Phase::Failed, Phase::Stopped] {
            jobs_finished.with_label_values(&[phase.as_str()]);
        }
        for step in crate::error::STEPS {
            reconcile_errors.with_label_values(&[step]);
        }
        Self {
            registry,
            jobs,
            recordings_active,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            jobs_started,
            jobs_finished,
            worker_restarts,
            callback_deliveries,
            callback_failures,
            recorded_bytes,
            recorded_seconds,
            leader,
            room_events,
            relays_started,
            relays_stopped,
            relay_failures,
            heritage_requests,
            oldest_pending_age,
            seen: Mutex::default(),
        }
    }

    /// Records a job's phase and running workers (`None`: the job is gone).
    pub fn observe(&self, job: &RecordingJob, now: Option<(Phase, i64)>) {
        let uid = job.uid().unwrap_or_default();
        let mut seen = self.seen.lock().expect("metrics lock");
        let before = match now {
            Some((phase, running)) => seen.insert(
                uid,
                Seen {
                    phase,
                    running,
                    created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
                },
            ),
            None => seen.remove(&uid),
        };
        if let Some(Seen { phase, running, .. }) = before {
            self.jobs.with_label_values(&[phase.as_str()]).dec();
            self.recordings_active.sub(running);
        }
        if let Some((phase, running)) = now {
            self.jobs.with_label_values(&[phase.as_str()]).inc();
            self.recordings_active.add(running);
        }
    }

    /// A job is Pending only until its first worker runs (a replacement keeps it Recording),
    /// so its creation time is when it started waiting, also across operator restarts.
    fn oldest_pending_age(&self, now: Timestamp) -> f64 {
        let seen = self.seen.lock().expect("metrics lock");
        seen.values()
            .filter(|s| s.phase == Phase::Pending)
            .filter_map(|s| s.created)
            .map(|created| now.duration_since(created).as_secs_f64().max(0.0))
            .fold(0.0, f64::max)
    }

    pub fn encode(&self) -> String {
        self.oldest_pending_age
            .set(self.oldest_pending_age(Timestamp::now()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}
