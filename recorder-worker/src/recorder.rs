//! The recording loop (`Recorder`): from the first connection to the manifest.
//!
//! Connect (start ffmpeg, check the plan against its input report), cut its output into whole
//! units, stream them into parts, rotate parts (by duration, size, reconnect), and stop for a
//! reason: the source ended, no media for the idle timeout, the maximum duration, a signal, or
//! a stop request. Leftover journals of earlier runs are rebuilt first.

use crate::config::{MAX_CHUNKS, RecordConfig};
use crate::media::cutter::{Cutter, Piece};
use crate::media::fmp4;
use crate::report::manifest::{Failure, Manifest};
use crate::shared::live::Status;
use crate::shared::metrics::metrics;
use crate::shared::part::{PartMeta, PartRecord};
use crate::source::ffmpeg::{self, FfmpegError, LogLine, Recording};
use crate::source::input::{DropRule, Protocol, redact, retry_delay};
use crate::source::plan::{self, Plan};
use crate::store::claim::{self, Checkpoints, Lease, Owner};
use crate::store::cos_multipart::CosMultipart;
use crate::store::faststart::Faststart;
use crate::store::in_place::InPlace;
use crate::store::journal;
use crate::store::keys::compact_time;
use crate::store::numbering::{KeyMaker, PartNumbers};
use crate::store::part_writer::{PartWriter, RunShared, UploadSettings};
use crate::store::scratch::{self, Scratch};
use crate::store::spool::{Spool, upload_spooled};
use crate::store::stopping::Stopping;
use crate::store::storage::{StorageConfig, StorageKind, Store};
use opendal::Operator;
use roomrec_api::Mode;
use roomrec_api::{FileState, StopReason};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Recorder {
    config: RecordConfig,
    op: Operator,
    /// COS: part copies for assembling a part's object from its stored chunks.
    cos_parts: Option<Arc<CosMultipart>>,
    /// A directory: parts are written into their files in place.
    in_place: Option<Arc<InPlace>>,
    status: Arc<Status>,
    spool: Arc<Spool>,
    stopping: Arc<Stopping>,
    /// --faststart: each part's local copy and its conversion to a classic MP4.
    faststart: Option<Arc<Faststart>>,
    finishing: Vec<JoinHandle<PartRecord>>,
    numbers: PartNumbers,
    /// This run's lease: while it is renewed, no other run rebuilds the journals it claimed.
    lease: Option<Lease>,
    /// Told of each stored checkpoint: while they come, the lease need not be rewritten.
    checkpoints: Arc<Checkpoints>,
    /// Journals of this recording whose owner looked alive at the start, rebuilt if it turns
    /// out dead.
    watched: Option<JoinHandle<Vec<PartRecord>>>,
    /// The init segment of the running ffmpeg, written at the start of each of its parts.
    pending_init: Option<(bytes::Bytes, fmp4::Tracks)>,
    /// Media seconds of parts already closed, for progress.
    closed_seconds: f64,
    /// Media seconds of this run already counted in `roomrec_worker_recorded_seconds_total`.
    counted_seconds: f64,
    /// Bytes of the fragments after the current GOP's keyframe fragment, and the most any GOP
    /// had: a part can only be cut at a keyframe, so it must leave room for the GOP's rest.
    gop_tail: u64,
    largest_gop_tail: u64,
    /// What counts as a drop for this source (`Source::drop_rule`).
    rule: DropRule,
    /// How long an open connection may deliver nothing before the source counts as gone.
    quiet: Duration,
    /// When ffmpeg reported that the source's timeline restarted inside the connection: the
    /// next part begins at the first keyframe after it.
    timeline_restarted: Option<Instant>,
}

/// Why the inner read loop returned.
enum Ended {
    /// ffmpeg's output ended; with the error it gave, if it gave one.
    SourceGone(Option<FfmpegError>),
    /// The open connection delivered nothing for the drop rule's quiet time.
    Quiet,
    /// A track the recording lacked appeared: ffmpeg must be started again to record it.
    TracksChanged(&'static str),
    Stop(StopReason),
}

/// A fragment that begins a keyframe this long after ffmpeg reported a restarted timeline
/// belongs to the new timeline: the fragment ffmpeg writes out as the restart arrives (the
/// end of the old one) follows the report at once, the new timeline's first one only once it
/// holds a keyframe interval or a second of media.
const AFTER_RESTART: Duration = Duration::from_millis(300);

impl Recorder {
    /// Connects to storage and checks it is usable, so bad credentials or a missing bucket fail
    /// before any media is read.
    pub async fn new(config: RecordConfig, status: Arc<Status>) -> Result<Self, Failure> {
        let Store {
            op,
            cos_parts,
            in_place,
        } = config
            .storage
            .open(&config.retry)
            .map_err(Failure::retryable)?;
        check_storage(&op, &config.storage).await?;
        claim::ensure_supported(&op, &config.storage.describe())
            .map_err(|e| Failure::permanent(e.to_string()))?;
        let run = claim::new_run_id();
        let lease = Lease::start(&op, &config.storage.prefix, &run)
            .await
            .map_err(|e| Failure::retryable(format!("cannot write the run's lease: {e}")))?;
        tracing::info!(run, "run lease taken");
        let start = compact_time(config.session_start);
        let spool = Arc::new(Spool::new(config.spool.clone()));
        let faststart = config.faststart.clone().map(|dir| {
            Arc::new(Faststart::new(
                op.clone(),
                &config.storage.prefix,
                config.mode,
                config.tools.clone(),
                config.chunk_size(),
                dir,
            ))
        });
        let keys = KeyMaker {
            template: config.key_template.clone(),
            storage: config.storage.clone(),
            mode: config.mode,
            stream: config.source.stream_label(),
            user: config.source.user_id(),
            start,
        };
        let rule = config.source.drop_rule(config.stall_timeout);
        // Without a quiet rule (HLS), a source that delivers nothing for the reconnect grace
        // is gone (the grace 0, which ends a recording at its first drop: the stall time).
        let quiet = rule.quiet.unwrap_or(if config.reconnect_grace.is_zero() {
            config.stall_timeout
        } else {
            config.reconnect_grace
        });
        Ok(Self {
            rule,
            quiet,
            timeline_restarted: None,
            numbers: PartNumbers::new(op.clone(), keys, &run),
            checkpoints: lease.checkpoints(),
            lease: Some(lease),
            watched: None,
            config,
            op,
            cos_parts,
            in_place,
            status,
            spool,
            stopping: Arc::default(),
            faststart,
            finishing: Vec::new(),
            pending_init: None,
            closed_seconds: 0.0,
            counted_seconds: 0.0,
            gop_tail: 0,
            largest_gop_tail: 0,
        })
    }

    /// How long to wait for the source, and the stop reason when it does not come: before the
    /// first media the idle timeout; after a drop the reconnect grace, bounded by the idle
    /// timeout (a drop longer than the idle timeout ends the recording as idle, as the
    /// heritage template did when a room had no anchor for 300 s).
    fn wait_budget(&self, ever_connected: bool) -> (Duration, StopReason) {
        let idle = self.config.idle_timeout;
        let grace = self.config.reconnect_grace;
        match ever_connected {
            false => (idle, StopReason::IdleTimeout),
            true if grace < idle => (grace, StopReason::SourceEnded),
            true => (idle, StopReason::IdleTimeout),
        }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<Option<StopReason>>) -> Manifest {
        let started_at = crate::shared::format::now_rfc3339();
        let started = Instant::now();
        if let Some(f) = &self.faststart {
            scratch::sweep(f.scratch_dir());
        }
        let mut parts: Vec<PartRecord> = self.recover().await;
        self.numbers.claim_ahead();

        let mut last_media = Instant::now();
        let mut ever_connected = false;
        let mut failure: Option<Failure> = None;
        let reason = 'connect: loop {
            // Connect: ffmpeg waits for a live source to start, bounded by the idle timeout
            // (or, after a drop, by the reconnect grace). It starts with the likely plan and
            // reports its input's tracks before it writes anything.
            let (wait, expired) = self.wait_budget(ever_connected);
            let budget = wait.saturating_sub(last_media.elapsed());
            if budget.is_zero() {
                break expired;
            }
            let url = self.config.source.url();
            let options = self.config.source.input_options();
            // Mode 02 starts with both tracks optional: a person with the camera (or the
            // microphone) off is recorded by the same ffmpeg, from the first moment.
            let likely = Plan::likely(self.config.mode)
                .with_adts_audio(self.rule.adts_audio)
                .with_optional_tracks(self.config.mode == Mode::AudioVideoMp4);
            let mut running = likely;
            let mut recording = match self.start_reading(&url, &options, &running) {
                Ok(r) => r,
                Err(message) => {
                    failure = Some(Failure::retryable(message));
                    break StopReason::Failed;
                }
            };
            let mut restarts = 0;
            let plan = loop {
                let reported = tokio::select! {
                    r = tokio::time::timeout(budget, recording.input_tracks()) => r,
                    reason = wait_stop(&mut stop, self.config.stop_file.as_deref()) => break 'connect reason,
                };
                let tracks = match reported {
                    Err(_) => break 'connect expired,
                    Ok(Err(error)) => {
                        let message = format!("cannot read the source {}: {error}", redact(&url));
                        // A file that cannot be read will not become readable by trying again.
                        if !self.config.source.is_live() {
                            failure = Some(Failure::permanent(message));
                            break 'connect StopReason::Failed;
                        }
                        tracing::info!("source not available yet: {message}");
                        // Soon again: a server that refuses players while nobody publishes is
                        // joined only after the publisher is back, and every moment is media
                        // lost.
                        tokio::select! {
                            _ = tokio::time::sleep(retry_delay(last_media.elapsed())) => continue 'connect,
                            reason = wait_stop(&mut stop, self.config.stop_file.as_deref()) => break 'connect reason,
                        }
                    }
                    // An HLS playlist that has ended (it has a length now) is not the source
                    // back after a drop: it is what was recorded, read again from its start.
                    Ok(Ok(tracks))
                        if ever_connected
                            && self.config.source.protocol() == Protocol::Hls
                            && tracks.duration.is_some() =>
                    {
                        tracing::info!("the HLS playlist has ended; waiting for it to go on");
                        drop(recording);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'connect,
                            reason = wait_stop(&mut stop, self.config.stop_file.as_deref()) => break 'connect reason,
                        }
                    }
                    // The source is there: the idle clock restarts with the connection.
                    Ok(Ok(tracks)) => {
                        last_media = Instant::now();
                        tracks
                    }
                };
                let plan = match plan::plan_present(self.config.mode, &tracks, &redact(&url)) {
                    Ok(plan) => plan.with_adts_audio(self.rule.adts_audio),
                    // The source lacks a track the mode needs.
                    Err(message) => {
                        failure = Some(Failure::permanent(message));
                        break 'connect StopReason::Failed;
                    }
                };
                if plan.same_command(&running.as_run_on(&tracks)) || restarts == 3 {
                    break plan;
                }
                // An unusual source (audio to encode, MP3 to copy, old FLV video): ffmpeg
                // starts again, the right way, before anything it wrote is used. It reports
                // the tracks again: one may have appeared meanwhile.
                tracing::info!(
                    ?tracks,
                    "the source needs another ffmpeg command; restarting it"
                );
                drop(recording);
                recording = match self.start_reading(&url, &options, &plan) {
                    Ok(r) => r,
                    Err(message) => {
                        failure = Some(Failure::retryable(message));
                        break 'connect StopReason::Failed;
                    }
                };
                running = plan;
                restarts += 1;
            };
            tracing::info!(video = ?plan.output_video, audio = ?plan.output_audio, copy = plan.copies_everything(), "recording {}", redact(&url));
            if let Some((_, note)) = &plan.missing {
                tracing::warn!("{note}");
            }
            self.status.connected.store(true, Ordering::Relaxed);
            metrics().recording.set(1);
            let ended = self
                .read(
                    recording,
                    &plan,
                    &mut stop,
                    &mut last_media,
                    &mut ever_connected,
                )
                .await;
            self.status.connected.store(false, Ordering::Relaxed);
            metrics().recording.set(0);
            match ended {
                Ended::Stop(StopReason::Failed) => {
                    failure = Some(Failure::retryable(
                        "the spool is full: the object store has been unreachable for too long",
                    ));
                    break StopReason::Failed;
                }
                Ended::Stop(reason) => break reason,
                Ended::TracksChanged(track) => {
                    // Read again at once, for every track: the connection is still good.
                    tracing::info!(
                        track,
                        "a track the recording lacked appeared; reading the source again to record it"
                    );
                    last_media = Instant::now();
                    continue;
                }
                Ended::Quiet if self.config.reconnect_grace.is_zero() => {
                    break StopReason::SourceEnded;
                }
                Ended::Quiet => {
                    tracing::info!(grace = ?self.config.reconnect_grace, "the source went quiet; waiting for it to return");
                }
                Ended::SourceGone(error) => {
                    if !self.config.source.is_live() || self.config.reconnect_grace.is_zero() {
                        if let Some(e) = error.filter(|_| !ever_connected) {
                            failure = Some(if self.config.source.is_live() {
                                Failure::retryable(e)
                            } else {
                                Failure::permanent(e)
                            });
                            break StopReason::Failed;
                        }
                        break StopReason::SourceEnded;
                    }
                    tracing::info!(grace = ?self.config.reconnect_grace, "the source dropped; waiting for it to return");
                    last_media = Instant::now();
                }
            }
        };

        self.numbers.release().await;
        // Uploads get part of the shutdown time; the rest keeps what they could not store (the
        // spool directory) and writes the manifest.
        let uploads_within = self.config.shutdown_timeout.mul_f64(0.6);
        self.stopping.begin(uploads_within);
        // After a signal the pod's grace period bounds everything. A recording that ends on its
        // own has none, and its last classic copy may take longer than the shutdown timeout.
        let bounded = match &self.faststart {
            Some(f) if reason == StopReason::Signal => {
                f.deadline.begin(uploads_within);
                true
            }
            Some(_) => false,
            None => true,
        };
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        for task in std::mem::take(&mut self.finishing) {
            let done = match bounded {
                true => tokio::time::timeout_at(deadline, task).await,
                false => Ok(task.await),
            };
            match done {
                Ok(Ok(record)) => parts.push(record),
                Ok(Err(e)) => {
                    failure.get_or_insert(Failure::retryable(format!(
                        "a part's upload task failed: {e}"
                    )));
                }
                Err(_) => {
                    failure.get_or_insert(Failure::retryable("the shutdown timeout passed before every part was stored; their checkpoints stay in the journal and the next run rebuilds them"));
                }
            }
        }
        if let Some(watched) = self.watched.take() {
            let done = match bounded {
                true => tokio::time::timeout_at(deadline, watched).await,
                false => Ok(watched.await),
            };
            match done {
                Ok(Ok(records)) => parts.extend(records),
                Ok(Err(e)) => tracing::warn!("rebuilding earlier runs' parts failed: {e}"),
                Err(_) => tracing::warn!(
                    "the shutdown timeout passed before earlier runs' journals were judged; the next run does it"
                ),
            }
        }
        if let Some(lease) = self.lease.take() {
            lease.end().await;
        }
        parts.sort_by_key(|p| p.part);
        Manifest::new(
            &self.config,
            started_at,
            reason,
            failure,
            parts,
            started.elapsed(),
        )
    }

    /// Starts ffmpeg on the source. It reads from here on, and what it reads first is in the
    /// recording: the `reading` event marks that moment.
    fn start_reading(
        &self,
        url: &str,
        options: &[String],
        plan: &Plan,
    ) -> Result<Recording, FfmpegError> {
        tracing::info!("reading {}", redact(url));
        Recording::start(&self.config.tools, url, options, plan)
    }

    /// Reads one ffmpeg run to its end.
    async fn read(
        &mut self,
        mut recording: Recording,
        plan: &Plan,
        stop: &mut watch::Receiver<Option<StopReason>>,
        last_media: &mut Instant,
        ever_connected: &mut bool,
    ) -> Ended {
        let mut cutter = Cutter::new(self.config.mode);
        let mut part: Option<OpenPart> = None;
        self.pending_init = None;
        self.timeline_restarted = None;
        let mut last_error: Option<String> = None;
        let mut delivered = false;
        // One future for the whole run: not a new one (and a stat of the stop file) per chunk.
        let stop_file = self.config.stop_file.clone();
        let mut stop_requested = std::pin::pin!(wait_stop(stop, stop_file.as_deref()));
        // One timer for every deadline that media pushes back (idle, stall, a checkpoint of a
        // slow stream's last bytes): each timer that fires wakes the process, and those
        // wake-ups were most of the worker's CPU.
        let mut deadline = std::pin::pin!(tokio::time::sleep_until(
            (*last_media + self.config.idle_timeout).into()
        ));
        let ended = loop {
            tokio::select! {
                read = ffmpeg::read_output(&mut recording.stdout, cutter.read_buffer()) => match read {
                    Ok(n) if n > 0 => {
                        *last_media = Instant::now();
                        if !delivered && *ever_connected {
                            // Media again after a drop: the recording goes on as a new part.
                            metrics().source_reconnects.inc();
                        }
                        *ever_connected = true;
                        delivered = true;
                        self.consume(&mut cutter, &mut part, plan).await;
                        // The uploads take what this read queued before the spool is judged
                        // (it only grows here, when media comes in).
                        tokio::task::yield_now().await;
                        if self.check_spool() {
                            break Ended::Stop(StopReason::Failed);
                        }
                        // Media moves the deadline back (nearer only when a connection first
                        // delivers and the stall timeout starts), so it never passes while
                        // media flows. Moved back, it is a new timer: tokio extends a timer
                        // reset to later in place and moves it in its wheel only when the old
                        // time comes, so the process still woke for it about once a second.
                        let next = self.next_deadline(*last_media, delivered, &part);
                        let current = deadline.deadline().into_std();
                        if next > current {
                            deadline.set(tokio::time::sleep_until(next.into()));
                        } else if next < current {
                            deadline.as_mut().reset(next.into());
                        }
                        // --max-duration counts recorded media, not wall time.
                        let recorded = self.closed_seconds + part.as_ref().map_or(0.0, |p| p.writer.seconds);
                        if self.config.max_duration.is_some_and(|max| recorded >= max.as_secs_f64()) {
                            break Ended::Stop(StopReason::MaxDuration);
                        }
                    }
                    Ok(_) => break Ended::SourceGone(last_error.take().map(FfmpegError::Reported)),
                    Err(e) => break Ended::SourceGone(Some(FfmpegError::Read(e))),
                },
                line = recording.log.recv() => match line {
                    Some(LogLine::Error(message)) => last_error = Some(message),
                    Some(LogLine::TimelineRestart) if self.rule.restarts_in_connection && delivered => {
                        // A publisher that left and came back while the server kept this
                        // connection: ffmpeg joins its timeline onto the old one (nothing is
                        // lost), and its first keyframe begins a new part.
                        tracing::info!("the source's timeline restarted (its publisher returned); a new part begins at its first keyframe");
                        metrics().source_reconnects.inc();
                        self.timeline_restarted = Some(Instant::now());
                    }
                    Some(LogLine::NewTrack(track)) if plan.missing.as_ref().is_some_and(|(m, _)| *m == track) => {
                        break Ended::TracksChanged(track);
                    }
                    Some(LogLine::Tracks(_) | LogLine::TimelineRestart | LogLine::NewTrack(_)) | None => {}
                },
                reason = &mut stop_requested => break Ended::Stop(reason),
                _ = &mut deadline => {
                    let now = Instant::now();
                    if now >= *last_media + self.config.idle_timeout {
                        break Ended::Stop(StopReason::IdleTimeout);
                    }
                    if delivered && now >= *last_media + self.quiet {
                        tracing::warn!(quiet = ?self.quiet, "no media on the open connection: the source counts as gone");
                        break Ended::Quiet;
                    }
                    if let Some(p) = part.as_mut() {
                        p.writer.checkpoint_if_due();
                    }
                    if self.check_spool() {
                        break Ended::Stop(StopReason::Failed);
                    }
                    deadline.as_mut().reset(self.next_deadline(*last_media, delivered, &part).into());
                }
            }
        };
        let graceful = match &ended {
            Ended::Stop(r) => *r != StopReason::MaxDuration,
            Ended::Quiet | Ended::TracksChanged(_) => true,
            Ended::SourceGone(_) => false,
        };
        if graceful {
            // Let ffmpeg finish its last fragment, then take what it wrote. One that waits for
            // a source gone quiet hears the request only when media comes; asked twice, it
            // gives up the wait (and what it held).
            recording.request_stop();
            let now = tokio::time::Instant::now();
            let (mut nudge, drain_until) = (
                Some(now + Duration::from_secs(1)),
                now + Duration::from_secs(5),
            );
            loop {
                let until = nudge.map_or(drain_until, |n| n.min(drain_until));
                match tokio::time::timeout_at(
                    until,
                    ffmpeg::read_output(&mut recording.stdout, cutter.read_buffer()),
                )
                .await
                {
                    Ok(Ok(1..)) => self.consume(&mut cutter, &mut part, plan).await,
                    Ok(_) => break,
                    Err(_) if nudge.take().is_some() => recording.interrupt(),
                    Err(_) => break,
                }
            }
        } else if matches!(&ended, Ended::Stop(StopReason::MaxDuration)) {
            // Enough is recorded: what ffmpeg reads from here on would only be thrown away.
            recording.kill();
        }
        if let Some(frames) = cutter.finish() {
            self.append(&mut part, plan, Piece::Frames(frames)).await;
        }
        let _ = recording.wait(Duration::from_secs(2)).await;
        if let Some(open) = part.take() {
            self.close(open);
        }
        ended
    }

    /// The nearest deadline media pushes back: the idle timeout, the stall timeout once this
    /// connection has delivered, and a checkpoint of what a slow stream left pending.
    fn next_deadline(
        &self,
        last_media: Instant,
        delivered: bool,
        part: &Option<OpenPart>,
    ) -> Instant {
        let mut at = last_media + self.config.idle_timeout;
        if delivered {
            at = at.min(last_media + self.quiet);
        }
        if let Some(due) = part.as_ref().map(|p| p.writer.checkpoint_due(last_media)) {
            at = at.min(due);
        }
        at
    }

    /// Publishes the spool's size; true when it is full and the recording must fail.
    fn check_spool(&self) -> bool {
        let spooled = self.spool.bytes();
        self.status.spool_bytes.store(spooled, Ordering::Relaxed);
        let full = self.spool.full();
        if full {
            tracing::error!(spooled, limit = self.config.spool.max_bytes, "spool full");
        }
        full
    }

    async fn consume(&mut self, cutter: &mut Cutter, part: &mut Option<OpenPart>, plan: &Plan) {
        for piece in cutter.cut() {
            self.append(part, plan, piece).await;
        }
    }

    async fn append(&mut self, part: &mut Option<OpenPart>, plan: &Plan, piece: Piece) {
        match piece {
            Piece::Init(init, tracks) => {
                if let Some(open) = part.take() {
                    self.close(open);
                }
                *part = None;
                self.pending_init = Some((init, tracks));
                // A new ffmpeg run starts a new GOP.
                self.gop_tail = 0;
            }
            Piece::Fragment(fragment) => {
                // A part is cut only before a keyframe, so the size rule must leave room for
                // the fragments that follow it until the next one (the largest such rest seen).
                let incoming = fragment.bytes.len() as u64;
                let reserve = if fragment.starts_with_keyframe {
                    self.largest_gop_tail = self.largest_gop_tail.max(self.gop_tail);
                    self.gop_tail = 0;
                    self.largest_gop_tail
                } else {
                    self.gop_tail += incoming;
                    0
                };
                let restarted = self
                    .timeline_restarted
                    .is_some_and(|at| at.elapsed() >= AFTER_RESTART);
                let rotate = part
                    .as_ref()
                    .is_some_and(|p| restarted || self.should_rotate(p, incoming + reserve))
                    && fragment.starts_with_keyframe;
                if restarted && fragment.starts_with_keyframe {
                    self.timeline_restarted = None;
                }
                if rotate && let Some(open) = part.take() {
                    self.close(open);
                }
                if part.is_none() {
                    let Some((init, tracks)) = self.pending_init.clone() else {
                        return;
                    };
                    let mut open = self.open(plan).await;
                    open.write(init);
                    open.tracks = Some(tracks);
                    *part = Some(open);
                }
                let open = part.as_mut().expect("opened above");
                if open.base.is_none() {
                    open.base = Some(
                        fragment
                            .tracks
                            .iter()
                            .map(|t| (t.track_id, t.base_decode_time))
                            .collect(),
                    );
                }
                let mut rebased = fragment;
                rebased.rebase(open.base.as_ref().expect("set above"));
                open.timeline.add(&rebased);
                open.writer.seconds = open
                    .tracks
                    .as_ref()
                    .map(|t| open.timeline.seconds(t))
                    .unwrap_or(0.0);
                let added = rebased.bytes.len();
                open.write(rebased.bytes.freeze());
                self.record_progress(added, &open.writer);
            }
            Piece::Frames(frames) => {
                if part
                    .as_ref()
                    .is_some_and(|p| self.should_rotate(p, frames.bytes.len() as u64))
                    && let Some(open) = part.take()
                {
                    self.close(open);
                }
                if part.is_none() {
                    *part = Some(self.open(plan).await);
                }
                let open = part.as_mut().expect("opened above");
                open.writer.seconds += frames.seconds;
                let added = frames.bytes.len();
                open.write(frames.bytes);
                self.record_progress(added, &open.writer);
            }
        }
    }

    /// After `added` bytes went into the open part's writer.
    fn record_progress(&mut self, added: usize, writer: &PartWriter) {
        self.status.bytes.fetch_add(added as u64, Ordering::Relaxed);
        let media = self.closed_seconds + writer.seconds;
        self.status
            .media_millis
            .store((media * 1000.0) as u64, Ordering::Relaxed);
        // A fragment's timing can revise the part's length down slightly: count only growth.
        if media > self.counted_seconds {
            metrics()
                .recorded_seconds
                .inc_by(media - self.counted_seconds);
            self.counted_seconds = media;
        }
    }

    fn should_rotate(&self, open: &OpenPart, incoming: u64) -> bool {
        let w = &open.writer;
        let by_duration = self
            .config
            .segment_duration
            .is_some_and(|d| w.seconds >= d.as_secs_f64());
        let by_size = self
            .config
            .segment_bytes
            .is_some_and(|max| w.bytes + incoming > max);
        let by_part_limit = w.bytes + incoming > MAX_CHUNKS * self.config.chunk_size() as u64;
        by_duration || by_size || by_part_limit
    }

    async fn open(&mut self, plan: &Plan) -> OpenPart {
        let part = self.numbers.take().await;
        let key = self.numbers.key(part);
        self.status.part.store(part as u64, Ordering::Relaxed);
        let meta = PartMeta {
            part,
            url: self.config.storage.url(&key),
            key,
            user_id: self.config.source.user_id(),
            mode: self.config.mode,
            started_at: crate::shared::format::now_rfc3339(),
            video_codec: plan.output_video.clone(),
            audio_codec: plan.output_audio.clone(),
            note: plan.missing.as_ref().map(|(_, note)| note.clone()),
        };
        tracing::info!(part, key = %meta.key, "part started");
        let scratch = self.faststart.as_ref().map(|f| f.scratch(&meta.key));
        self.status.part_opened(meta.clone());
        let settings = UploadSettings {
            chunk: self.config.chunk_size(),
            checkpoint: self.config.checkpoint,
            cos_parts: self.cos_parts.clone(),
            in_place: self.in_place.clone(),
        };
        OpenPart {
            writer: PartWriter::open(
                self.op.clone(),
                &self.config.storage.prefix,
                meta,
                settings,
                RunShared {
                    spool: self.spool.clone(),
                    stopping: self.stopping.clone(),
                    status: self.status.clone(),
                    checkpoints: self.checkpoints.clone(),
                },
            ),
            scratch,
            base: None,
            timeline: fmp4::Timeline::default(),
            tracks: None,
        }
    }

    /// Finishes a part in the background: recording goes on meanwhile.
    fn close(&mut self, open: OpenPart) {
        let part = open.writer.meta().part;
        tracing::info!(
            part,
            seconds = open.writer.seconds,
            bytes = open.writer.bytes,
            "part closing"
        );
        self.closed_seconds += open.writer.seconds;
        self.status
            .part_closed(open.writer.meta(), open.writer.bytes, open.writer.seconds);
        self.finish_later(open.writer.finish(), open.scratch);
    }

    /// Finishes a part in the background: `stored`, then (--faststart) its classic copy.
    fn finish_later(
        &mut self,
        stored: impl Future<Output = PartRecord> + Send + 'static,
        scratch: Option<Scratch>,
    ) {
        let status = self.status.clone();
        let faststart = self.faststart.clone();
        self.finishing.push(tokio::spawn(async move {
            finish_copy(&status, faststart, stored.await, scratch).await
        }));
    }

    fn rebuilder(&self) -> Rebuilder {
        Rebuilder {
            op: self.op.clone(),
            chunk: self.config.chunk_size(),
            in_place: self.in_place.clone(),
            faststart: self.faststart.clone(),
            status: self.status.clone(),
        }
    }

    /// How long to watch journals whose owners look alive before judging them: `STALE`, less
    /// what the store's own clock says each has already been quiet (an object store only).
    async fn stale_wait(&self, prefix: &str, watched: &[(String, Owner)]) -> Duration {
        let stamped = !matches!(self.config.storage.kind, StorageKind::Dir(_));
        let store_now = match (&self.lease, stamped) {
            (Some(lease), true) => lease.written_at().await,
            _ => None,
        };
        let mut wait = Duration::ZERO;
        for (_, owner) in watched {
            let quiet = match store_now {
                Some(now) => claim::quiet_for(&self.op, prefix, owner, now).await,
                None => None,
            };
            wait = wait.max(claim::STALE.saturating_sub(quiet.unwrap_or_default()));
        }
        wait
    }

    /// Rebuilds the parts of earlier runs that did not finish: first their checkpoints left in
    /// the spool directory go to the journal, then every journal of this recording (this
    /// stream and session) whose run is dead is assembled. A journal whose run still renews
    /// its lease may be a neighbour's (the same stream and session recorded twice): it is
    /// watched in the background and rebuilt only if the lease stops. With --faststart a
    /// rebuilt MP4 part becomes a classic MP4 in the background.
    async fn recover(&mut self) -> Vec<PartRecord> {
        if let Some(dir) = &self.config.spool.dir {
            match upload_spooled(&self.op, dir).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    files = n,
                    "uploaded checkpoints an earlier run left in the spool directory"
                ),
                Err(e) => {
                    tracing::warn!("cannot upload the spool directory's checkpoints yet: {e}")
                }
            }
        }
        let prefix = self.config.storage.prefix.clone();
        let dirs = match journal::leftovers(&self.op, &prefix).await {
            Ok(dirs) => dirs,
            Err(e) => {
                tracing::warn!("cannot look for unfinished parts: {e}");
                return Vec::new();
            }
        };
        let mut records = Vec::new();
        let mut watched = Vec::new();
        let rebuilder = self.rebuilder();
        // Only this recording's own parts: another recording under the same prefix may be
        // writing its journal right now.
        let ours: Vec<String> = dirs
            .into_iter()
            .filter(|d| self.numbers.owns_journal(d))
            .collect();
        for dir in ours {
            match claim::observe(&self.op, &prefix, &dir).await {
                Ok(Owner::Gone) => {}
                Ok(owner) => {
                    watched.push((dir, owner));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(journal = %dir, "cannot tell whether a journal's run is alive: {e}");
                    continue;
                }
            }
            match rebuilder.part(&dir).await {
                Some((record, Some(scratch))) => {
                    self.finish_later(std::future::ready(record), Some(scratch))
                }
                Some((record, None)) => records.push(record),
                None => {}
            }
        }
        if !watched.is_empty() {
            let wait = self.stale_wait(&prefix, &watched).await;
            tracing::info!(
                journals = watched.len(),
                ?wait,
                "journals of this stream and session have a live-looking lease: judged once they show no change for the stale time"
            );
            self.watched = Some(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let mut records = Vec::new();
                for (dir, before) in watched {
                    match claim::abandoned(&rebuilder.op, &prefix, &dir, &before).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(journal = %dir, "a journal of this stream and session belongs to a running worker; left to it");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(journal = %dir, "cannot tell whether a journal's run is alive: {e}");
                            continue;
                        }
                    }
                    if let Some((record, scratch)) = rebuilder.part(&dir).await {
                        let record = match scratch {
                            Some(scratch) => {
                                let faststart = rebuilder.faststart.clone();
                                finish_copy(&rebuilder.status, faststart, record, Some(scratch))
                                    .await
                            }
                            None => record,
                        };
                        records.push(record);
                    }
                }
                records
            }));
        }
        records
    }
}

/// A part's end after its object is stored: (--faststart) its classic copy, then counted.
async fn finish_copy(
    status: &Status,
    faststart: Option<Arc<Faststart>>,
    mut record: PartRecord,
    scratch: Option<Scratch>,
) -> PartRecord {
    if let (Some(faststart), Some(scratch)) = (faststart, scratch) {
        record = faststart.finish(record, scratch).await;
    }
    metrics().part_finished(record.status == FileState::Succeeded);
    status.part_finished(record.clone());
    record
}

/// Rebuilds a dead run's parts from their journals.
struct Rebuilder {
    op: Operator,
    chunk: usize,
    in_place: Option<Arc<InPlace>>,
    faststart: Option<Arc<Faststart>>,
    status: Arc<Status>,
}

impl Rebuilder {
    /// The rebuilt part of journal `dir`, with its copy when it is to become a classic MP4;
    /// None when there was no part (a number claimed ahead) or it could not be rebuilt.
    async fn part(&self, dir: &str) -> Option<(PartRecord, Option<Scratch>)> {
        match journal::discard_if_unwritten(&self.op, dir).await {
            Ok(false) => {}
            Ok(true) => return None,
            Err(e) => {
                tracing::warn!(journal = %dir, "cannot rebuild an unfinished part: {e}");
                return None;
            }
        }
        let mut scratch = self
            .faststart
            .as_ref()
            .map(|f| f.scratch(dir.trim_end_matches('/')));
        match journal::salvage(
            &self.op,
            dir,
            self.chunk,
            self.in_place.as_deref(),
            scratch.as_mut(),
        )
        .await
        {
            Ok(s) => {
                tracing::info!(key = %s.meta.key, seconds = s.seconds, "recovered a part left by an earlier run");
                let record = PartRecord::from_meta(
                    &s.meta,
                    FileState::Succeeded,
                    "recovered from checkpoints after the recording was interrupted".into(),
                    s.bytes,
                    s.seconds,
                    true,
                );
                metrics().part_finished(true);
                self.status.part_recovered(record.clone());
                Some((record, scratch.filter(|_| s.meta.mode != Mode::AudioMp3)))
            }
            Err(e) => {
                tracing::warn!(journal = %dir, "cannot rebuild an unfinished part: {e}");
                None
            }
        }
    }
}

struct OpenPart {
    writer: PartWriter,
    /// --faststart: the part's local copy.
    scratch: Option<Scratch>,
    /// Decode time of the part's first fragment per track: subtracted so the part starts at 0.
    base: Option<std::collections::HashMap<u32, u64>>,
    timeline: fmp4::Timeline,
    tracks: Option<fmp4::Tracks>,
}

impl OpenPart {
    /// Appends whole units to the part (and to its copy).
    fn write(&mut self, data: bytes::Bytes) {
        if let Some(scratch) = self.scratch.as_mut() {
            scratch.append(&data);
        }
        self.writer.write(data);
    }
}

/// Refused credentials, a missing bucket and a configuration the store calls invalid are
/// permanent (the same configuration fails the same way); an unreachable store may come back.
async fn check_storage(op: &Operator, storage: &StorageConfig) -> Result<(), Failure> {
    // Listing the prefix needs the same credentials and bucket as writing into it.
    let path = if storage.prefix.is_empty() {
        "/".to_string()
    } else {
        format!("{}/", storage.prefix)
    };
    match op.list_with(&path).limit(1).await {
        Ok(_) => Ok(()),
        Err(e)
            if e.kind() == opendal::ErrorKind::NotFound
                && matches!(storage.kind, StorageKind::Dir(_)) =>
        {
            Ok(())
        }
        Err(e) => Err(match e.kind() {
            opendal::ErrorKind::PermissionDenied => Failure::permanent(format!(
                "the storage {} refused the credentials: check the secret id/key (or access key) and that they may write to the bucket ({e})",
                storage.describe()
            )),
            // COS answers a missing bucket with 404; opendal's S3 service turns S3's
            // NoSuchBucket into ConfigInvalid.
            opendal::ErrorKind::NotFound => Failure::permanent(format!(
                "the bucket of {} does not exist: create it or fix the bucket name ({e})",
                storage.describe()
            )),
            opendal::ErrorKind::ConfigInvalid if e.to_string().contains("NoSuchBucket") => {
                Failure::permanent(format!(
                    "the bucket of {} does not exist: create it or fix the bucket name ({e})",
                    storage.describe()
                ))
            }
            opendal::ErrorKind::ConfigInvalid => Failure::permanent(format!(
                "the storage {} is misconfigured: {e}",
                storage.describe()
            )),
            _ => Failure::retryable(format!(
                "the storage {} cannot be reached: {e}",
                storage.describe()
            )),
        }),
    }
}

/// Waits for a stop request: the signal channel or the stop file (polled every 250 ms, and
/// only when there is one: a poll wakes the process).
async fn wait_stop(
    stop: &mut watch::Receiver<Option<StopReason>>,
    stop_file: Option<&std::path::Path>,
) -> StopReason {
    loop {
        if let Some(reason) = *stop.borrow() {
            return reason;
        }
        if stop_file.is_some_and(|f| f.exists()) {
            return StopReason::StopRequested;
        }
        let poll = async {
            match stop_file {
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { std::future::pending::<()>().await },
            _ = poll => {}
        }
    }
}
