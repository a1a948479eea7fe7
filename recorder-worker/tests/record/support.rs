//! What the worker's tests share: the worker process (`worker`, `start`, `finish`, `run`) and
//! what it leaves (`Run`: exit code, manifest, log), the storage it writes to (`Storage`: the
//! bed's S3 bucket, the COS stand-in, a directory), the live publisher, and the checks on what
//! was stored (`verify_parts`: every part plays and lasts what the manifest says; MP4 boxes,
//! start times, log event times).

use roomrec_testbed::media::{Publisher, StreamSpec, ffprobe};
use roomrec_testbed::{BedInfo, shared};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The bed every test of this binary shares.
pub fn bed() -> &'static BedInfo {
    shared()
}

/// What a finished worker left: its exit code, its manifest (stdout, JSON) and its log.
pub struct Run {
    pub code: i32,
    pub manifest: Value,
    pub stderr: String,
}

/// Starts the worker; `storage` is "s3" (the bed's bucket, under `prefix`) or a directory.
pub fn worker(
    source: &str,
    mode: &str,
    storage: &Storage,
    extra: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"));
    command
        .args([
            "record",
            "--source",
            source,
            "--mode",
            mode,
            "--log-format",
            "json",
        ])
        .args(extra)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("COS_SECRET_ID")
        .env_remove("COS_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    storage.apply(&mut command);
    command
}

/// Like `worker`, with the source given as flags (`--source URL`, or the `--trtc-*` flags).
pub fn worker_source(
    source: &[String],
    mode: &str,
    storage: &Storage,
    extra: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"));
    command
        .arg("record")
        .args(source)
        .args(["--mode", mode, "--log-format", "json"])
        .args(extra)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("COS_SECRET_ID")
        .env_remove("COS_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    storage.apply(&mut command);
    command
}

/// Where a worker stores its parts, and where a test finds them on disk.
#[derive(Clone)]
pub enum Storage {
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
        access: String,
        secret: String,
        bucket_dir: PathBuf,
    },
    /// Tencent COS through the test bed's COS stand-in (a test double that checks COS
    /// signatures and stores into the S3 server).
    Cos {
        port: u16,
        prefix: String,
        bucket_dir: PathBuf,
    },
    Dir(PathBuf),
}

pub const COS_BUCKET: &str = "recordings-1250000000";
pub const COS_SECRET_ID: &str = "AKIDWORKERTEST000000";
pub const COS_SECRET_KEY: &str = "worker-cos-secret";

/// A COS stand-in for `Storage::Cos`, accepting the key pair `Storage::Cos` gives the worker.
pub async fn cos_stand_in() -> roomrec_testbed::cos::CosStandIn {
    let b = bed();
    std::fs::create_dir_all(b.s3_bucket_dir.parent().unwrap().join(COS_BUCKET)).unwrap();
    roomrec_testbed::cos::CosStandIn::start(roomrec_testbed::cos::CosStandInConfig {
        secret_id: COS_SECRET_ID.into(),
        secret_key: COS_SECRET_KEY.into(),
        upstream_endpoint: b.s3_endpoint.clone(),
        upstream_access_key: b.s3_access_key.clone(),
        upstream_secret_key: b.s3_secret_key.clone(),
        upstream_region: b.s3_region.clone(),
        // opendal's COS signer does not sign Host (see tests/tests/cos.rs).
        require_signed_host: false,
    })
    .await
    .unwrap()
}

impl Storage {
    pub fn s3(prefix: &str) -> Self {
        let b = bed();
        Storage::S3 {
            endpoint: b.s3_endpoint.clone(),
            bucket: b.s3_bucket.clone(),
            prefix: prefix.into(),
            access: b.s3_access_key.clone(),
            secret: b.s3_secret_key.clone(),
            bucket_dir: b.s3_bucket_dir.clone(),
        }
    }

    pub fn dir(name: &str) -> Self {
        Storage::Dir(bed().scratch(name).unwrap())
    }

    /// Under `prefix` in the COS stand-in's bucket.
    pub fn cos(cos: &roomrec_testbed::cos::CosStandIn, prefix: &str) -> Self {
        Storage::Cos {
            port: cos.port,
            prefix: prefix.into(),
            bucket_dir: bed().s3_bucket_dir.parent().unwrap().join(COS_BUCKET),
        }
    }

    fn apply(&self, command: &mut tokio::process::Command) {
        match self {
            Storage::S3 {
                endpoint,
                bucket,
                prefix,
                access,
                secret,
                ..
            } => {
                command
                    .args([
                        "--storage",
                        &format!("s3://{bucket}/{prefix}"),
                        "--endpoint",
                        endpoint,
                    ])
                    .env("AWS_ACCESS_KEY_ID", access)
                    .env("AWS_SECRET_ACCESS_KEY", secret);
            }
            Storage::Cos { port, prefix, .. } => {
                command
                    .args([
                        "--storage",
                        &format!("cos://{COS_BUCKET}/{prefix}"),
                        "--region",
                        "ap-shanghai",
                    ])
                    .args(["--endpoint", &format!("http://localhost:{port}")])
                    .args([
                        "--resolve",
                        &format!("{COS_BUCKET}.localhost=127.0.0.1:{port}"),
                    ])
                    .env("COS_SECRET_ID", COS_SECRET_ID)
                    .env("COS_SECRET_KEY", COS_SECRET_KEY);
            }
            Storage::Dir(dir) => {
                command.args(["--storage", &format!("file://{}", dir.display())]);
            }
        }
    }

    /// The file behind a key (versitygw keeps objects as files).
    pub fn file(&self, key: &str) -> PathBuf {
        match self {
            Storage::S3 { bucket_dir, .. } | Storage::Cos { bucket_dir, .. } => {
                bucket_dir.join(key)
            }
            Storage::Dir(dir) => dir.join(key),
        }
    }
}

/// A running worker whose output is read all along (a full stderr pipe would stall it).
pub struct Started {
    pid: u32,
    pub output: tokio::task::JoinHandle<Run>,
}

pub fn start(command: &mut tokio::process::Command) -> Started {
    let child = command.spawn().unwrap();
    let pid = child.id().unwrap();
    let output = tokio::spawn(async move {
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let manifest = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        Run {
            code: out.status.code().unwrap_or(-1),
            manifest,
            stderr,
        }
    });
    Started { pid, output }
}

impl Started {
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.pid as i32, signal) };
    }
}

/// Waits until a started worker exits.
pub async fn finish(started: Started) -> Run {
    started.output.await.unwrap()
}

/// Runs a worker to its end.
pub async fn run(command: &mut tokio::process::Command) -> Run {
    finish(start(command)).await
}

/// Publishes `spec` live to the bed's RTMP server under `key`, until the Publisher is dropped.
pub async fn publish(key: &str, spec: StreamSpec) -> Publisher {
    bed().publish(key, &spec).await.unwrap()
}

/// Publishes `spec` to any URL (e.g. another application of the bed's nginx-rtmp), logging
/// ffmpeg to `scratch/publishers/{name}.log`.
pub async fn publish_to(url: &str, spec: StreamSpec, name: &str) -> Publisher {
    let log = bed()
        .scratch("publishers")
        .unwrap()
        .join(format!("{name}.log"));
    Publisher::start(url, &spec, &log).await.unwrap()
}

/// ffprobe of a file the worker stored.
pub fn probe(path: &Path) -> roomrec_testbed::media::Probe {
    ffprobe(path.to_str().unwrap(), Duration::from_secs(10)).unwrap()
}

/// The manifest's parts (panics with the worker's log when there is no manifest).
pub fn parts(run: &Run) -> Vec<Value> {
    run.manifest["parts"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no manifest: {}", run.stderr))
}

/// Every part exists, plays with the expected codecs, and lasts what the manifest says.
pub fn verify_parts(run: &Run, storage: &Storage, video: Option<&str>, audio: Option<&str>) -> f64 {
    let mut total = 0.0;
    for part in parts(run) {
        assert_eq!(part["status"], "succeeded", "{part:#}");
        let file = storage.file(part["key"].as_str().unwrap());
        let p = probe(&file);
        assert_eq!(
            p.codec("video"),
            video,
            "{}: {:#?}",
            file.display(),
            p.raw["streams"]
        );
        assert_eq!(
            p.codec("audio"),
            audio,
            "{}: {:#?}",
            file.display(),
            p.raw["streams"]
        );
        let duration = p.duration.unwrap();
        let claimed = part["durationSeconds"].as_f64().unwrap();
        if (duration - claimed).abs() >= 0.2 && std::env::var_os("ROOMREC_KEEP_BAD").is_some() {
            let _ = std::fs::copy(&file, "/tmp/roomrec-bad.mp4");
        }
        assert!(
            (duration - claimed).abs() < 0.2,
            "{}: ffprobe {duration} s, manifest {claimed} s",
            file.display()
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            part["bytes"].as_u64().unwrap()
        );
        total += duration;
    }
    total
}

/// The wall-clock time of a JSON log event of the worker, by its message (a prefix if it
/// ends with a space).
pub fn event_time(stderr: &str, message: &str) -> Option<jiff::Timestamp> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            let text = v["fields"]["message"].as_str()?;
            let matches = if message.ends_with(' ') {
                text.starts_with(message)
            } else {
                text == message
            };
            matches.then(|| v["timestamp"].as_str().unwrap().parse().unwrap())
        })
}

/// ffprobe's `format.start_time` of a file.
pub fn start_time(path: &Path) -> f64 {
    probe(path).raw["format"]["start_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `127.0.0.1:{a free port}` for `--metrics-address`.
pub fn metrics_address() -> String {
    format!("127.0.0.1:{}", roomrec_testbed::ports::free_port())
}

/// Every file under `dir`, at any depth (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// The types of a file's top-level MP4 boxes, in order.
pub fn mp4_boxes(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).unwrap();
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let word = |from: usize, len: usize| {
            data[from..from + len]
                .iter()
                .fold(0u64, |n, b| n << 8 | u64::from(*b))
        };
        let size = match word(at, 4) {
            1 => word(at + 8, 8),
            0 => (data.len() - at) as u64,
            n => n,
        };
        boxes.push(String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned());
        assert!(size >= 8, "{}: box {boxes:?} is malformed", path.display());
        at += size as usize;
    }
    boxes
}

/// A classic MP4: `moov` before `mdat`, no fragments.
pub fn assert_classic(path: &Path) {
    let boxes = mp4_boxes(path);
    let at = |kind: &str| boxes.iter().position(|b| b == kind);
    assert!(
        matches!((at("moov"), at("mdat")), (Some(moov), Some(mdat)) if moov < mdat)
            && at("moof").is_none(),
        "{} is not a classic MP4: {boxes:?}",
        path.display()
    );
}

/// Runs a publisher with ffmpeg arguments of the test's own (input, encoding and output).
pub async fn publish_args(url: &str, args: &[String], name: &str) -> Publisher {
    let log = bed()
        .scratch("publishers")
        .unwrap()
        .join(format!("{name}.log"));
    Publisher::start_args(url, args, &log).await.unwrap()
}

/// Waits until a publisher that was given a duration has sent all of it and exited.
pub async fn publisher_done(publisher: &mut Publisher, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while publisher.process().check_running().is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the publisher of {} still runs after {within:?}",
            publisher.url
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// ffmpeg arguments that publish `seconds` of a small synthetic camera (H.264, a keyframe every
/// `gop` seconds) and microphone (AAC, 44.1 kHz stereo) in real time to `url` as `format`.
pub fn camera_args(url: &str, format: &str, seconds: f64, gop: f64) -> Vec<String> {
    stream_args(url, format, seconds, gop, true, true)
}

/// Like `camera_args`, with the camera (`video`) or the microphone (`audio`) off.
pub fn stream_args(
    url: &str,
    format: &str,
    seconds: f64,
    gop: f64,
    video: bool,
    audio: bool,
) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "warning", "-re"]
        .map(String::from)
        .to_vec();
    args.extend(encode_args(seconds, gop, video, audio));
    args.extend(["-f".into(), format.into(), url.into()]);
    args
}

/// `seconds` of the synthetic camera and microphone encoded once into an FLV file (`name` in
/// the bed's scratch space), for publishers that must start at a precise moment: copying a
/// file starts in tens of milliseconds where a live x264 encoder on a loaded machine takes a
/// second, and costs next to no CPU while it runs.
pub fn camera_clip(name: &str, seconds: f64, gop: f64) -> PathBuf {
    let clip = bed().scratch("clips").unwrap().join(format!("{name}.flv"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(encode_args(seconds, gop, true, true))
        .args(["-f", "flv"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success(), "encoding {}", clip.display());
    clip
}

/// ffmpeg arguments that publish `clip` as it was recorded (in real time, copied) to `url` as
/// FLV: a publisher whose timestamps start from 0, as a returning one's do.
pub fn clip_args(clip: &Path, url: &str) -> Vec<String> {
    ["-hide_banner", "-loglevel", "warning", "-re", "-i"]
        .map(String::from)
        .into_iter()
        .chain([clip.display().to_string()])
        .chain(["-c", "copy", "-f", "flv", url].map(String::from))
        .collect()
}

/// The synthetic sources and their encoding: `seconds` of them, a keyframe every `gop`.
fn encode_args(seconds: f64, gop: f64, video: bool, audio: bool) -> Vec<String> {
    let fps = 25.0;
    let mut args = Vec::new();
    if video {
        args.extend(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"].map(String::from));
    }
    if audio {
        args.extend(
            ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"].map(String::from),
        );
    }
    if video {
        let g = (fps * gop).round().max(1.0).to_string();
        args.extend(
            [
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                "300k",
                "-g",
                &g,
                "-keyint_min",
                &g,
            ]
            .map(String::from),
        );
    }
    if audio {
        args.extend(["-c:a", "aac", "-b:a", "64k", "-ac", "2"].map(String::from));
    }
    args.extend(["-t".into(), format!("{seconds:.3}")]);
    args
}

/// The sum of the parts' durations (each checked against ffprobe by `verify_parts`).
pub fn recorded_seconds(run: &Run) -> f64 {
    parts(run)
        .iter()
        .map(|p| p["durationSeconds"].as_f64().unwrap())
        .sum()
}

/// A second worker of the same stream and session as a running one, for 3 s: it must find the
/// running one's journal, watch it for the stale time and leave it alone, recording one part of
/// its own.
pub async fn a_second_worker_leaves_the_running_one_alone(
    source: &str,
    storage: &Storage,
    session: &[&str],
) {
    let mut second = worker(source, "02", storage, session);
    second.args(["--max-duration", "3"]);
    let second = run(&mut second).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("belongs to a running worker; left to it"),
        "the second worker did not judge the first one's journal: {}",
        second.stderr
    );
    let parts = parts(&second);
    assert_eq!(parts.len(), 1, "{:#}", second.manifest);
    assert_eq!(parts[0]["recovered"], false);
}

/// The running worker, once it ends: one whole part of at least `seconds`, its own (not
/// recovered by anyone).
pub async fn its_one_part_is_whole(first: Started, storage: &Storage, seconds: f64) {
    let first = finish(first).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let parts = parts(&first);
    assert_eq!(parts.len(), 1, "{:#}", first.manifest);
    assert_eq!(parts[0]["status"], "succeeded", "{:#}", first.manifest);
    assert_eq!(parts[0]["recovered"], false);
    let recorded = verify_parts(&first, storage, Some("h264"), Some("aac"));
    assert!(recorded >= seconds, "the first part holds {recorded} s");
}
