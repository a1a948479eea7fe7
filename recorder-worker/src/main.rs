//! `roomrec-worker`: parse the command line, record, write the results, and exit with a code.
//!
//! The results are the manifest and, when asked, the RecordingJob's status and the pod's
//! termination message. The exit codes:
//!
//! * 0: recorded, every part stored;
//! * 1: failed, and running again may help (the store unreachable, the stream never started,
//!   a part not stored);
//! * 2: bad usage;
//! * 3: failed, and running again cannot help: the store refused the credentials, the bucket
//!   does not exist, the source lacks the track the mode needs, or a file source cannot be
//!   read (`retryable: false` in the termination message).

use clap::Parser;
use roomrec_api::{StopReason, WorkerResult};
use roomrec_worker::cli::{Cli, Command, LogFormat};
use roomrec_worker::recorder::Recorder;
use roomrec_worker::report::job::Reporter;
use roomrec_worker::report::termination;
use roomrec_worker::shared::format::{human_bytes, human_seconds};
use roomrec_worker::shared::live::Status;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    reuse_freed_media_memory();
    let cli = Cli::parse();
    let Command::Record(args) = cli.command;
    let log_format = args.log_format;
    let manifest_target = args.manifest.clone();
    let termination_target = args.termination_message.clone();
    let parsed = args
        .reporting()
        .and_then(|r| args.into_config().map(|c| (c, r)));
    let (config, reporting) = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\nFor more information, try 'roomrec-worker record --help'.");
            if let Some(path) = &termination_target {
                termination::write(&WorkerResult::failed_at_start(&e.to_string(), false), path);
            }
            return ExitCode::from(2);
        }
    };
    let tty = std::io::stderr().is_terminal();
    let json = match log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !tty,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(roomrec_api::worker_env::var::LOG)
        .unwrap_or_else(|_| if json { "info".into() } else { "warn".into() });
    // A log line that cannot be written is dropped, never reported with eprintln!: that
    // panics when stderr fails (a full disk behind it, a closed pipe) and took the upload and
    // journal tasks down with it, mid-recording.
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .init();
    }
    opendal::install_default();

    // One thread: a recording is a few hundred kB/s of copying and waiting, and a
    // multi-threaded runtime spent more CPU handing wake-ups between its threads than that.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let metrics_server = match reporting.metrics_address {
            Some(address) => match roomrec_worker::shared::metrics::serve(address).await {
                Ok((bound, task)) => {
                    tracing::info!(address = %bound, "serving /metrics");
                    Some(task)
                }
                Err(e) => {
                    let message = format!("--metrics-address {address}: {e}");
                    tracing::error!("{message}");
                    eprintln!("error: {message}");
                    if let Some(path) = &reporting.termination_message {
                        termination::write(&WorkerResult::failed_at_start(&message, true), path);
                    }
                    return exit_code(false, true);
                }
            },
            None => None,
        };
        let status = Arc::new(Status::default());
        let recorder = match Recorder::new(config, status.clone()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(retryable = e.retryable, "{e}");
                eprintln!("error: {e}");
                if let Some(path) = &reporting.termination_message {
                    termination::write(&WorkerResult::failed_at_start(&e.message, e.retryable), path);
                }
                return exit_code(false, e.retryable);
            }
        };
        let status_report = reporting
            .job
            .clone()
            .map(|job| {
                Reporter::start(
                    job,
                    reporting.name.clone(),
                    status.clone(),
                    reporting.interval,
                )
            });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!("signal received: finishing the current fragment and closing the upload");
            let _ = stop_tx.send(Some(StopReason::Signal));
        });
        let progress = tokio::spawn(report_progress(status, tty && !json, json));
        let mut signalled = stop_rx.clone();
        let manifest = recorder.run(stop_rx).await;
        progress.abort();
        if tty && !json {
            eprint!("\r\x1b[2K");
        }
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
        if manifest_target == "-" {
            println!("{text}");
        } else if let Err(e) = std::fs::write(&manifest_target, format!("{text}\n")) {
            eprintln!("error: cannot write the manifest to {manifest_target}: {e}");
        }
        if json {
            tracing::info!(status = ?manifest.status, stop_reason = ?manifest.stop_reason, parts = manifest.parts.len(), bytes = manifest.bytes, "recording finished");
        }
        eprint!("{}", manifest.summary());
        if let Some(path) = &reporting.termination_message {
            termination::write(&termination::from_manifest(&manifest), path);
        }
        if let Some(report) = status_report {
            report.finish(manifest.parts.clone(), FINAL_REPORT_WITHIN).await;
        }
        if metrics_server.is_some() && !reporting.metrics_linger.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(reporting.metrics_linger) => {}
                // A dropped sender (no signal handler) is no signal.
                Ok(_) = signalled.wait_for(Option::is_some) => {}
            }
        }
        exit_code(manifest.succeeded(), manifest.retryable)
    })
}

/// The last status report's bound: the pod's grace period is mostly spent on uploads.
const FINAL_REPORT_WITHIN: Duration = Duration::from_secs(5);

fn exit_code(succeeded: bool, retryable: bool) -> ExitCode {
    match (succeeded, retryable) {
        (true, _) => ExitCode::SUCCESS,
        (false, true) => ExitCode::from(1),
        (false, false) => ExitCode::from(3),
    }
}

/// A progress line on a terminal every second; a JSON progress event every 10 s otherwise.
async fn report_progress(status: Arc<Status>, line: bool, json: bool) {
    if !line && !json {
        return;
    }
    let started = Instant::now();
    let mut last_bytes = 0u64;
    // Each tick wakes the process, so JSON logs tick only when they print.
    let period = Duration::from_secs(if line { 1 } else { 10 });
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        interval.tick().await;
        let bytes = status.bytes.load(Ordering::Relaxed);
        let rate = (bytes - last_bytes) as f64 * 8.0 / 1e6 / period.as_secs_f64();
        last_bytes = bytes;
        let media = status.media_millis.load(Ordering::Relaxed) as f64 / 1000.0;
        let part = status.part.load(Ordering::Relaxed);
        let connected = status.connected.load(Ordering::Relaxed);
        if line {
            let state = if connected {
                "recording"
            } else {
                "waiting for the source"
            };
            eprint!(
                "\r\x1b[2K{state}  elapsed {}  media {}  {}  {:.2} Mbit/s  part {part}",
                human_seconds(started.elapsed().as_secs_f64()),
                human_seconds(media),
                human_bytes(bytes),
                rate
            );
            let _ = std::io::stderr().flush();
        } else {
            tracing::info!(
                connected,
                bytes,
                media_seconds = media,
                part,
                spool_bytes = status.spool_bytes.load(Ordering::Relaxed),
                "progress"
            );
        }
    }
}

/// Media units (fragments of a few hundred KiB) are allocated and freed at the stream's pace.
/// They come from glibc's heap, and freed ones stay there for the next: mapped one by one, or
/// trimmed away, every page of every unit was faulted in afresh, and those faults were a fifth
/// of the worker's CPU. The heap holds one upload chunk and the journal's queue at most, so
/// memory is flat at that instead of a saw-tooth below it.
fn reuse_freed_media_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    }
}
