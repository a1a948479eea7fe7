//! The contract between the operator and the worker, end to end in one process: a worker pod's
//! environment, rendered by the operator's build from a RecordingJob, parsed back by the
//! worker's own flag parser (`roomrec-worker record`, which reads the same `ROOMREC_*` names),
//! gives the same settings. A variable renamed, dropped or formatted differently on one side
//! fails here.
//!
//! One test in this binary on purpose: it sets the process environment, which no other test
//! may read at the same time.

use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use roomrec_api::RecordingJob;
use roomrec_api::relay::{RelayStream, StreamIdForm};
use roomrec_api::worker_env::{StorageTarget, WorkerEnv, WorkerSource};
use roomrec_operator::build::{self, Resume};
use roomrec_operator::settings::Settings;
use roomrec_operator::validate::ValidatedJob;
use roomrec_worker::cli::{Cli, Command, RecordArgs};
use serde_json::{Value, json};

fn job(spec: Value) -> RecordingJob {
    serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1",
        "kind": "RecordingJob",
        "metadata": {"name": "class-43474", "namespace": "school", "uid": "0b7c3f5e-1111-2222-3333-444455556666"},
        "spec": spec,
    }))
    .unwrap()
}

/// The worker's flags as the pod's environment sets them: `RecordArgs` parsed from exactly
/// `env` (every other ROOMREC_* variable removed first).
fn parse_as_the_worker(env: &[(String, String)]) -> RecordArgs {
    for (name, _) in std::env::vars() {
        if name.starts_with("ROOMREC_") {
            // SAFETY: the only test of this binary; nothing else reads the environment now.
            unsafe { std::env::remove_var(name) };
        }
    }
    for (name, value) in env {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
    let Command::Record(args) = Cli::try_parse_from(["roomrec-worker", "record"])
        .unwrap_or_else(|e| panic!("the worker refuses the pod's environment: {e}"))
        .command;
    *args
}

/// What the parsed flags say, in the operator's terms.
fn as_worker_env(a: &RecordArgs) -> WorkerEnv {
    let source = match &a.source {
        Some(url) => WorkerSource::Url(url.clone()),
        None => WorkerSource::Relay(RelayStream {
            sdk_app_id: a.trtc_sdk_app_id.unwrap(),
            room_id: a.trtc_room_id,
            str_room_id: a.trtc_str_room_id.clone(),
            user_id: a.trtc_user_id.clone().unwrap(),
            stream: a.trtc_stream,
            stream_id: match (&a.trtc_stream_id, a.trtc_legacy_bizid) {
                (Some(id), _) => StreamIdForm::Explicit(id.clone()),
                (None, Some(bizid)) => StreamIdForm::Legacy { bizid },
                (None, None) => StreamIdForm::Standard,
            },
            play_domain: a.trtc_play_domain.clone().unwrap(),
            protocol: a.trtc_protocol,
        }),
    };
    WorkerEnv {
        source,
        mode: a.mode,
        storage: StorageTarget {
            url: a.storage.clone().unwrap(),
            region: a.region.clone(),
            endpoint: a.endpoint.clone(),
            virtual_host: a.s3_virtual_host,
            credentials_dir: a.credentials_dir.as_ref().map(|d| d.display().to_string()),
        },
        idle_timeout_seconds: u32::try_from(a.idle_timeout).unwrap(),
        max_duration_seconds: a.max_duration,
        segment_seconds: a.segment_seconds.map(|s| u32::try_from(s).unwrap()),
        segment_size: a.segment_size,
        faststart_scratch_dir: a
            .faststart
            .then(|| a.scratch_dir.as_ref().unwrap().display().to_string()),
        session_start: a.session_start.clone().unwrap(),
        spool_dir: a.spool_dir.as_ref().unwrap().display().to_string(),
        shutdown_timeout_seconds: a.shutdown_timeout,
        report_job: a.report_job.clone().unwrap(),
        report_interval_seconds: a.report_interval,
        termination_message: a
            .termination_message
            .as_ref()
            .unwrap()
            .display()
            .to_string(),
        metrics_address: a.metrics_address.map(|m| m.to_string()),
    }
}

/// The container's environment, with the downward API resolved as the kubelet would.
fn pod_env(pod: &Pod) -> Vec<(String, String)> {
    let name = pod.metadata.name.clone().unwrap();
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| {
            let value = match (e.value, e.value_from) {
                (Some(v), _) => v,
                (None, Some(from)) => {
                    assert_eq!(from.field_ref.unwrap().field_path, "metadata.name");
                    name.clone()
                }
                (None, None) => String::new(),
            };
            (e.name, value)
        })
        .collect()
}

#[test]
fn a_worker_pods_env_parses_back_into_the_same_settings() {
    let jobs = [
        // A TRTC relay, numeric room, heritage mode code, COS with credentials, limits.
        json!({
            "source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 43474, "strRoomId": "ignored",
                                 "userId": "recorder-1", "record": ["alice", "bob"],
                                 "playDomain": "play.example.com", "protocol": "flv", "stream": "aux"}},
            "mode": "02",
            "idleTimeoutSeconds": 45,
            "maxDurationSeconds": 600,
            "segment": {"durationSeconds": 300, "sizeBytes": 1073741824u64},
            "storage": {"cos": {"region": "ap-shanghai", "bucket": "class-1250000000", "path": "/trtc/",
                                "credentialsSecret": "cos-keys", "endpoint": "https://cos.internal:8443"}},
        }),
        // A string room on a legacy application, MP3.
        json!({
            "source": {"trtc": {"sdkAppId": 1400000001u64, "strRoomId": "math-7", "userId": "rec",
                                 "record": ["teacher"], "playDomain": "play.example.com",
                                 "legacyBizId": 8888}},
            "mode": "AudioMp3",
            "idleTimeoutSeconds": 300,
            "storage": {"s3": {"bucket": "recordings", "endpoint": "http://minio:9000", "region": "eu-1",
                               "virtualHost": true, "credentialsSecret": "s3-keys"}},
        }),
        // A URL source into a volume, classic MP4.
        json!({
            "source": {"url": "srt://cam.example.com:9000?streamid=read:cam-1"},
            "mode": "VideoMp4",
            "idleTimeoutSeconds": 5,
            "faststart": true,
            "storage": {"volume": {"claimName": "recordings", "path": "class-7"}},
        }),
    ];
    let settings = Settings::default();
    let mut checked = 0;
    for spec in jobs {
        let job = job(spec);
        let validated = ValidatedJob::of(&job).unwrap();
        for person in build::people(&job) {
            let resume = Resume {
                session_start: "2026-11-26T09:00:00Z".into(),
                recorded_seconds: 100.4,
            };
            let told = build::worker_env(&job, &validated, &person, &resume, &settings);
            let pod = build::pod(&job, &validated, &person, 2, &resume, &settings);
            let args = parse_as_the_worker(&pod_env(&pod));
            assert_eq!(as_worker_env(&args), told, "{}", person.user_id);
            // Reporting: the pod's own name, the job, the termination message.
            let reporting = args.reporting().unwrap();
            assert_eq!(reporting.name, pod.metadata.name.clone().unwrap());
            assert_eq!(reporting.job.unwrap().to_string(), "school/class-43474");
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "two people, then one each");

    // A job without stored credentials also passes the worker's whole validation, and what it
    // would record is the operator's choice: the URL, the mode, the key's session start.
    let job = job(json!({
        "source": {"url": "rtmp://live.example.com/live/cam"},
        "mode": "02", "idleTimeoutSeconds": 30,
        "storage": {"volume": {"claimName": "c"}},
    }));
    let validated = ValidatedJob::of(&job).unwrap();
    let person = &build::people(&job)[0];
    let resume = Resume {
        session_start: "2026-11-26T09:00:00Z".into(),
        recorded_seconds: 0.0,
    };
    let pod = build::pod(&job, &validated, person, 1, &resume, &settings);
    let config = parse_as_the_worker(&pod_env(&pod)).into_config().unwrap();
    assert_eq!(config.source.url(), "rtmp://live.example.com/live/cam");
    assert_eq!(config.mode, roomrec_api::Mode::AudioVideoMp4);
    assert_eq!(config.idle_timeout.as_secs(), 30);
    assert_eq!(config.session_start.to_string(), "2026-11-26T09:00:00Z");
    assert_eq!(config.source.user_id(), person.user_id);
}
