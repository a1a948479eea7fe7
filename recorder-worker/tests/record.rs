//! roomrec-worker against the real test bed: nginx-rtmp with a live ffmpeg publisher, the S3
//! object store (versitygw, SigV4), local directories, and ffprobe on every file produced.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use roomrec_testbed::media::{Publisher, StreamSpec, ffprobe};
use roomrec_testbed::object_store::ObjectStore;
use roomrec_testbed::prometheus::scrape;
use roomrec_testbed::{BedInfo, shared, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn bed() -> &'static BedInfo {
    shared()
}

struct Run {
    code: i32,
    manifest: Value,
    stderr: String,
}

/// Starts the worker; `storage` is "s3" (the bed's bucket, under `prefix`) or a directory.
fn worker(source: &str, mode: &str, storage: &Storage, extra: &[&str]) -> tokio::process::Command {
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

#[derive(Clone)]
enum Storage {
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

const COS_BUCKET: &str = "recordings-1250000000";
const COS_SECRET_ID: &str = "AKIDWORKERTEST000000";
const COS_SECRET_KEY: &str = "worker-cos-secret";

async fn cos_stand_in() -> roomrec_testbed::cos::CosStandIn {
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
    fn s3(prefix: &str) -> Self {
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

    fn dir(name: &str) -> Self {
        Storage::Dir(bed().scratch(name).unwrap())
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
    fn file(&self, key: &str) -> PathBuf {
        match self {
            Storage::S3 { bucket_dir, .. } | Storage::Cos { bucket_dir, .. } => {
                bucket_dir.join(key)
            }
            Storage::Dir(dir) => dir.join(key),
        }
    }
}

/// A running worker whose output is read all along (a full stderr pipe would stall it).
struct Started {
    pid: u32,
    output: tokio::task::JoinHandle<Run>,
}

fn start(command: &mut tokio::process::Command) -> Started {
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
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.pid as i32, signal) };
    }
}

async fn finish(started: Started) -> Run {
    started.output.await.unwrap()
}

async fn run(command: &mut tokio::process::Command) -> Run {
    finish(start(command)).await
}

async fn publish(key: &str, spec: StreamSpec) -> Publisher {
    bed().publish(key, &spec).await.unwrap()
}

fn probe(path: &Path) -> roomrec_testbed::media::Probe {
    ffprobe(path.to_str().unwrap(), Duration::from_secs(10)).unwrap()
}

fn parts(run: &Run) -> Vec<Value> {
    run.manifest["parts"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no manifest: {}", run.stderr))
}

/// Every part exists, plays with the expected codecs, and lasts what the manifest says.
fn verify_parts(run: &Run, storage: &Storage, video: Option<&str>, audio: Option<&str>) -> f64 {
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

#[tokio::test]
async fn every_mode_into_every_backend() {
    let _publisher = publish("modes", StreamSpec::default()).await;
    let url = bed().rtmp_url("modes");
    let mut runs = Vec::new();
    for (mode, video, audio) in [
        ("00", None, Some("mp3")),
        ("01", Some("h264"), None),
        ("02", Some("h264"), Some("aac")),
    ] {
        for storage in [
            Storage::s3(&format!("modes/{mode}")),
            Storage::dir(&format!("modes-{mode}")),
        ] {
            let child = start(&mut worker(&url, mode, &storage, &["--max-duration", "4"]));
            runs.push((mode, video, audio, storage, child));
        }
    }
    for (mode, video, audio, storage, child) in runs {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "mode {mode}: {}", run.stderr);
        assert_eq!(run.manifest["stopReason"], "max-duration");
        assert_eq!(parts(&run).len(), 1, "{:#}", run.manifest);
        let seconds = verify_parts(&run, &storage, video, audio);
        assert!((3.9..5.5).contains(&seconds), "mode {mode}: {seconds} s");
        let url = parts(&run)[0]["url"].as_str().unwrap().to_string();
        match &storage {
            Storage::S3 { endpoint, .. } => assert!(
                url.starts_with(&format!("{endpoint}/recordings/modes/{mode}/modes_")),
                "{url}"
            ),
            Storage::Cos { .. } => assert!(
                url.starts_with(&format!(
                    "https://{COS_BUCKET}.cos.ap-shanghai.myqcloud.com/modes/{mode}/modes_"
                )),
                "{url}"
            ),
            Storage::Dir(dir) => assert!(
                url.starts_with(&format!("file://{}/modes_", dir.display())),
                "{url}"
            ),
        }
    }
}

#[tokio::test]
async fn mp3_audio_is_copied_not_reencoded() {
    let spec = StreamSpec {
        audio_codec: Some("libmp3lame"),
        ..StreamSpec::default()
    };
    let _publisher = publish("mp3-source", spec).await;
    let url = bed().rtmp_url("mp3-source");
    for (mode, video) in [("00", None), ("02", Some("h264"))] {
        let storage = Storage::s3(&format!("mp3src/{mode}"));
        let run = run(&mut worker(&url, mode, &storage, &["--max-duration", "3"])).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        verify_parts(&run, &storage, video, Some("mp3"));
        assert!(
            run.stderr.contains("\"copy\":true"),
            "MP3 from the source is copied: {}",
            run.stderr
        );
        // Mode 00 usually encodes (AAC sources): ffmpeg started that way, reported MP3 and
        // was started again to copy it. MP4 carries MP3 as the usual command does.
        assert_eq!(
            run.stderr.contains(RESTARTED),
            mode == "00",
            "mode {mode}: {}",
            run.stderr
        );
    }
}

/// What the worker logs when the source's tracks need another ffmpeg command than the usual.
const RESTARTED: &str = "the source needs another ffmpeg command";

#[tokio::test]
async fn audio_mp4_cannot_carry_is_encoded_to_aac() {
    let spec = StreamSpec {
        audio_codec: Some("nellymoser"),
        ..StreamSpec::default()
    };
    let _publisher = publish("nellymoser", spec).await;
    let url = bed().rtmp_url("nellymoser");
    let storage = Storage::s3("nellymoser");
    let run = run(&mut worker(&url, "02", &storage, &["--max-duration", "4"])).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((3.9..5.5).contains(&seconds), "{seconds} s");
    assert!(
        run.stderr.contains("\"copy\":false") && run.stderr.contains(RESTARTED),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_source_without_audio_fails_audio_modes_with_advice() {
    let spec = StreamSpec {
        audio_codec: None,
        ..StreamSpec::default()
    };
    let _publisher = publish("silent", spec).await;
    let url = bed().rtmp_url("silent");
    let storage = Storage::dir("silent");
    let run = run(&mut worker(&url, "00", &storage, &["--max-duration", "3"])).await;
    assert_eq!(run.code, 3, "a missing track is not worth a retry");
    let message = run.manifest["message"].as_str().unwrap();
    assert!(
        message.contains("no audio track") && message.contains("VideoMp4 (01)"),
        "{message}"
    );
    assert!(parts(&run).is_empty());
    let ok = self::run(&mut worker(&url, "01", &storage, &["--max-duration", "3"])).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    verify_parts(&ok, &storage, Some("h264"), None);
}

#[tokio::test]
async fn a_stream_that_never_starts_ends_at_the_idle_timeout() {
    let url = bed().rtmp_url("nobody-publishes-this");
    let started = Instant::now();
    let run = run(&mut worker(
        &url,
        "02",
        &Storage::dir("never"),
        &["--idle-timeout", "4"],
    ))
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.manifest["stopReason"], "idle-timeout");
    assert!(
        run.manifest["message"]
            .as_str()
            .unwrap()
            .contains("idle timeout (4 s)"),
        "{:#}",
        run.manifest
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_stalled_stream_ends_at_the_idle_timeout_keeping_what_was_recorded() {
    let spec = StreamSpec {
        duration: Some(Duration::from_secs(6)),
        ..StreamSpec::default()
    };
    let _publisher = publish("stalls", spec).await;
    let storage = Storage::dir("stalls");
    // A grace as long as the idle timeout: the recording ends by the idle rule.
    let run = run(&mut worker(
        &bed().rtmp_url("stalls"),
        "02",
        &storage,
        &["--idle-timeout", "3", "--reconnect-grace", "3"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        ["idle-timeout", "source-ended"].contains(&run.manifest["stopReason"].as_str().unwrap())
    );
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 2.0, "{seconds}");
}

#[tokio::test]
async fn wrong_credentials_and_a_missing_bucket_fail_clearly_and_for_good() {
    let b = bed();
    let url = b.rtmp_url("unused");
    let message_file = b.scratch("wrong-credentials").unwrap().join("termination");
    let mut bad = worker(
        &url,
        "02",
        &Storage::s3("x"),
        &["--termination-message", message_file.to_str().unwrap()],
    );
    bad.env("AWS_SECRET_ACCESS_KEY", "wrong-secret-7f3a9");
    let run = run(&mut bad).await;
    assert_eq!(run.code, 3, "retrying cannot help: {}", run.stderr);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("7f3a9"),
        "the secret is not logged: {}",
        run.stderr
    );
    let message: Value =
        serde_json::from_str(&std::fs::read_to_string(&message_file).unwrap()).unwrap();
    assert_eq!(message["status"], "failed");
    assert_eq!(message["stopReason"], "failed");
    assert_eq!(message["retryable"], false);
    assert_eq!(message["parts"], 0);
    assert!(
        message["message"]
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{message}"
    );

    let mut missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"));
    missing
        .args([
            "record",
            "--source",
            &url,
            "--storage",
            "s3://no-such-bucket/x",
            "--endpoint",
            &b.s3_endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", &b.s3_access_key)
        .env("AWS_SECRET_ACCESS_KEY", &b.s3_secret_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = self::run(&mut missing).await;
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    // A store that cannot be reached may come back: exit 1, retryable.
    let mut down = Storage::s3("x");
    if let Storage::S3 { endpoint, .. } = &mut down {
        *endpoint = "http://127.0.0.1:1".into();
    }
    let run = self::run(&mut worker(
        &url,
        "02",
        &down,
        &["--termination-message", message_file.to_str().unwrap()],
    ))
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let message: Value =
        serde_json::from_str(&std::fs::read_to_string(&message_file).unwrap()).unwrap();
    assert_eq!(message["retryable"], true);
    assert!(
        message["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{message}"
    );
}

/// Runs `roomrec-worker record {args}`, which must refuse them with exit code 2; its stderr.
fn usage_error(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"))
        .arg("record")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn bad_arguments_name_the_flag_and_exit_2() {
    let stderr = usage_error(&["--source", "rtmp://h/live/a", "--storage", "cos://b-1/x"]);
    assert!(
        stderr.contains("--storage") && stderr.contains("--region ap-shanghai"),
        "{stderr}"
    );
    let stderr = usage_error(&[
        "--source",
        "rtmp://h/live/a",
        "--storage",
        "/tmp/x",
        "--idle-timeout",
        "soon",
    ]);
    assert!(stderr.contains("--idle-timeout"), "{stderr}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"))
        .args(["record", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--source",
        "--mode",
        "--storage",
        "--idle-timeout",
        "--max-duration",
        "--segment-seconds",
        "--checkpoint-seconds",
        "--faststart",
        "--scratch-dir",
    ] {
        assert!(help.contains(flag), "--help explains {flag}");
    }
    assert!(
        help.contains("Exit codes:") && help.contains("3  failed, and running again cannot help"),
        "{help}"
    );
    let stderr = usage_error(&[
        "--source",
        "rtmp://h/live/a",
        "--storage",
        "/tmp/x",
        "--report-job",
        "no-slash",
    ]);
    assert!(stderr.contains("--report-job"), "{stderr}");
}

/// The wall-clock time of a JSON log event of the worker, by its message (a prefix if it
/// ends with a space).
fn event_time(stderr: &str, message: &str) -> Option<jiff::Timestamp> {
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

#[tokio::test]
async fn sigterm_finishes_a_playable_file_of_the_right_length() {
    let _publisher = publish("sigterm", StreamSpec::default()).await;
    // Plain, and with --faststart, whose classic copy must be stored within the shutdown time too.
    let children = [("sigterm", false), ("sigterm-faststart", true)].map(|(prefix, faststart)| {
        let storage = Storage::s3(prefix);
        let flags: &[&str] = if faststart { &["--faststart"] } else { &[] };
        let child = start(&mut worker(
            &bed().rtmp_url("sigterm"),
            "02",
            &storage,
            flags,
        ));
        (storage, faststart, child)
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let signalled = jiff::Timestamp::now();
    for (_, _, child) in &children {
        child.signal(libc::SIGTERM);
    }
    let started = Instant::now();
    for (storage, faststart, child) in children {
        let run = finish(child).await;
        // The remux takes a moment more: bounded by the shutdown timeout (25 s), within a pod's
        // grace period (40 s).
        let within = Duration::from_secs(if faststart { 30 } else { 10 });
        assert!(
            started.elapsed() < within,
            "finished within a pod's grace period"
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.manifest["stopReason"], "signal");
        let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
        if faststart {
            for part in parts(&run) {
                assert_eq!(part["message"], "", "{part:#}");
                assert_classic(&storage.file(part["key"].as_str().unwrap()));
            }
        }
        // ffmpeg starts reading the live stream when the worker logs "reading …": the file
        // holds the media from then until SIGTERM.
        let connected = event_time(&run.stderr, "reading ").expect("reading event");
        let recorded_wall = (signalled - connected).total(jiff::Unit::Second).unwrap();
        assert!(
            (seconds - recorded_wall).abs() <= 1.0,
            "file {seconds} s vs {recorded_wall} s between connecting and SIGTERM (faststart: {faststart})"
        );
    }
}

#[tokio::test]
async fn sigkill_loses_at_most_a_few_seconds_and_a_restart_continues_with_a_new_part() {
    let _publisher = publish("sigkill", StreamSpec::default()).await;
    let storage = Storage::s3("sigkill");
    // A kept-alive bed holds the parts of an earlier run of this test under the same session.
    let _ = std::fs::remove_dir_all(storage.file("sigkill"));
    // With --faststart both times: its copy is lost with the worker, the rebuilt part still
    // becomes a classic MP4, and nothing more is lost than without it.
    let scratch = bed().scratch("sigkill-scratch").unwrap();
    let session = [
        "--session-start",
        "2026-01-01T00:00:00Z",
        "--faststart",
        "--scratch-dir",
        scratch.to_str().unwrap(),
    ];
    let child = start(&mut worker(
        &bed().rtmp_url("sigkill"),
        "02",
        &storage,
        &session,
    ));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let killed = jiff::Timestamp::now();
    child.signal(libc::SIGKILL);
    let killed_run = finish(child).await;
    assert!(
        !files_under(&scratch).is_empty(),
        "the killed worker left its copy"
    );
    let connected = event_time(&killed_run.stderr, "reading ").expect("reading event");
    let recorded_before_kill = (killed - connected).total(jiff::Unit::Second).unwrap();

    let mut restart = worker(&bed().rtmp_url("sigkill"), "02", &storage, &session);
    restart.args(["--max-duration", "3"]);
    let run = run(&mut restart).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["part"], 1);
    assert_eq!(parts[0]["recovered"], true);
    assert_eq!(parts[1]["part"], 2);
    assert_ne!(parts[0]["key"], parts[1]["key"]);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    for part in &parts {
        assert_classic(&storage.file(part["key"].as_str().unwrap()));
    }
    assert!(
        files_under(&scratch).is_empty(),
        "the restart removed the killed worker's copy and its own"
    );
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    let lost = recorded_before_kill - recovered;
    eprintln!(
        "SIGKILL after {recorded_before_kill:.2} s of media: {recovered:.2} s recovered, {lost:.2} s lost"
    );
    // Checkpoint 2 s + one fragment (1 s) + a write in flight.
    assert!(lost <= 3.5, "lost {lost:.2} s");
    // The journal is gone once the part is rebuilt.
    let journal = storage.file("sigkill/.roomrec-journal");
    assert!(!journal.exists() || std::fs::read_dir(&journal).unwrap().next().is_none());
}

#[tokio::test]
async fn a_stream_gone_quiet_has_all_it_delivered_checkpointed_before_a_sigkill() {
    // Media checkpoints as it comes once the interval has passed; what a stream that goes quiet
    // left pending is checkpointed by the recorder's deadline. The publisher is frozen, so the
    // connection stays open and nothing more arrives, and a long interval makes what is pending
    // several seconds of media: without the deadline the restart would find it missing.
    let mut publisher = publish("quiet", StreamSpec::default()).await;
    let storage = Storage::s3("quiet");
    let _ = std::fs::remove_dir_all(storage.file("quiet"));
    let metrics = metrics_address();
    let options = [
        "--session-start",
        "2026-01-02T00:00:00Z",
        "--checkpoint-seconds",
        "8",
    ];
    let mut first = worker(&bed().rtmp_url("quiet"), "02", &storage, &options);
    first.args(["--stall-seconds", "60", "--metrics-address", &metrics]);
    let child = start(&mut first);
    tokio::time::sleep(Duration::from_secs(6)).await;
    publisher.process().signal(libc::SIGSTOP);
    // Quiet for longer than the interval, and the connection not yet given up.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let delivered = scrape(&metrics).await.unwrap()["roomrec_worker_recorded_seconds_total"];
    child.signal(libc::SIGKILL);
    let _ = finish(child).await;
    publisher.process().signal(libc::SIGCONT);
    assert!(delivered > 3.0, "{delivered} s delivered before the pause");

    let mut restart = worker(&bed().rtmp_url("quiet"), "02", &storage, &options);
    restart.args(["--max-duration", "2"]);
    let run = run(&mut restart).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts[0]["recovered"], true, "{:#}", run.manifest);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    assert!(
        recovered >= delivered - 0.1,
        "{delivered:.2} s delivered before the stream went quiet, {recovered:.2} s recovered"
    );
}

#[tokio::test]
async fn a_dropped_stream_that_returns_continues_as_a_new_part() {
    let storage = Storage::dir("drop");
    let metrics = metrics_address();
    let child = start(&mut worker(
        &bed().rtmp_url("drops"),
        "02",
        &storage,
        &[
            "--reconnect-grace",
            "8",
            "--idle-timeout",
            "30",
            "--metrics-address",
            &metrics,
        ],
    ));
    {
        let _first = publish(
            "drops",
            StreamSpec {
                duration: Some(Duration::from_secs(8)),
                ..StreamSpec::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    {
        let _second = publish(
            "drops",
            StreamSpec {
                duration: Some(Duration::from_secs(8)),
                ..StreamSpec::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let during = scrape(&metrics).await.unwrap();
        assert_eq!(
            during["roomrec_worker_source_reconnects_total"], 1.0,
            "{during:#?}"
        );
        assert_eq!(during["roomrec_worker_recording"], 1.0, "{during:#?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.manifest["stopReason"], "source-ended");
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 6.0, "{seconds}");
}

#[tokio::test]
async fn segments_split_by_duration_into_playable_parts_starting_at_zero() {
    let _publisher = publish("segments", StreamSpec::default()).await;
    let storage = Storage::s3("segments");
    let run = run(&mut worker(
        &bed().rtmp_url("segments"),
        "02",
        &storage,
        &["--segment-seconds", "4", "--max-duration", "13"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert!(parts.len() >= 3, "{:#}", run.manifest);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    for part in &parts {
        let file = storage.file(part["key"].as_str().unwrap());
        let start = start_time(&file);
        assert!(start < 0.1, "{} starts at {start}", file.display());
    }
}

/// ffprobe's `format.start_time` of a file.
fn start_time(path: &Path) -> f64 {
    probe(path).raw["format"]["start_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_part_of_several_chunks_is_assembled_by_the_store_and_leaves_nothing_behind() {
    // 6 Mbit/s: two 5 MiB chunks in about 14 s.
    let spec = StreamSpec {
        video_kbps: 6000,
        ..StreamSpec::default()
    };
    let _publisher = publish("chunks", spec).await;
    let storage = Storage::s3("chunks");
    let run = run(&mut worker(
        &bed().rtmp_url("chunks"),
        "02",
        &storage,
        &["--max-duration", "18"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 1, "{:#}", run.manifest);
    assert!(
        parts[0]["bytes"].as_u64().unwrap() > 10 << 20,
        "more than two chunks: {:#}",
        parts[0]
    );
    let assembled = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "part assembled by the store from its stored chunks")
        .unwrap_or_else(|| panic!("no assembly: {}", run.stderr));
    assert!(
        assembled["fields"]["chunks"].as_u64().unwrap() >= 2,
        "{assembled}"
    );
    // By the store alone: no stored chunk came back to the worker. (With an exact chunk size,
    // opendal copied only whole chunks natively and downloaded and re-uploaded the rest of
    // each, nearly the whole part.)
    let key = parts[0]["key"].as_str().unwrap();
    let name = key.rsplit('/').next().unwrap();
    let store_log = std::fs::read_to_string(bed().dir.join("s3/versitygw.log")).unwrap();
    let fetched: Vec<&str> = store_log
        .lines()
        .filter(|l| l.contains("| GET |") && l.contains(name) && l.contains(".chunk"))
        .collect();
    assert!(fetched.is_empty(), "chunks read back: {fetched:#?}");
    // Byte-exact and playable: the size and the duration are the manifest's, every frame is
    // there after the first keyframe.
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((17.5..19.5).contains(&seconds), "{seconds} s");
    let Storage::S3 { bucket_dir, .. } = &storage else {
        unreachable!()
    };
    let left: Vec<_> = files_under(&bucket_dir.join("chunks"))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(".roomrec-journal"))
        .collect();
    assert!(
        left.is_empty(),
        "the chunks and checkpoints are gone: {left:?}"
    );
}

#[tokio::test]
async fn segments_split_by_size_into_playable_parts() {
    // 640x360 at 800 kbit/s (+ 128 kbit/s AAC): about 1 MiB every 9 s, so 12 s make two parts.
    let spec = StreamSpec {
        width: 640,
        height: 360,
        video_kbps: 800,
        ..StreamSpec::default()
    };
    let _publisher = publish("sizes", spec).await;
    // ffmpeg cuts a fragment every second and at each keyframe (every 2 s), and a part starts
    // only at a keyframe. Two limits a fragment apart: the size is crossed on a fragment
    // without a keyframe in one of them (1100k did overflow before the size rule left room for
    // the rest of the GOP).
    let mut recordings = Vec::new();
    for (flag, limit) in [("1M", 1u64 << 20), ("1100k", 1100 << 10)] {
        let storage = Storage::s3(&format!("sizes/{flag}"));
        let child = start(&mut worker(
            &bed().rtmp_url("sizes"),
            "02",
            &storage,
            &["--segment-size", flag, "--max-duration", "12"],
        ));
        recordings.push((flag, limit, storage, child));
    }
    for (flag, limit, storage, child) in recordings {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.manifest["stopReason"], "max-duration");
        let parts = parts(&run);
        assert!(parts.len() >= 2, "{:#}", run.manifest);
        let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
        let mut measured = Vec::new();
        for part in &parts {
            let file = storage.file(part["key"].as_str().unwrap());
            let bytes = part["bytes"].as_u64().unwrap();
            let on_disk = std::fs::metadata(&file).unwrap().len();
            // A part is closed before it would exceed the size.
            assert!(
                bytes <= limit && on_disk <= limit,
                "{}: {bytes} bytes in the manifest, {on_disk} on disk, limit {limit}",
                file.display()
            );
            let start = start_time(&file);
            assert!(start < 0.1, "{} starts at {start}", file.display());
            measured.push((on_disk, part["durationSeconds"].as_f64().unwrap()));
        }
        eprintln!("--segment-size {flag}: parts (bytes, seconds) {measured:?}, {seconds:.2} s");
        assert!(
            (seconds - 12.0).abs() <= 1.5,
            "--segment-size {flag}: the parts last {seconds} s together, not ~12 s"
        );
    }
}

#[tokio::test]
async fn an_object_store_outage_of_30_seconds_loses_nothing() {
    let (mut store, storage) = private_store("outage").await;
    let _publisher = publish("outage", StreamSpec::default()).await;
    let metrics = metrics_address();
    let child = start(&mut worker(
        &bed().rtmp_url("outage"),
        "02",
        &storage,
        &["--max-duration", "45", "--metrics-address", &metrics],
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = scrape(&metrics).await.unwrap();
    store.pause();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The outage shows: requests retried, recorded data waiting, and nothing newly confirmed
    // (what was in flight at the pause may still have landed).
    let during = scrape(&metrics).await.unwrap();
    assert!(
        during["roomrec_worker_upload_retries_total"] > 0.0,
        "{during:#?}"
    );
    assert!(
        during["roomrec_worker_spool_bytes"] > 1e6,
        "30 s at 2 Mbit/s wait in the spool: {during:#?}"
    );
    assert_eq!(during["roomrec_worker_recording"], 1.0);
    assert!(
        during["roomrec_worker_recorded_bytes_total"]
            < before["roomrec_worker_recorded_bytes_total"] + 1e6,
        "{before:#?} {during:#?}"
    );
    store.resume().await.unwrap();
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        seconds >= 44.0,
        "recorded {seconds} s of 45 across a 30 s outage: {:#}\n{}",
        run.manifest,
        run.stderr
    );
}

/// `127.0.0.1:{a free port}` for `--metrics-address`.
fn metrics_address() -> String {
    format!("127.0.0.1:{}", roomrec_testbed::ports::free_port())
}

#[tokio::test]
async fn metrics_count_what_the_manifest_lists() {
    let _publisher = publish("metrics", StreamSpec::default()).await;
    let storage = Storage::s3("metrics");
    let address = metrics_address();
    let manifest_file = bed().scratch("metrics").unwrap().join("manifest.json");
    let child = start(&mut worker(
        &bed().rtmp_url("metrics"),
        "02",
        &storage,
        &[
            "--segment-seconds",
            "4",
            "--max-duration",
            "10",
            "--metrics-address",
            &address,
            "--metrics-linger",
            "120",
            "--manifest",
            manifest_file.to_str().unwrap(),
        ],
    ));

    // While recording: checkpoints confirmed (every 2 s) and media counted.
    let during = std::sync::Mutex::new(BTreeMap::new());
    let recording = wait_until(Duration::from_secs(30), || async {
        let Ok(m) = scrape(&address).await else {
            return false;
        };
        let ok = m["roomrec_worker_recording"] == 1.0
            && m["roomrec_worker_recorded_bytes_total"] > 0.0
            && m["roomrec_worker_recorded_seconds_total"] > 0.0;
        *during.lock().unwrap() = m;
        ok
    })
    .await;
    let during = during.into_inner().unwrap();
    assert!(recording.is_ok(), "{during:#?}");
    assert_eq!(
        during["roomrec_worker_spool_limit_bytes"],
        (1u64 << 30) as f64,
        "--spool-max 1G"
    );

    // After: the worker lingers, so the final counts can be read beside the manifest.
    let manifest_read = wait_until(Duration::from_secs(60), || async {
        std::fs::read(&manifest_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some()
    })
    .await;
    assert!(manifest_read.is_ok(), "no manifest within 60 s");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    let after = scrape(&address).await.unwrap();
    let parts = manifest["parts"].as_array().unwrap();
    assert!(parts.len() >= 2, "{manifest:#}");
    let sum = |field: &str| {
        parts
            .iter()
            .map(|p| p[field].as_f64().unwrap())
            .sum::<f64>()
    };
    assert_eq!(
        after["roomrec_worker_recorded_bytes_total"],
        sum("bytes"),
        "{after:#?}"
    );
    let seconds = after["roomrec_worker_recorded_seconds_total"];
    assert!(
        (seconds - sum("durationSeconds")).abs() < 0.05,
        "{seconds} s counted, {} s in the manifest",
        sum("durationSeconds")
    );
    assert_eq!(
        after["roomrec_worker_parts_total{status=\"complete\"}"],
        parts.len() as f64
    );
    assert_eq!(after["roomrec_worker_parts_total{status=\"failed\"}"], 0.0);
    assert_eq!(after["roomrec_worker_recording"], 0.0);
    assert_eq!(after["roomrec_worker_spool_bytes"], 0.0);
    assert_eq!(after["roomrec_worker_source_reconnects_total"], 0.0);

    // A SIGTERM ends the lingering at once.
    let signalled = Instant::now();
    child.signal(libc::SIGTERM);
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(signalled.elapsed() < Duration::from_secs(10));
    verify_parts(
        &Run { manifest, ..run },
        &storage,
        Some("h264"),
        Some("aac"),
    );
}

/// A private object store (so a test may stop it) and the storage flags for it.
async fn private_store(name: &str) -> (ObjectStore, Storage) {
    let dir = bed().scratch(name).unwrap();
    let store = ObjectStore::start(&dir).await.unwrap();
    let storage = Storage::S3 {
        endpoint: store.endpoint(),
        bucket: roomrec_testbed::object_store::BUCKET.into(),
        prefix: name.into(),
        access: roomrec_testbed::object_store::ACCESS_KEY.into(),
        secret: roomrec_testbed::object_store::SECRET_KEY.into(),
        bucket_dir: store.root.join(roomrec_testbed::object_store::BUCKET),
    };
    (store, storage)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
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

#[tokio::test]
async fn an_outage_beyond_the_memory_spool_spills_to_disk_and_loses_nothing() {
    let (mut store, storage) = private_store("spill").await;
    let spool = bed().scratch("spill-spool").unwrap();
    let _publisher = publish("spill", StreamSpec::default()).await;
    let args = [
        "--max-duration",
        "35",
        "--spool-memory",
        "1M",
        "--spool-dir",
        spool.to_str().unwrap(),
    ];
    let child = start(&mut worker(&bed().rtmp_url("spill"), "02", &storage, &args));
    tokio::time::sleep(Duration::from_secs(6)).await;
    store.pause();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        !files_under(&spool).is_empty(),
        "checkpoints spilled to disk during the outage"
    );
    store.resume().await.unwrap();
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(
        seconds >= 34.0,
        "recorded {seconds} s of 35: {:#}",
        run.manifest
    );
    let message = parts(&run)[0]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("assembled from its checkpoints"),
        "{message}"
    );
    assert!(
        files_under(&spool).is_empty(),
        "the spool is empty once the store took everything"
    );
}

#[tokio::test]
async fn checkpoints_the_store_never_took_are_kept_and_uploaded_by_the_next_run() {
    let (mut store, storage) = private_store("kept").await;
    let spool = bed().scratch("kept-spool").unwrap();
    let _publisher = publish("kept", StreamSpec::default()).await;
    let session = "2026-02-02T00:00:00Z";
    let args = [
        "--spool-dir",
        spool.to_str().unwrap(),
        "--shutdown-timeout",
        "3",
        "--session-start",
        session,
    ];
    let child = start(&mut worker(&bed().rtmp_url("kept"), "02", &storage, &args));
    tokio::time::sleep(Duration::from_secs(8)).await;
    store.pause();
    tokio::time::sleep(Duration::from_secs(4)).await;
    child.signal(libc::SIGTERM);
    let first = finish(child).await;
    assert_eq!(
        first.code, 1,
        "the store is down at the end: {}",
        first.stderr
    );
    let message = parts(&first)[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains(spool.to_str().unwrap()), "{message}");
    let recorded = parts(&first)[0]["durationSeconds"].as_f64().unwrap();
    assert!(
        files_under(&spool)
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "seg"))
    );

    store.resume().await.unwrap();
    let args = [
        "--spool-dir",
        spool.to_str().unwrap(),
        "--max-duration",
        "2",
        "--session-start",
        session,
    ];
    let run = run(&mut worker(&bed().rtmp_url("kept"), "02", &storage, &args)).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["recovered"], true);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    assert!(
        recovered >= recorded - 0.5,
        "everything the first run recorded ({recorded} s), including what only its spool held, is in the file ({recovered} s)"
    );
    assert!(files_under(&spool).is_empty());
}

/// The journal objects (`meta.json`, `NNNNNNNN.seg`) under a journal root on disk, with their
/// sizes.
fn journal_objects(root: &Path) -> BTreeMap<PathBuf, u64> {
    files_under(root)
        .into_iter()
        .filter(|f| {
            f.file_name().is_some_and(|n| n == "meta.json")
                || f.extension().is_some_and(|e| e == "seg")
        })
        .map(|f| {
            let len = std::fs::metadata(&f).unwrap().len();
            (f, len)
        })
        .collect()
}

#[tokio::test]
async fn a_full_spool_fails_the_recording_and_keeps_what_was_stored() {
    // A private store: stopping it cannot disturb the other tests, and it is resumed before
    // anything is asserted (a failed assertion drops it, which ends its process).
    let (mut store, storage) = private_store("spoolfull").await;
    // A kept-alive bed holds the parts of an earlier run of this test under the same session.
    let _ = std::fs::remove_dir_all(storage.file("spoolfull"));
    let journal = storage.file("spoolfull/.roomrec-journal");
    let spec = StreamSpec {
        width: 640,
        height: 360,
        video_kbps: 800,
        ..StreamSpec::default()
    };
    let _publisher = publish("spoolfull", spec).await;
    let session = ["--session-start", "2026-03-03T00:00:00Z"];
    let mut first = worker(
        &bed().rtmp_url("spoolfull"),
        "02",
        &storage,
        &[
            "--spool-memory",
            "256k",
            "--spool-max",
            "512k",
            "--shutdown-timeout",
            "5",
        ],
    );
    first.args(session);
    let child = start(&mut first);
    // Long enough for a few checkpoints (every 2 s) to reach the journal.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let paused = jiff::Timestamp::now();
    store.pause();
    // What the store took before the outage (nothing lands once it is stopped).
    let stored = journal_objects(&journal);
    let first = tokio::time::timeout(Duration::from_secs(90), finish(child)).await;
    store.resume().await.unwrap();
    let first = first.expect("the recording ends once the spool is full");

    assert_eq!(first.code, 1, "retryable: {}", first.stderr);
    assert_eq!(first.manifest["status"], "failed", "{:#}", first.manifest);
    assert_eq!(first.manifest["stopReason"], "failed");
    let message = first.manifest["message"].as_str().unwrap();
    assert!(
        message.contains("the spool is full: the object store has been unreachable for too long"),
        "{message}"
    );
    assert!(
        first.stderr.contains("spool full"),
        "the log says why: {}",
        first.stderr
    );
    let full = event_time(&first.stderr, "spool full").expect("spool full event");
    let full_after = (full - paused).total(jiff::Unit::Second).unwrap();
    let connected = event_time(&first.stderr, "reading ").expect("reading event");
    let recorded_before_outage = (paused - connected).total(jiff::Unit::Second).unwrap();
    let first_parts = parts(&first);
    assert_eq!(first_parts.len(), 1, "{:#}", first.manifest);
    let key = first_parts[0]["key"].as_str().unwrap().to_string();
    // The store was down when the part ended: it cannot be complete, its journal stays.
    assert_eq!(first_parts[0]["status"], "failed", "{:#}", first_parts[0]);
    assert!(!storage.file(&key).exists());

    // Nothing the store took before the outage was deleted.
    let checkpoints = stored
        .keys()
        .filter(|f| f.extension().is_some_and(|e| e == "seg"))
        .count();
    assert!(
        stored.keys().any(|f| f.ends_with("meta.json")) && checkpoints >= 2,
        "the journal had checkpoints before the outage: {stored:?}"
    );
    let kept = journal_objects(&journal);
    for (file, len) in &stored {
        assert_eq!(
            kept.get(file),
            Some(len),
            "{} was stored before the outage",
            file.display()
        );
    }
    let journal_bytes: u64 = kept
        .iter()
        .filter(|(f, _)| f.extension().is_some_and(|e| e == "seg"))
        .map(|(_, len)| len)
        .sum();

    // The next run rebuilds the part from its journal.
    let mut next = worker(
        &bed().rtmp_url("spoolfull"),
        "02",
        &storage,
        &["--max-duration", "2"],
    );
    next.args(session);
    let run = run(&mut next).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 2, "{:#}", run.manifest);
    assert_eq!(parts[0]["part"], 1);
    assert_eq!(parts[0]["key"], key.as_str());
    assert_eq!(parts[0]["recovered"], true);
    assert_eq!(
        parts[0]["bytes"], journal_bytes,
        "every checkpoint is in the file"
    );
    assert_ne!(parts[1]["key"], key.as_str());
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    let recovered = parts[0]["durationSeconds"].as_f64().unwrap();
    eprintln!(
        "spool full {full_after:.1} s into the outage; {recorded_before_outage:.2} s recorded before it, {recovered:.2} s recovered from {checkpoints} checkpoints ({journal_bytes} bytes)"
    );
    assert!(
        recovered >= recorded_before_outage - 3.5,
        "recovered {recovered:.2} s of the {recorded_before_outage:.2} s recorded before the outage"
    );
    assert!(
        journal_objects(&journal).is_empty(),
        "the journal is gone once the part is rebuilt"
    );
}

#[tokio::test]
async fn cos_refuses_a_wrong_secret_key_before_recording() {
    let cos = cos_stand_in().await;
    let storage = Storage::Cos {
        port: cos.port,
        prefix: "bad".into(),
        bucket_dir: PathBuf::new(),
    };
    let mut command = worker(&bed().rtmp_url("unused"), "02", &storage, &[]);
    command.env("COS_SECRET_KEY", "not-the-key");
    let run = run(&mut command).await;
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(
        cos.requests().iter().all(|r| r.status == 403),
        "every request was refused"
    );
}

#[tokio::test]
async fn a_stop_file_ends_the_recording_gracefully() {
    let _publisher = publish("stopfile", StreamSpec::default()).await;
    let storage = Storage::dir("stopfile");
    let flag = bed().scratch("stopfile-flag").unwrap().join("stop");
    // Left by an earlier run on a kept-alive bed.
    let _ = std::fs::remove_file(&flag);
    let child = start(&mut worker(
        &bed().rtmp_url("stopfile"),
        "02",
        &storage,
        &["--stop-file", flag.to_str().unwrap()],
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    std::fs::write(&flag, b"").unwrap();
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.manifest["stopReason"], "stop-requested");
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!(seconds > 2.0, "{seconds}");
}

/// Installs the RecordingJob CRD (as the chart would) and waits until it is served.
async fn install_recording_job_crd(client: &kube::Client) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/recordingjob.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "recordingjobs.roomrec.dev",
        &PatchParams::apply("roomrec-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), || async {
        crds.get("recordingjobs.roomrec.dev")
            .await
            .ok()
            .and_then(|c| c.status?.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await
    .expect("the RecordingJob CRD is established");
}

/// A RecordingJob in a fresh namespace, to report into.
async fn recording_job(client: &kube::Client, name: &str) -> Api<DynamicObject> {
    install_recording_job_crd(client).await;
    let ns = bed().namespace("report").await.unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("roomrec.dev", "v1alpha1", "RecordingJob"),
        "recordingjobs",
    );
    let jobs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let job = DynamicObject::new(name, &resource).data(json!({"spec": {
        "source": {"url": "rtmp://127.0.0.1:1/live/x"},
        "storage": {"s3": {"bucket": "recordings"}},
    }}));
    // A CRD that was just established can take a moment to be served.
    let mut created = None;
    for _ in 0..50 {
        match jobs.create(&PostParams::default(), &job).await {
            Ok(j) => {
                created = Some(j);
                break;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("creating the RecordingJob: {e}"),
        }
    }
    created.expect("the RecordingJob is created");
    jobs
}

/// This worker's `status.files` entries, by URL.
fn files_of(job: &DynamicObject, pod: &str) -> BTreeMap<String, Value> {
    job.data["status"]["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["pod"] == pod)
        .map(|f| (f["url"].as_str().unwrap().to_string(), f.clone()))
        .collect()
}

#[tokio::test]
async fn files_are_reported_into_the_recording_job_status_and_the_result_into_the_termination_message()
 {
    let client = bed().client().await.unwrap();
    let jobs = recording_job(&client, "report").await;
    let ns = jobs.namespace().unwrap().to_string();
    let _publisher = publish("report", StreamSpec::default()).await;
    let storage = Storage::s3("report");
    let message_file = bed().scratch("report").unwrap().join("termination-log");
    let job_ref = format!("{ns}/report");
    let mut command = worker(
        &bed().rtmp_url("report"),
        "02",
        &storage,
        &[
            "--segment-seconds",
            "10",
            "--max-duration",
            "25",
            "--report-job",
            &job_ref,
            "--report-name",
            "test-pod",
            "--termination-message",
            message_file.to_str().unwrap(),
        ],
    );
    command.env("KUBECONFIG", &bed().kubeconfig);
    let child = start(&mut command);

    // While recording: an entry `recording` whose bytes grow (the 10 s report).
    let mut recording: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while !child.output.is_finished() {
        if let Ok(job) = jobs.get("report").await {
            for (url, file) in files_of(&job, "test-pod") {
                if file["status"] == "recording" {
                    assert!(file.get("endedAt").is_none(), "{file}");
                    let bytes = file["bytes"].as_u64().unwrap();
                    let seen = recording.entry(url).or_default();
                    if seen.last() != Some(&bytes) {
                        seen.push(bytes);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains("cannot report"),
        "every report went through: {}",
        run.stderr
    );
    eprintln!("recording entries seen (bytes per report): {recording:?}");
    assert!(!recording.is_empty(), "a recording entry was seen");
    assert!(
        recording
            .values()
            .any(|b| b.len() >= 2 && b.windows(2).all(|w| w[0] < w[1])),
        "an open part's bytes grow while it records: {recording:?}"
    );

    // At the end: every part of the manifest, succeeded, with its figures.
    let parts = parts(&run);
    assert!(parts.len() >= 3, "{:#}", run.manifest);
    let job = jobs.get("report").await.unwrap();
    let files = files_of(&job, "test-pod");
    assert_eq!(files.len(), parts.len(), "{:#}", job.data["status"]);
    for part in &parts {
        let file = &files[part["url"].as_str().unwrap()];
        assert_eq!(file["status"], "succeeded", "{file}");
        assert_eq!(file["userId"], part["userId"]);
        assert_eq!(file["part"], part["part"]);
        assert_eq!(file["bytes"], part["bytes"]);
        assert_eq!(
            file["durationSeconds"].as_f64(),
            part["durationSeconds"].as_f64()
        );
        assert_eq!(file["startedAt"], part["startedAt"]);
        assert_eq!(file["endedAt"], part["endedAt"]);
        assert!(file.get("message").is_none(), "{file}");
    }
    let managers = job.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("roomrec-worker-test-pod")
                && m.subresource.as_deref() == Some("status")
                && m.operation.as_deref() == Some("Apply")),
        "{managers:#?}"
    );

    let message: Value =
        serde_json::from_str(&std::fs::read_to_string(&message_file).unwrap()).unwrap();
    assert_eq!(
        message,
        json!({
            "status": "succeeded",
            "stopReason": "max-duration",
            "message": "",
            "retryable": true,
            "parts": parts.len(),
            "bytes": run.manifest["bytes"],
            "durationSeconds": run.manifest["durationSeconds"],
        })
    );
}

/// The types of a file's top-level MP4 boxes, in order.
fn mp4_boxes(path: &Path) -> Vec<String> {
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
fn assert_classic(path: &Path) {
    let boxes = mp4_boxes(path);
    let at = |kind: &str| boxes.iter().position(|b| b == kind);
    assert!(
        matches!((at("moov"), at("mdat")), (Some(moov), Some(mdat)) if moov < mdat)
            && at("moof").is_none(),
        "{} is not a classic MP4: {boxes:?}",
        path.display()
    );
}

#[tokio::test]
async fn faststart_stores_every_part_as_a_classic_mp4_in_both_mp4_modes() {
    let _publisher = publish("faststart", StreamSpec::default()).await;
    let url = bed().rtmp_url("faststart");
    let mut runs = Vec::new();
    for (mode, video, audio, storage, segments) in [
        ("01", Some("h264"), None, Storage::s3("faststart/01"), true),
        (
            "02",
            Some("h264"),
            Some("aac"),
            Storage::s3("faststart/02"),
            true,
        ),
        (
            "02",
            Some("h264"),
            Some("aac"),
            Storage::dir("faststart-02"),
            false,
        ),
    ] {
        let scratch = bed()
            .scratch(&format!("faststart-scratch-{}", runs.len()))
            .unwrap();
        let mut flags = vec!["--faststart", "--max-duration", "10"];
        flags.extend(["--scratch-dir", scratch.to_str().unwrap()]);
        if segments {
            flags.extend(["--segment-seconds", "4"]);
        }
        let child = start(&mut worker(&url, mode, &storage, &flags));
        runs.push((mode, video, audio, storage, segments, scratch, child));
    }
    for (mode, video, audio, storage, segments, scratch, child) in runs {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "mode {mode}: {}", run.stderr);
        let parts = parts(&run);
        assert!(
            parts.len() >= if segments { 3 } else { 1 },
            "{:#}",
            run.manifest
        );
        // Playable with the mode's codecs, each as long as the manifest says, its size as stored.
        let seconds = verify_parts(&run, &storage, video, audio);
        for part in &parts {
            assert_eq!(part["message"], "", "mode {mode}: {part:#}");
            let file = storage.file(part["key"].as_str().unwrap());
            assert_classic(&file);
            let start = start_time(&file);
            assert!(start < 0.1, "{} starts at {start}", file.display());
        }
        let recorded = run.manifest["durationSeconds"].as_f64().unwrap();
        assert!(
            (seconds - recorded).abs() <= 1.0 && (seconds - 10.0).abs() <= 1.5,
            "mode {mode}: the classic files last {seconds} s, {recorded} s were recorded"
        );
        assert!(
            files_under(&scratch).is_empty(),
            "the copies are removed: {:?}",
            files_under(&scratch)
        );
    }
}

/// Runs the worker in a mount namespace of its own with a fresh tmpfs at `dir` (`flags`, e.g.
/// read-only, and `options`, e.g. its size): nothing outside the worker sees it.
fn own_tmpfs(command: &mut tokio::process::Command, dir: &Path, flags: u64, options: &str) {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let options = std::ffi::CString::new(options).unwrap();
    let fail = || Err(std::io::Error::last_os_error());
    // SAFETY: between fork and exec only system calls run, on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let none = std::ptr::null();
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(c"none".as_ptr(), c"/".as_ptr(), none, private, none.cast()) != 0 {
                return fail();
            }
            let tmpfs = c"tmpfs".as_ptr();
            if libc::mount(
                tmpfs,
                target.as_ptr(),
                tmpfs,
                flags,
                options.as_ptr().cast(),
            ) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
}

#[tokio::test]
async fn a_scratch_dir_that_cannot_be_written_keeps_the_fragmented_mp4_and_says_so() {
    let _publisher = publish("noscratch", StreamSpec::default()).await;
    let url = bed().rtmp_url("noscratch");
    let mut runs = Vec::new();
    // Read-only; and full: 9 MiB leave no room for a copy and its remuxed file beyond a second
    // or two of this 2 Mbit/s stream.
    for (name, flags, options, expected) in [
        (
            "read-only",
            libc::MS_RDONLY,
            "size=64m",
            "cannot write a copy",
        ),
        ("full", 0, "size=9m", "ran short of space"),
    ] {
        let storage = Storage::s3(&format!("noscratch/{name}"));
        let scratch = bed().scratch(&format!("noscratch-{name}")).unwrap();
        let mut command = worker(
            &url,
            "02",
            &storage,
            &["--faststart", "--max-duration", "6"],
        );
        command.args(["--scratch-dir", scratch.to_str().unwrap()]);
        own_tmpfs(&mut command, &scratch, flags, options);
        runs.push((name, expected, storage, start(&mut command)));
    }
    for (name, expected, storage, child) in runs {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_eq!(run.manifest["status"], "succeeded", "{:#}", run.manifest);
        let parts = parts(&run);
        assert_eq!(parts.len(), 1, "{:#}", run.manifest);
        let message = parts[0]["message"].as_str().unwrap();
        assert!(
            message.contains("stored as fragmented MP4")
                && message.contains(expected)
                && message.contains("--scratch-dir"),
            "{name}: {message}"
        );
        let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
        assert!(seconds >= 5.5, "{name}: {seconds} s");
        let boxes = mp4_boxes(&storage.file(parts[0]["key"].as_str().unwrap()));
        assert!(
            boxes.iter().any(|b| b == "moof"),
            "{name}: the fragmented MP4 stays: {boxes:?}"
        );
    }
}
