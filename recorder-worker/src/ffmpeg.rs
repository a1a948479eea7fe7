//! ffmpeg and ffprobe as child processes: ffprobe tells which tracks a source has; ffmpeg, run
//! through `ffmpeg-sidecar`, writes the recording to a pipe that the worker streams onwards,
//! while its log is parsed into progress and errors.

use crate::plan::{Plan, SourceTracks};
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
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

/// Asks ffprobe which tracks `url` has. Waits as long as a live source takes to start; the
/// caller bounds it with its idle timeout.
pub async fn probe(
    tools: &Tools,
    url: &str,
    input_options: &[String],
) -> Result<SourceTracks, String> {
    let mut command = child(&tools.ffprobe);
    command
        .args(["-v", "error", "-print_format", "json", "-show_streams"])
        .args(input_options)
        .arg(url);
    let json = run_json(command, &tools.ffprobe)
        .await
        .map_err(|e| format!("cannot read the source {url}: {e}"))?;
    let mut tracks = SourceTracks::default();
    for stream in json["streams"].as_array().into_iter().flatten() {
        let codec = stream["codec_name"].as_str().map(str::to_owned);
        match stream["codec_type"].as_str() {
            // Cover art and thumbnails are video streams too; only real video counts.
            Some("video")
                if tracks.video.is_none()
                    && stream["disposition"]["attached_pic"].as_i64() != Some(1) =>
            {
                tracks.video = codec
            }
            Some("audio") if tracks.audio.is_none() => tracks.audio = codec,
            _ => {}
        }
    }
    Ok(tracks)
}

/// The duration of a media file, as ffprobe reads its container.
pub async fn file_seconds(tools: &Tools, path: &Path) -> Result<f64, String> {
    let mut command = child(&tools.ffprobe);
    command
        .args(["-v", "error", "-print_format", "json", "-show_format"])
        .arg(path);
    let json = run_json(command, &tools.ffprobe)
        .await
        .map_err(|e| format!("ffprobe cannot read {}: {e}", path.display()))?;
    json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("ffprobe reports no duration for {}", path.display()))
}

/// Remuxes a fragmented MP4 file into a classic one with its `moov` first: every track copied,
/// nothing re-encoded. The output must be a file: faststart moves the `moov` by rewriting it.
pub async fn remux_faststart(tools: &Tools, input: &Path, output: &Path) -> Result<(), String> {
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
        .map_err(|e| format!("ffmpeg could not remux it: {e}"))
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
) -> Result<serde_json::Value, String> {
    let output = command
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap_or_default())
}

/// A running ffmpeg: its output as chunks, its log as events, and a way to stop it cleanly.
pub struct Recording {
    child: ffmpeg_sidecar::child::FfmpegChild,
    pub output: mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    pub log: mpsc::UnboundedReceiver<LogLine>,
}

#[derive(Debug, Clone)]
pub enum LogLine {
    Progress { seconds: f64, speed: f32 },
    Error(String),
}

/// Output is read in chunks of this size (one pipe buffer's worth or less).
const READ_CHUNK: usize = 64 * 1024;

impl Recording {
    pub fn start(
        tools: &Tools,
        url: &str,
        input_options: &[String],
        plan: &Plan,
    ) -> Result<Self, String> {
        let mut command = FfmpegCommand::new_with_path(&tools.ffmpeg);
        command
            .hide_banner()
            // Errors and the stats line, which ffmpeg-sidecar turns into progress events.
            .args(["-loglevel", "level+error", "-stats", "-stats_period", "1"])
            .args(input_options)
            .input(url)
            .args(plan.output_args());
        command.as_inner_mut().stdout(std::process::Stdio::piped());
        die_with_parent(command.as_inner_mut());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", tools.ffmpeg.display()))?;
        let stdout = child.take_stdout().ok_or("ffmpeg has no stdout")?;
        let stdout = tokio::process::ChildStdout::from_std(stdout).map_err(|e| e.to_string())?;

        let (out_tx, output) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut stdout = stdout;
            loop {
                let mut buffer = bytes::BytesMut::with_capacity(READ_CHUNK);
                match stdout.read_buf(&mut buffer).await {
                    Ok(0) => return,
                    Ok(_) => {
                        if out_tx.send(Ok(buffer.freeze())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = out_tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });

        let (log_tx, log) = mpsc::unbounded_channel();
        let events = child.iter().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            for event in events {
                let line = match event {
                    FfmpegEvent::Progress(p) => {
                        let seconds = parse_time(&p.time).unwrap_or(0.0);
                        LogLine::Progress {
                            seconds,
                            speed: p.speed,
                        }
                    }
                    FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, message) => {
                        LogLine::Error(message)
                    }
                    FfmpegEvent::Error(message) => LogLine::Error(message),
                    _ => continue,
                };
                if log_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self { child, output, log })
    }

    /// Asks ffmpeg to finish (it writes its last fragment and exits), as `q` on its console.
    pub fn request_stop(&mut self) {
        let _ = self.child.quit();
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

/// "00:01:02.50" → 62.5
fn parse_time(text: &str) -> Option<f64> {
    let mut seconds = 0.0;
    for part in text.trim().split(':') {
        seconds = seconds * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(seconds)
}

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
    #[test]
    fn parses_ffmpeg_times() {
        assert_eq!(super::parse_time("00:01:02.50"), Some(62.5));
        assert_eq!(super::parse_time("12.25"), Some(12.25));
        assert_eq!(super::parse_time("N/A"), None);
    }
}
