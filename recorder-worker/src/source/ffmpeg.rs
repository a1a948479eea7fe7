//! ffmpeg and ffprobe as child processes: the recording, the `--faststart` remux, measuring.
//!
//! ffmpeg as a child process, run through `ffmpeg-sidecar`: it writes the recording to a pipe
//! that the worker streams onwards, while its log is parsed into the input's tracks and
//! errors. ffprobe only measures finished files.

use crate::source::plan::{Plan, SourceTracks};
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel, Stream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
        }
    }
}

/// Why ffmpeg or ffprobe did not do what was asked; the message says what they said.
#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What ffmpeg or ffprobe said as it failed: its stderr, or the last error it logged.
    #[error("{0}")]
    Reported(String),
    #[error("ffprobe cannot read {}: {source}", path.display())]
    Probe {
        path: PathBuf,
        #[source]
        source: Box<FfmpegError>,
    },
    #[error("ffprobe reports no duration for {}", .0.display())]
    NoDuration(PathBuf),
    #[error("ffmpeg could not remux it: {0}")]
    Remux(#[source] Box<FfmpegError>),
    #[error("ffmpeg has no stdout")]
    NoStdout,
    /// ffmpeg's output pipe or its log could not be taken over.
    #[error(transparent)]
    Attach(Box<dyn std::error::Error + Send + Sync>),
    /// ffmpeg ended before it reported its input, and logged no error.
    #[error("ffmpeg ended without reading it")]
    EndedSilently,
    /// Reading ffmpeg's output pipe failed.
    #[error(transparent)]
    Read(std::io::Error),
}

/// The duration of a media file, as ffprobe reads its container.
pub async fn file_seconds(tools: &Tools, path: &Path) -> Result<f64, FfmpegError> {
    let mut command = child(&tools.ffprobe);
    command
        .args(["-v", "error", "-print_format", "json", "-show_format"])
        .arg(path);
    let json = run_json(command, &tools.ffprobe)
        .await
        .map_err(|e| FfmpegError::Probe {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
    json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| FfmpegError::NoDuration(path.to_path_buf()))
}

/// Remuxes a fragmented MP4 file into a classic one with its `moov` first: every track copied,
/// nothing re-encoded. The output must be a file: faststart moves the `moov` by rewriting it.
pub async fn remux_faststart(
    tools: &Tools,
    input: &Path,
    output: &Path,
) -> Result<(), FfmpegError> {
    let mut command = child(&tools.ffmpeg);
    command
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args([
            "-map",
            "0",
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ])
        .arg(output);
    run_json(command, &tools.ffmpeg)
        .await
        .map(|_| ())
        .map_err(|e| FfmpegError::Remux(Box::new(e)))
}

/// A child process that reads nothing, is killed when its future is dropped, and dies with the
/// worker.
fn child(program: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    die_with_parent(command.as_std_mut());
    command
}

/// Runs a child to its end: its stdout as JSON (null when it printed none), or what it printed
/// on stderr.
async fn run_json(
    mut command: tokio::process::Command,
    program: &Path,
) -> Result<serde_json::Value, FfmpegError> {
    let output = command
        .output()
        .await
        .map_err(|source| FfmpegError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(FfmpegError::Reported(stderr.trim().to_string()));
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap_or_default())
}

/// A running ffmpeg: its output pipe, its log as events, and a way to stop it cleanly.
pub struct Recording {
    child: ffmpeg_sidecar::child::FfmpegChild,
    /// Read by the recorder straight into its splitter's buffer: no task, channel or copy in
    /// between.
    pub stdout: tokio::process::ChildStdout,
    pub log: mpsc::UnboundedReceiver<LogLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogLine {
    /// ffmpeg's report of its input's tracks, once, before any output.
    Tracks(SourceTracks),
    Error(String),
    /// The input's timeline went back (FLV: "DTS 23 < 7983 out of order"): a publisher that
    /// left and returned while the server kept this connection.
    TimelineRestart,
    /// A track the input did not have appeared ("New video stream 0:1 at pos:…"): "video" or
    /// "audio".
    NewTrack(&'static str),
}

/// What a warning of ffmpeg's says about the input, if anything the recorder acts on. Only
/// warnings are read (a handful in a recording), never the per-packet log.
fn warning_signal(message: &str) -> Option<LogLine> {
    if message.starts_with("New video stream") {
        return Some(LogLine::NewTrack("video"));
    }
    if message.starts_with("New audio stream") {
        return Some(LogLine::NewTrack("audio"));
    }
    // libavformat/flvdec.c: "DTS %d < %d out of order" when a stream's timestamps restart.
    if message.starts_with("DTS ") && message.contains(" out of order") {
        return Some(LogLine::TimelineRestart);
    }
    None
}

/// Collects ffmpeg's report of input #0 (`Input #0 …` and its `Stream #0:n` lines) from its
/// log, and yields the tracks once the report is over: at the first event that is not part of
/// it, or when the log ends.
#[derive(Debug, Default)]
struct InputReport {
    streams: Option<Vec<Stream>>,
    duration: Option<f64>,
    done: bool,
}

impl InputReport {
    fn observe(&mut self, event: &FfmpegEvent) -> Option<SourceTracks> {
        match event {
            FfmpegEvent::ParsedInput(input) if input.index == 0 && !self.done => {
                self.streams = Some(Vec::new());
                None
            }
            FfmpegEvent::ParsedInputStream(stream) if stream.parent_index == 0 => {
                if let Some(streams) = self.streams.as_mut() {
                    streams.push(stream.clone());
                }
                None
            }
            FfmpegEvent::ParsedDuration(d) if d.input_index == 0 && !self.done => {
                // "Duration: N/A" (a live source) is not reported; FLV over RTMP says 0.
                self.duration = Some(d.duration).filter(|d| *d > 0.0);
                None
            }
            FfmpegEvent::ParsedInput(_)
            | FfmpegEvent::ParsedInputStream(_)
            | FfmpegEvent::ParsedDuration(_)
            | FfmpegEvent::Log(LogLevel::Info | LogLevel::Warning | LogLevel::Unknown, _) => None,
            _ => self.finish(),
        }
    }

    fn finish(&mut self) -> Option<SourceTracks> {
        let streams = self.streams.take()?;
        self.done = true;
        Some(SourceTracks {
            duration: self.duration,
            ..tracks_of(&streams)
        })
    }
}

/// The first real video and the first audio track: cover art and thumbnails are video streams
/// too (`(attached pic)`), but not video.
fn tracks_of(streams: &[Stream]) -> SourceTracks {
    let mut tracks = SourceTracks::default();
    for stream in streams {
        let codec = Some(stream.format.clone());
        if stream.is_video() && tracks.video.is_none() {
            if !stream.raw_log_message.contains("(attached pic)") {
                tracks.video = codec;
            }
        } else if stream.is_audio() && tracks.audio.is_none() {
            tracks.audio = codec;
        }
    }
    tracks
}

impl Recording {
    pub fn start(
        tools: &Tools,
        url: &str,
        input_options: &[String],
        plan: &Plan,
    ) -> Result<Self, FfmpegError> {
        let mut command = FfmpegCommand::new_with_path(&tools.ffmpeg);
        command
            .hide_banner()
            // Info: the input's streams, which make the plan (there is no separate probe),
            // then errors. No stats line: progress comes from the media itself, and a line a
            // second woke both processes for nothing.
            .args(["-loglevel", "level+info", "-nostats"])
            .args(input_options)
            .input(url)
            .args(plan.output_args());
        command.as_inner_mut().stdout(std::process::Stdio::piped());
        die_with_parent(command.as_inner_mut());
        let mut child = command.spawn().map_err(|source| FfmpegError::Spawn {
            program: tools.ffmpeg.clone(),
            source,
        })?;
        let stdout = child.take_stdout().ok_or(FfmpegError::NoStdout)?;
        widen_pipe(&stdout);
        let stdout = tokio::process::ChildStdout::from_std(stdout)
            .map_err(|e| FfmpegError::Attach(e.into()))?;

        let (log_tx, log) = mpsc::unbounded_channel();
        // ffmpeg-sidecar's error is an anyhow::Error: kept as the boxed error it converts to.
        let events = child.iter().map_err(|e| FfmpegError::Attach(e.into()))?;
        std::thread::spawn(move || {
            let mut report = InputReport::default();
            for event in events {
                if let Some(tracks) = report.observe(&event)
                    && log_tx.send(LogLine::Tracks(tracks)).is_err()
                {
                    return;
                }
                let line = match event {
                    FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, message) => {
                        LogLine::Error(message)
                    }
                    FfmpegEvent::Log(LogLevel::Warning, message) => {
                        match warning_signal(strip_context(&message)) {
                            Some(line) => line,
                            None => continue,
                        }
                    }
                    FfmpegEvent::Error(message) => LogLine::Error(message),
                    _ => continue,
                };
                if log_tx.send(line).is_err() {
                    return;
                }
            }
            if let Some(tracks) = report.finish() {
                let _ = log_tx.send(LogLine::Tracks(tracks));
            }
        });
        Ok(Self { child, stdout, log })
    }

    /// Waits for ffmpeg's report of its input's tracks (a live source that has not started yet
    /// makes it wait); if ffmpeg ends without one, what it said last.
    pub async fn input_tracks(&mut self) -> Result<SourceTracks, FfmpegError> {
        let mut last_error = None;
        while let Some(line) = self.log.recv().await {
            match line {
                LogLine::Tracks(tracks) => return Ok(tracks),
                LogLine::Error(message) => last_error = Some(message),
                LogLine::TimelineRestart | LogLine::NewTrack(_) => {}
            }
        }
        Err(last_error.map_or(FfmpegError::EndedSilently, FfmpegError::Reported))
    }

    /// Asks ffmpeg to finish: it writes out what it holds (its last fragment) and exits. A
    /// signal rather than `q` on its console, which ffmpeg reads only between packets: one
    /// waiting for a source that went quiet would not see it.
    pub fn request_stop(&mut self) {
        self.signal(libc::SIGINT);
    }

    /// A second request: ffmpeg then also abandons a read that waits for the source. What
    /// it still holds is lost with it, so this comes only after `request_stop` went unheard.
    pub fn interrupt(&mut self) {
        self.signal(libc::SIGINT);
    }

    fn signal(&mut self, signal: libc::c_int) {
        if let Ok(None) = self.child.as_inner_mut().try_wait() {
            let pid = self.child.as_inner().id() as libc::pid_t;
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet,
            // so the pid is still ffmpeg's.
            unsafe { libc::kill(pid, signal) };
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, killing it after `timeout`; returns its exit code.
    pub async fn wait(mut self, timeout: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.as_inner_mut().try_wait() {
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                self.kill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Ok(None) = self.child.as_inner_mut().try_wait() {
            self.kill();
        }
    }
}

/// A log line without what ffmpeg puts before the message: the component
/// (`[live_flv @ 0x55…] `) and the level (`[warning] `).
fn strip_context(line: &str) -> &str {
    let mut m = line.trim();
    while m.starts_with('[')
        && let Some(end) = m.find("] ")
    {
        m = m[end + 2..].trim_start();
    }
    m
}

/// At most this much of ffmpeg's output is taken per read: a fragment of a 2 Mbit/s stream
/// (about 270 kB) in one or two reads, each a syscall and a turn of the runtime, and a burst (a
/// live source opens with the server's cache of several seconds) in reads the uploads keep up
/// with, so it is not mistaken for the store falling behind.
const MAX_READ: usize = 256 * 1024;

/// Reads what ffmpeg wrote straight into `buffer`, up to `MAX_READ`; 0 at its end. Cancel-safe:
/// nothing is read when the future is dropped before it completes.
pub async fn read_output(
    stdout: &mut tokio::process::ChildStdout,
    buffer: &mut bytes::BytesMut,
) -> std::io::Result<usize> {
    use bytes::BufMut;
    use tokio::io::AsyncReadExt;
    stdout.read_buf(&mut buffer.limit(MAX_READ)).await
}

/// A pipe that holds a whole fragment: ffmpeg writes each fragment at once (about a second of
/// media) and with the default 64 KiB it blocked several times per fragment, each time waking
/// both processes. A refusal (a lower `pipe-max-size`) leaves the default.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ only resizes the pipe's kernel buffer.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
}

const PIPE_BYTES: libc::c_int = 1 << 20;

/// ffmpeg dies with the worker, even when the worker is SIGKILLed.
fn die_with_parent(command: &mut std::process::Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds an ffmpeg log (as ffmpeg 5.1 prints it at `level+info`) through ffmpeg-sidecar's
    /// parser and the input report: the tracks it yields, and after how many events.
    fn report_of(log: &str) -> Option<(SourceTracks, usize)> {
        let mut parser = ffmpeg_sidecar::log_parser::FfmpegLogParser::new(log.as_bytes());
        let mut report = InputReport::default();
        for n in 1.. {
            let event = parser.parse_next_event().unwrap();
            let end = matches!(event, FfmpegEvent::LogEOF);
            if let Some(tracks) = report.observe(&event) {
                assert!(report.observe(&event).is_none(), "reported twice");
                return Some((tracks, n));
            }
            if end {
                return None;
            }
        }
        unreachable!()
    }

    const FLV_INPUT: &str = "[info] Input #0, flv, from 'rtmp://127.0.0.1/live/a':
[info]   Metadata:
[info]     encoder         : Lavf59.27.100
[info]   Duration: 00:00:00.00, start: 0.044000, bitrate: N/A
[info]   Stream #0:0: Video: h264 (High), yuv420p(progressive), 1280x720, 30 fps, 30 tbr, 1k tbn
[info]   Stream #0:1: Audio: aac (LC), 44100 Hz, stereo, fltp, 128 kb/s
";

    #[test]
    fn the_input_report_ends_at_the_output_section() {
        let log = format!(
            "{FLV_INPUT}[info] Output #0, mp4, to 'pipe:1':
[info]   Stream #0:0: Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 1280x720, q=2-31, 30 fps, 16k tbn
[info] Stream mapping:
[info]   Stream #0:0 -> #0:0 (copy)
"
        );
        let (tracks, events) = report_of(&log).unwrap();
        assert_eq!(
            tracks,
            SourceTracks {
                video: Some("h264".into()),
                audio: Some("aac".into()),
                duration: None,
            }
        );
        // Reported at `Output #0`, before the output's own streams.
        assert_eq!(events, 7);
    }

    #[test]
    fn the_input_report_ends_at_an_error_or_the_end_of_the_log() {
        let log = format!(
            "{FLV_INPUT}[fatal] Stream map '0:a:1' matches no streams.\nTo ignore this, add a trailing '?' to the map.\n"
        );
        assert_eq!(report_of(&log).unwrap().1, 7);
        let (tracks, _) = report_of(FLV_INPUT).unwrap();
        assert_eq!(tracks.video.as_deref(), Some("h264"));
        // No input report at all: ffmpeg could not open the source.
        assert!(report_of("[error] rtmp://127.0.0.1/live/a: Connection refused\n").is_none());
    }

    #[test]
    fn an_input_with_a_length_says_so_and_a_live_one_does_not() {
        let ended = "[info] Input #0, hls, from 'http://h/live.m3u8':
[info]   Duration: 00:00:10.00, start: 1.400000, bitrate: 0 kb/s
[info]   Stream #0:0: Video: h264 (High), yuv420p(progressive), 320x240, 25 fps, 25 tbr, 90k tbn
[info] Output #0, mp4, to 'pipe:1':
";
        assert_eq!(report_of(ended).unwrap().0.duration, Some(10.0));
        let live = ended.replace("00:00:10.00", "N/A");
        assert_eq!(report_of(&live).unwrap().0.duration, None);
        // FLV over RTMP reports a length of 0: live.
        assert_eq!(report_of(FLV_INPUT).unwrap().0.duration, None);
    }

    #[test]
    fn warnings_that_matter_are_told_apart_from_the_rest() {
        let parse = |line: &str| {
            let mut parser = ffmpeg_sidecar::log_parser::FfmpegLogParser::new(line.as_bytes());
            match parser.parse_next_event().unwrap() {
                FfmpegEvent::Log(LogLevel::Warning, m) => warning_signal(strip_context(&m)),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            parse("[live_flv @ 0x55ce6bb29a40] [warning] DTS 23 < 4983 out of order\n"),
            Some(LogLine::TimelineRestart)
        );
        assert_eq!(
            parse("[warning] New video stream 0:1 at pos:80213 and DTS:6.04s\n"),
            Some(LogLine::NewTrack("video"))
        );
        assert_eq!(
            parse("[warning] New audio stream 0:1 at pos:1 and DTS:2s\n"),
            Some(LogLine::NewTrack("audio"))
        );
        assert_eq!(
            parse(
                "[mp4 @ 0x1] [warning] Non-monotonous DTS in output stream 0:1; previous: 3, current: 2; changing to 4.\n"
            ),
            None
        );
    }

    #[test]
    fn cover_art_is_not_video() {
        let log = "[info] Input #0, mp3, from 'a.mp3':
[info]   Stream #0:0: Audio: mp3, 44100 Hz, stereo, fltp, 128 kb/s
[info]   Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 300x300, 90k tbr, 90k tbn (attached pic)
[info] Press [q] to stop, [?] for help
";
        let (tracks, _) = report_of(log).unwrap();
        assert_eq!(
            tracks,
            SourceTracks {
                video: None,
                audio: Some("mp3".into()),
                duration: None,
            }
        );
    }
}
