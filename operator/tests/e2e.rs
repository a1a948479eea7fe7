//! roomrec-operator end to end on the test bed: a real kube-apiserver (RBAC, CEL), the
//! controller manager (garbage collection), the node agent running the real worker binary,
//! nginx-rtmp with live publishers, the S3 store, and the COS stand-in (a test double that
//! checks COS signatures). The operator runs as a process under the chart's ServiceAccount, so
//! every test also proves the chart's RBAC is enough.

/// The parts of `tests/support/` these tests use, and those they build on (each file says
/// what it holds).
mod support {
    pub mod callbacks;
    pub mod cluster;
    pub mod cos;
    pub mod examples;
    pub mod jobs;
    pub mod kubectl;
    pub mod logs;
    pub mod operator_process;
    pub mod processes;
    pub mod s3;
    pub mod scene;
    pub mod stored_files;

    pub use self::{
        callbacks::*, cluster::*, cos::*, examples::*, jobs::*, kubectl::*, logs::*,
        operator_process::*, processes::*, s3::*, scene::*, stored_files::*,
    };
}

use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use roomrec_api::crd::RecordingJob;
use roomrec_testbed::wait_until;
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

/// What only these tests do with an operator process.
impl Operator {
    /// One replica without leader election (`--leader-elect` off, as with `replicas: 1`).
    async fn start_single(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with(namespace, extra, false).await
    }

    /// Started and serving /healthz, but not (yet) leading.
    async fn start_unready(namespace: &str) -> Self {
        let op = Self::spawn(namespace, &[], true).await;
        let url = op.url("/healthz");
        wait_until(Duration::from_secs(30), || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .unwrap_or_else(|_| panic!("the operator did not start: {}", op.log_text()));
        op
    }

    fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A client authenticated as the chart's operator ServiceAccount.
async fn operator_client() -> kube::Client {
    roomrec_testbed::control_plane::client_from_kubeconfig(&operator_kubeconfig().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_example_records_into_the_bucket() {
    cluster().await;
    let ns = bed().namespace("quickstart").await.unwrap();
    let op = Operator::start_single(&ns, &[]).await;
    let key = format!("quickstart-{ns}");
    let _publisher = publish(&key, None).await;
    apply_in(
        &ns,
        &example(
            "quickstart.yaml",
            &[
                (
                    "rtmp://127.0.0.1:1935/live/quickstart",
                    bed().rtmp_url(&key),
                ),
                ("http://127.0.0.1:9000", bed().s3_endpoint.clone()),
                ("path: quickstart", format!("path: {ns}")),
                ("maxDurationSeconds: 20", "maxDurationSeconds: 8".into()),
                // The heritage users' word for the mode: accepted, shown by its name.
                ("mode: AudioVideoMp4", "mode: \"02\"".into()),
            ],
        ),
    );
    let api = jobs(&ns).await;
    wait_phase(
        &api,
        "quickstart",
        &["Recording"],
        Duration::from_secs(60),
        &op,
    )
    .await;
    let listed = kubectl(&["get", "rj", "-n", &ns], None);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("quickstart") && listed.contains("Recording"),
        "{listed}"
    );

    let job = ended_as(
        &api,
        "quickstart",
        "Succeeded",
        Duration::from_secs(90),
        &op,
    )
    .await;
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.stop_reason.map(roomrec_api::StopReason::as_str),
        Some("max-duration")
    );
    assert_eq!(status.mode, Some(roomrec_api::Mode::AudioVideoMp4));
    let stored = kubectl(
        &[
            "get",
            "rj",
            "quickstart",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.mode}",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&stored.stdout),
        "02",
        "the spec keeps the user's word"
    );
    let total = assert_files_play(&job, &["h264", "aac"]);
    assert!((total - 8.0).abs() < 1.5, "recorded {total} s of 8");
    assert_eq!(status.file_count, Some(files(&job).len() as u32));
    assert!(status.started_at.is_some() && status.finished_at.is_some());
    let finished = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Finished")
        .unwrap();
    assert_eq!(
        (finished.status.as_str(), finished.reason.as_str()),
        ("True", "Succeeded")
    );

    let listed = kubectl(&["get", "rj", "-n", &ns], None);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("Succeeded") && listed.contains("AudioVideoMp4"),
        "{listed}"
    );

    // Owned objects carry the job as controller; events tell the story.
    let pods = worker_pods(&ns, &job).await;
    assert_eq!(pods.len(), 1);
    let owner = &pods[0].owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("RecordingJob", Some(true))
    );
    let events = events_in(&ns);
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(
        reasons.contains(&"Started") && reasons.contains(&"Succeeded"),
        "{reasons:?}"
    );

    let metrics = op.metrics().await;
    for line in [
        "roomrec_jobs_finished_total{phase=\"Succeeded\"} 1",
        "roomrec_jobs{phase=\"Succeeded\"} 1",
        "roomrec_jobs_started_total 1",
        "roomrec_leader 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    assert!(
        metrics.contains("roomrec_recorded_bytes_total")
            && !metrics.contains("roomrec_recorded_bytes_total 0\n")
    );
    assert_eq!(
        reqwest::get(op.url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_relay_example_records_each_person_into_cos_and_calls_back_once() {
    cluster().await;
    let ns = bed().namespace("trtc").await.unwrap();
    // Test double: Tencent COS cannot run here (support/cos.rs).
    let (cos, port) = examples_cos().await;
    let receiver = Receiver::start(1).await;
    let op = Operator::start(
        &ns,
        &[
            "--worker-env",
            &format!("ROOMREC_RESOLVE=class-1250000000.localhost=127.0.0.1:{port}"),
        ],
    )
    .await;
    let _alice = publish("1400000000_43474_alice_main", Some(10)).await;
    let _bob = publish("1400000000_43474_bob_main", Some(10)).await;
    apply_in(
        &ns,
        &example(
            "trtc-cos.yaml",
            &[
                ("play.example.com", format!("127.0.0.1:{}", bed().rtmp_port)),
                (
                    "      credentialsSecret: cos-keys",
                    format!(
                        "      credentialsSecret: cos-keys\n      endpoint: http://localhost:{port}"
                    ),
                ),
                ("idleTimeoutSeconds: 300", "idleTimeoutSeconds: 5".into()),
                ("https://lms.example.com/hooks/recording", receiver.url()),
            ],
        ),
    );
    let api = jobs(&ns).await;
    let job = ended_as(
        &api,
        "class-43474",
        "Succeeded",
        Duration::from_secs(120),
        &op,
    )
    .await;
    assert_files_play(&job, &["h264", "aac"]);
    for person in ["alice", "bob"] {
        let theirs: Vec<_> = files(&job)
            .into_iter()
            .filter(|f| f.user_id == person)
            .collect();
        assert!(
            !theirs.is_empty(),
            "no file for {person}: {}",
            status_json(&job)
        );
        for f in theirs {
            assert!(
                f.url.starts_with(
                    "https://class-1250000000.cos.ap-shanghai.myqcloud.com/trtc/1400000000_43474_"
                ),
                "{}",
                f.url
            );
        }
    }
    // Every request carried a valid COS signature (a refused signature answers 403; 404 is a
    // worker asking whether a part exists).
    let requests = cos.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PUT" || r.method == "POST")
    );
    assert!(
        requests.iter().all(|r| r.status != 403),
        "the COS stand-in refused: {requests:?}"
    );

    // The callback: refused once (HTTP 500), retried, delivered, never sent again.
    let delivered = wait_until(Duration::from_secs(30), || async {
        api.get("class-43474")
            .await
            .ok()
            .and_then(|j| j.status?.callback?.delivered_at)
            .is_some()
    })
    .await;
    assert!(delivered.is_ok(), "not delivered: {}", op.log_text());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(
        requests.len(),
        2,
        "expected one refused and one delivered POST"
    );
    let job = api.get("class-43474").await.unwrap();
    let state = job.status.clone().unwrap().callback.unwrap();
    assert_eq!(state.attempts, 2);
    let expected_files: Vec<Value> = {
        let mut files = files(&job);
        files.sort_by_key(|f| (f.user_id != "alice", f.part));
        files
            .iter()
            .map(|f| json!({"UserId": f.user_id, "RecordFile": f.url, "Status": 1, "Message": ""}))
            .collect()
    };
    let expected = json!({
        "SdkAppId": 1400000000u64, "RoomId": 43474, "UserId": "recorder-1", "StrRoomId": "",
        "Files": expected_files,
    });
    for (headers, body) in &requests {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        assert_eq!(serde_json::from_slice::<Value>(body).unwrap(), expected);
        assert_eq!(header("Idempotency-Key"), job.uid().unwrap());
        assert_eq!(header("X-Roomrec-Phase"), "Succeeded");
        let signature = header("X-Roomrec-Signature");
        let (t, v1) = signature.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        assert!((jiff::Timestamp::now().as_second() - t.parse::<i64>().unwrap()).abs() < 300);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"a-long-random-signing-key").unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&hex::decode(v1).unwrap())
            .expect("a valid signature");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_stop_ends_the_recording_gracefully() {
    let Scene {
        ns,
        op,
        api,
        publisher: _publisher,
    } = scene("stop", "stopme", json!({})).await;
    wait_recording_bytes(&api, "stopme", 1.0, &op).await;
    api.patch(
        "stopme",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"stop": true}})),
    )
    .await
    .unwrap();
    let job = ended_as(&api, "stopme", "Stopped", Duration::from_secs(60), &op).await;
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.stop_reason.map(roomrec_api::StopReason::as_str),
        Some("stop-requested")
    );
    assert!(assert_files_play(&job, &["h264", "aac"]) > 1.0);
    let active: Vec<Pod> = worker_pods(&ns, &job).await;
    assert!(active.is_empty(), "the stopped worker's pod is still there");

    // A stop is final.
    let back = api
        .patch(
            "stopme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"stop": false}})),
        )
        .await
        .unwrap_err();
    assert!(
        back.to_string()
            .contains("spec.stop cannot go back to false"),
        "{back}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_waits_until_its_files_are_closed() {
    let Scene {
        ns,
        op,
        api,
        publisher: _publisher,
    } = scene("delete", "deleteme", json!({})).await;
    let job = wait_recording_bytes(&api, "deleteme", 3.0, &op).await;
    let urls: Vec<String> = files(&job).iter().map(|f| f.url.clone()).collect();
    let seconds_before = files(&job).iter().map(|f| f.duration_seconds).sum::<f64>();
    api.delete("deleteme", &DeleteParams::default())
        .await
        .unwrap();
    // The finalizer holds the job while its worker closes the file.
    let held = api.get("deleteme").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let gone = wait_until(Duration::from_secs(60), || async {
        matches!(api.get_opt("deleteme").await, Ok(None))
    })
    .await;
    assert!(gone.is_ok(), "the job was not deleted: {}", op.log_text());
    for url in urls {
        let (duration, codecs) = probe(&url);
        assert!(codecs.iter().any(|c| c == "h264"), "{url}: {codecs:?}");
        assert!(
            duration >= seconds_before - 0.5,
            "{url} plays {duration} s, the status had {seconds_before} s before deletion"
        );
    }
    assert!(worker_pods(&ns, &job).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_nothing_recorded_is_lost() {
    let Scene {
        ns,
        op,
        api,
        publisher: _publisher,
    } = scene("killed", "crashy", json!({"maxDurationSeconds": 20})).await;
    let job = wait_recording_bytes(&api, "crashy", 5.0, &op).await;
    let pod = job.status.clone().unwrap().worker_pod.unwrap();
    let reported = files(&job)[0].duration_seconds;
    let pid = worker_pid(&pod).expect("the worker process");
    unsafe { libc::kill(pid, libc::SIGKILL) };

    let job = ended_as(&api, "crashy", "Succeeded", Duration::from_secs(120), &op).await;
    let status = job.status.clone().unwrap();
    assert_eq!(status.workers[0].attempts, 2, "{}", status_json(&job));
    let files = files(&job);
    assert!(
        files.len() >= 2,
        "{}\n{}",
        status_json(&job),
        worker_logs(&ns)
    );
    let mut parts: Vec<u32> = files.iter().map(|f| f.part).collect();
    parts.dedup();
    assert_eq!(parts.len(), files.len(), "part numbers repeat");
    let first = files.iter().min_by_key(|f| f.part).unwrap();
    assert!(
        first.duration_seconds >= reported - 0.5,
        "the killed worker's part lost what it had reported"
    );
    let total = assert_files_play(&job, &["h264", "aac"]);
    assert!(
        total >= 20.0 - 4.0,
        "only {total} s of 20 recorded across the crash"
    );
    assert!(
        op.metrics()
            .await
            .contains("roomrec_worker_restarts_total 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_takes_over_without_a_second_worker() {
    let Scene {
        ns,
        op: mut first,
        api,
        publisher: _publisher,
    } = scene("restart", "steady", json!({"maxDurationSeconds": 15})).await;
    wait_recording_bytes(&api, "steady", 1.0, &first).await;
    first.kill();
    let _ = first.child.wait().await;
    let second = Operator::start(&ns, &[]).await;
    let job = ended_as(
        &api,
        "steady",
        "Succeeded",
        Duration::from_secs(90),
        &second,
    )
    .await;
    assert_eq!(
        worker_pods(&ns, &job).await.len(),
        1,
        "a second worker was started"
    );
    assert_eq!(job.status.clone().unwrap().attempts, Some(1));
    assert_files_play(&job, &["h264"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_storage_or_secret_holds_the_job_with_the_fix_then_it_runs() {
    cluster().await;
    let ns = bed().namespace("secret").await.unwrap();
    // No --default-storage: a job without spec.storage cannot start.
    let op = Operator::start(&ns, &[]).await;
    let key = format!("secret-{ns}");
    let api = jobs(&ns).await;
    let mut job = url_job(
        "waits",
        &bed().rtmp_url(&key),
        json!({"maxDurationSeconds": 3}),
    );
    let storage = job.spec.storage.take();
    job.spec.mode = None;
    job.spec.idle_timeout_seconds = None;
    api.create(&PostParams::default(), &job).await.unwrap();
    let no_storage = ["spec.storage is not set and the operator has no default storage"];
    wait_held(&api, "waits", "InvalidSpec", &no_storage, &op).await;

    // Adding the storage is allowed (it was never set); the Secret it names is missing next.
    api.patch(
        "waits",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"storage": storage}})),
    )
    .await
    .unwrap();
    let no_secret = ["Secret s3-keys (spec.storage.s3.credentialsSecret) not found"];
    wait_held(&api, "waits", "InvalidReference", &no_secret, &op).await;

    let _publisher = publish(&key, None).await;
    s3_secret(&ns).await;
    let job = ended_as(&api, "waits", "Succeeded", Duration::from_secs(90), &op).await;
    // The operator's default mode was written into the spec (heritage default: MP3).
    assert_eq!(job.spec.mode, Some(roomrec_api::crd::Mode::AudioMp3));
    assert_eq!(job.spec.idle_timeout_seconds, Some(300));
    assert_files_play(&job, &["mp3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_are_refused_with_the_field_and_the_fix() {
    cluster().await;
    let ns = bed().namespace("invalid").await.unwrap();
    let api = jobs(&ns).await;
    let trtc = json!({"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["alice"], "playDomain": "play.example.com"});
    let s3 = json!({"s3": {"bucket": "recordings"}});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"source": {"url": "rtmp://h/live/a", "trtc": trtc}, "storage": s3}),
            "set exactly one of trtc",
        ),
        (
            json!({"source": {}, "storage": s3}),
            "set exactly one of trtc",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {}}),
            "set exactly one of cos, s3 or volume",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {"s3": {"bucket": "recordings"}, "volume": {"claimName": "v"}}}),
            "set exactly one of cos, s3 or volume",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "userId": "bot", "record": ["a"], "playDomain": "p.example.com"}}, "storage": s3}),
            "set roomId",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": [], "playDomain": "p.example.com"}}, "storage": s3}),
            "set record (the people to record, by user id) or wholeRoom",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a"], "wholeRoom": {}, "playDomain": "p.example.com"}}, "storage": s3}),
            "set record (the people to record, by user id) or wholeRoom",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"], "playDomain": "p.example.com"}}, "storage": s3}),
            "spec.source.trtc.record: Too many: 17: must have at most 16 items",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "wholeRoom": {"maxPeople": 0}, "playDomain": "p.example.com"}}, "storage": s3}),
            "wholeRoom.maxPeople must be between 1 and 256",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "wholeRoom": {}, "startOn": "create", "playDomain": "p.example.com"}}, "storage": s3}),
            "startOn: create cannot go with wholeRoom",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "wholeRoom": {}, "playDomain": "p.example.com", "relay": "start", "pushDomain": "push.example.com", "userSigSecret": {"name": "s", "key": "k"}}}, "storage": s3}),
            "userSigSecret signs one identity",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a", "a"], "playDomain": "p.example.com"}}, "storage": s3}),
            "lists a user id twice",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["al ice"], "playDomain": "p.example.com"}}, "storage": s3}),
            "each user id must be 1 to 32",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 42, "roomId": 1, "userId": "bot", "record": ["a"], "playDomain": "p.example.com"}}, "storage": s3}),
            "must be a TRTC SdkAppId",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a"], "playDomain": "rtmp://p.example.com/live"}}, "storage": s3}),
            "playDomain must be a host name",
        ),
        (
            json!({"source": {"url": "ftp://h/a"}, "storage": s3}),
            "spec.source.url must be an rtmp://",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "idleTimeoutSeconds": 1}),
            "spec.idleTimeoutSeconds must be between 5 and 86400",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "maxDurationSeconds": 0}),
            "spec.maxDurationSeconds must be between 1",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {"cos": {"region": "ap-shanghai", "bucket": "class"}}}),
            "ending in the APPID",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {"cos": {"region": "Shanghai", "bucket": "class-1250000000"}}}),
            "spec.storage.cos.region must be a COS region",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {"volume": {"claimName": "v", "path": "../up"}}}),
            "must be relative",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "segment": {}}),
            "set durationSeconds, sizeBytes or both",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "segment": {"durationSeconds": 2}}),
            "durationSeconds must be between 10",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "callback": {"url": "lms.example.com/hook"}}),
            "spec.callback.url must be an http",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "mode": "Mp5"}),
            "Unsupported value: \"Mp5\"",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "mode": "AudioMp3", "faststart": true}),
            "spec.faststart makes classic MP4 files: set spec.mode to VideoMp4 or AudioVideoMp4",
        ),
        (
            // The operator's default mode could be AudioMp3: faststart needs the mode set.
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "faststart": true}),
            "not left to the operator's default",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "segment": {"sizeBytes": 1000}}),
            "spec.segment.sizeBytes must be at least 1048576",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a"], "playDomain": "p.example.com", "userSigSecret": {"name": "s", "key": "k"}, "secretKeySecret": {"name": "s", "key": "k"}}}, "storage": s3}),
            "set userSigSecret or secretKeySecret, not both",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a"], "playDomain": "p.example.com", "relay": "start", "secretKeySecret": {"name": "s", "key": "k"}}}, "storage": s3}),
            "pushDomain is required with relay: start",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a"], "playDomain": "p.example.com", "relay": "start", "pushDomain": "push.example.com"}}, "storage": s3}),
            "relay: start needs the recording identity's UserSig",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a", "b"], "playDomain": "p.example.com", "relay": "start", "pushDomain": "push.example.com", "userSigSecret": {"name": "s", "key": "k"}}}, "storage": s3}),
            "userSigSecret signs one identity",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a"], "playDomain": "p.example.com", "relay": "start", "pushDomain": "push.example.com", "secretKeySecret": {"name": "s", "key": "k"}, "legacyBizId": 8888}}, "storage": s3}),
            "legacyBizId is for playing an existing relay",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "bot", "record": ["a"], "playDomain": "p.example.com", "relay": "start", "pushDomain": "rtmp://push.example.com", "secretKeySecret": {"name": "s", "key": "k"}}}, "storage": s3}),
            "pushDomain must be a host name",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 0, "userId": "bot", "record": ["a"], "playDomain": "p.example.com"}}, "storage": s3}),
            "roomId must be between 1 and 4294967294",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "strRoomId": "math/7", "userId": "bot", "record": ["a"], "playDomain": "p.example.com"}}, "storage": s3}),
            "strRoomId must be 1 to 64 characters",
        ),
        (
            json!({"source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 1, "userId": "the bot", "record": ["a"], "playDomain": "p.example.com"}}, "storage": s3}),
            "userId must be 1 to 32 letters",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {"cos": {"region": "ap-shanghai", "bucket": "class-1250000000", "endpoint": "cos.internal"}}}),
            "spec.storage.cos.endpoint must be http(s)://host[:port]",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {"s3": {"bucket": "Recordings"}}}),
            "spec.storage.s3.bucket must be a valid bucket name",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": {"s3": {"bucket": "recordings", "endpoint": "minio:9000"}}}),
            "spec.storage.s3.endpoint must be http(s)://host[:port]",
        ),
        (
            json!({"source": {"url": "rtmp://h/live/a"}, "storage": s3, "mode": "00", "faststart": true}),
            "spec.faststart makes classic MP4 files: set spec.mode to VideoMp4 or AudioVideoMp4",
        ),
    ];
    // Every CEL rule of spec has a case here that trips it (immutability is tested below): a
    // rule added without one fails this test.
    let mut messages = Vec::new();
    collect_rule_messages(
        &roomrec_api::crdgen::crd_value()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"],
        &mut messages,
    );
    let untested: Vec<&String> = messages
        .iter()
        .filter(|m| {
            !["cannot change", "cannot be removed", "cannot go back"]
                .iter()
                .any(|i| m.contains(i))
        })
        .filter(|m| !cases.iter().any(|(_, expected)| m.contains(expected)))
        .collect();
    assert!(
        untested.is_empty(),
        "CEL rules no case trips: {untested:#?}"
    );
    let resource = kube::api::ApiResource::erase::<RecordingJob>(&());
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(bed().client().await.unwrap(), &ns, &resource);
    for (i, (spec, expected)) in cases.iter().enumerate() {
        let object: Value = json!({"apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob", "metadata": {"name": format!("bad-{i}")}, "spec": spec});
        // Sent as raw JSON: some cases (an unknown mode) are not even valid Rust values.
        let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
        let error = raw
            .create(&PostParams::default(), &object)
            .await
            .expect_err(&format!("case {i} was accepted: {spec}"));
        let text = error.to_string();
        assert!(
            text.contains(expected),
            "case {i}: expected {expected:?} in {text}"
        );
    }

    // Source, storage, mode and faststart are immutable.
    api.create(
        &PostParams::default(),
        &url_job("fixed", "rtmp://h/live/a", json!({})),
    )
    .await
    .unwrap();
    for (patch, expected) in [
        (
            json!({"spec": {"source": {"url": "rtmp://h/live/b"}}}),
            "spec.source cannot change",
        ),
        (
            json!({"spec": {"mode": "AudioMp3"}}),
            "spec.mode cannot change",
        ),
        (
            json!({"spec": {"storage": {"s3": {"bucket": "other"}}}}),
            "spec.storage cannot change",
        ),
        (
            json!({"spec": {"mode": null}}),
            "spec.mode cannot be removed",
        ),
        (
            json!({"spec": {"storage": null}}),
            "spec.storage cannot be removed",
        ),
        (
            json!({"spec": {"faststart": true}}),
            "spec.faststart cannot change",
        ),
    ] {
        let error = api
            .patch("fixed", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cannot_do_more_than_the_chart_grants() {
    cluster().await;
    let ns = bed().namespace("rbac").await.unwrap();
    let client = operator_client().await;
    let code = |r: Result<(), kube::Error>| match r {
        Ok(()) => 200,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    // The grant an operator watching this namespace gets (operator.secretNamespaces).
    grant_secrets(&ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // Allowed: get one Secret by name (404: authorized, absent).
    assert_eq!(code(secrets.get("anything").await.map(|_| ())), 404);
    // Refused: reading a Secret in a namespace the chart did not grant (it exists there),
    // any Secret cluster-wide, listing Secrets, deleting RecordingJobs, touching Deployments
    // or Nodes.
    let elsewhere = bed().namespace("rbac-ungranted").await.unwrap();
    s3_secret(&elsewhere).await;
    let ungranted: Api<Secret> = Api::namespaced(client.clone(), &elsewhere);
    assert_eq!(code(ungranted.get("s3-keys").await.map(|_| ())), 403);
    let everywhere: Api<Secret> = Api::all(client.clone());
    assert_eq!(
        code(everywhere.list(&ListParams::default()).await.map(|_| ())),
        403
    );
    assert_eq!(
        code(secrets.list(&ListParams::default()).await.map(|_| ())),
        403
    );
    let jobs: Api<RecordingJob> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        code(jobs.delete("x", &DeleteParams::default()).await.map(|_| ())),
        403
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns);
    assert_eq!(
        code(deployments.list(&ListParams::default()).await.map(|_| ())),
        403
    );
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    assert_eq!(
        code(nodes.list(&ListParams::default()).await.map(|_| ())),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_secrets_the_operator_may_not_read_is_held_naming_the_namespace_and_the_chart_value()
 {
    cluster().await;
    let ns = bed().namespace("ungranted").await.unwrap();
    s3_secret(&ns).await;
    // As an operator watching every namespace sees one operator.secretNamespaces leaves out.
    let op = Operator::spawn_ungranted(&ns, &[], true).await;
    op.wait_ready().await;
    let key = format!("ungranted-{ns}");
    let api = jobs(&ns).await;
    let job = url_job(
        "ungranted",
        &bed().rtmp_url(&key),
        json!({"maxDurationSeconds": 3}),
    );
    api.create(&PostParams::default(), &job).await.unwrap();
    let in_namespace = format!("may not read Secrets in namespace {ns} ");
    let fix = format!("add {ns} to the chart value operator.secretNamespaces");
    let problem = [
        in_namespace.as_str(),
        "spec.storage.s3.credentialsSecret",
        fix.as_str(),
    ];
    wait_held(&api, "ungranted", "SecretsNotGranted", &problem, &op).await;
    let events = events_in(&ns);
    assert!(
        events.iter().any(|e| {
            e["reason"] == "SecretsNotGranted"
                && e["type"] == "Warning"
                && e["note"].as_str().unwrap_or("").contains(&fix)
        }),
        "no SecretsNotGranted warning naming the chart value: {events:#?}"
    );

    // Granted, as the chart does for a listed namespace: the job starts at the next check.
    grant_secrets(&ns);
    let _publisher = publish(&key, None).await;
    let job = ended_as(&api, "ungranted", "Succeeded", Duration::from_secs(90), &op).await;
    assert_files_play(&job, &["h264"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_image_or_service_account_the_chart_does_not_allow_is_refused() {
    cluster().await;
    let ns = bed().namespace("overrides").await.unwrap();
    s3_secret(&ns).await;
    // No admission policy here: the operator's own check is what refuses.
    let allowed = "registry.example.com/roomrec/*";
    let op = Operator::start(&ns, &["--allowed-worker-images", allowed]).await;
    let api = jobs(&ns).await;
    let asking = |name: &str, worker: Value| {
        let mut job = url_job(name, "rtmp://127.0.0.1:1/live/never", json!({}));
        job.spec.worker = Some(serde_json::from_value(worker).unwrap());
        job
    };
    let refused = [
        (
            "own-image",
            json!({"image": "evil.example.com/miner:1"}),
            [
                "spec.worker.image evil.example.com/miner:1 ",
                "chart value worker.overrides.allowedImages",
            ],
        ),
        (
            "own-account",
            json!({"serviceAccountName": "default"}),
            [
                "spec.worker.serviceAccountName ",
                "chart value worker.overrides.allowServiceAccount=true",
            ],
        ),
    ];
    for (name, worker, _) in &refused {
        let job = asking(name, worker.clone());
        api.create(&PostParams::default(), &job).await.unwrap();
    }
    for (name, _, problem) in &refused {
        wait_held(&api, name, "WorkerOverrideNotAllowed", problem, &op).await;
    }
    // An image the chart allows (by prefix) is what the worker pod runs.
    let image = "registry.example.com/roomrec/roomrec-worker:e2e";
    let job = asking("allowed-image", json!({ "image": image }));
    let job = api.create(&PostParams::default(), &job).await.unwrap();
    let started = wait_until(Duration::from_secs(30), || async {
        !worker_pods(&ns, &job).await.is_empty()
    })
    .await;
    assert!(started.is_ok(), "no worker pod: {}", op.log_text());
    let pod = worker_pods(&ns, &job).await.remove(0);
    let first_worker = pod.name_any();
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some(image)
    );

    // Changed after the start (the check before it passed), the image is refused for the
    // replacement of a deleted worker: no pod runs it, and a Warning says why.
    let evil = "evil.example.com/miner:1";
    api.patch(
        "allowed-image",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"worker": {"image": evil}}})),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(bed().client().await.unwrap(), &ns);
    pods.delete(&first_worker, &DeleteParams::default())
        .await
        .unwrap();
    let warned = wait_until(Duration::from_secs(30), || async {
        events_in(&ns).iter().any(|e| {
            e["regarding"]["name"] == "allowed-image"
                && e["reason"] == "WorkerOverrideNotAllowed"
                && e["note"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("spec.worker.image {evil} "))
        })
    })
    .await;
    assert!(warned.is_ok(), "no warning: {}", op.log_text());
    let images: Vec<Option<String>> = worker_pods(&ns, &job)
        .await
        .into_iter()
        .map(|p| p.spec.unwrap().containers[0].image.clone())
        .collect();
    assert!(
        !images.contains(&Some(evil.into())),
        "a worker runs {evil}: {images:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over() {
    cluster().await;
    let ns = bed().namespace("leader").await.unwrap();
    let mut leader = Operator::start(&ns, &[]).await;
    let standby = Operator::start_unready(&ns).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = |op: &Operator| {
        let url = op.url("/readyz");
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    assert!(!ready(&standby).await, "two replicas lead at once");
    assert!(standby.metrics().await.contains("roomrec_leader 0"));

    // SIGTERM: the leader stops reconciling, gives the lease up and exits 0 — so the standby
    // leads at its next try, long before the lease (6 s) would expire.
    let pid = leader.child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let exited = tokio::time::timeout(Duration::from_secs(10), leader.child.wait())
        .await
        .expect("the operator exits within 10 s of SIGTERM")
        .unwrap();
    assert!(exited.success(), "{exited:?}: {}", leader.log_text());
    assert!(leader.log_text().contains("shutting down"));
    let started = std::time::Instant::now();
    let took_over = wait_until(Duration::from_secs(30), || ready(&standby)).await;
    assert!(
        took_over.is_ok(),
        "the standby did not take over: {}",
        standby.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the standby waited {:?}: the lease was not released",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_succeed_fails_the_job_without_retrying() {
    let Scene {
        ns,
        op,
        api,
        publisher: _publisher,
    } = scene_with("doomed", "doomed", json!({}), |job| {
        s3_of(job).bucket = "no-such-bucket".into()
    })
    .await;
    let job = ended_as(&api, "doomed", "Failed", Duration::from_secs(60), &op).await;
    let status = job.status.clone().unwrap();
    assert_eq!(status.attempts, Some(1), "a permanent failure was retried");
    let finished = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Finished")
        .unwrap();
    assert!(
        finished.message.contains("no-such-bucket"),
        "{}",
        finished.message
    );
    assert!(
        events_in(&ns)
            .iter()
            .any(|e| e["reason"] == "WorkerFailed" && e["type"] == "Warning"),
        "no WorkerFailed warning event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_keeps_failing_stops_after_its_retry_budget() {
    cluster().await;
    let ns = bed().namespace("nocallback").await.unwrap();
    s3_secret(&ns).await;
    let receiver = Receiver::start(usize::MAX).await;
    let op = Operator::start(&ns, &["--callback-max-attempts", "3"]).await;
    let key = format!("nocallback-{ns}");
    let _publisher = publish(&key, None).await;
    let api = jobs(&ns).await;
    let job = url_job(
        "unheard",
        &bed().rtmp_url(&key),
        json!({"maxDurationSeconds": 3, "callback": {"url": receiver.url()}}),
    );
    api.create(&PostParams::default(), &job).await.unwrap();
    ended_as(&api, "unheard", "Succeeded", Duration::from_secs(60), &op).await;
    let gave_up = wait_until(Duration::from_secs(30), || async {
        api.get("unheard")
            .await
            .ok()
            .and_then(|j| j.status?.callback)
            .is_some_and(|c| c.gave_up)
    })
    .await;
    assert!(
        gave_up.is_ok(),
        "the callback was not given up: {}",
        op.log_text()
    );
    let state = api
        .get("unheard")
        .await
        .unwrap()
        .status
        .unwrap()
        .callback
        .unwrap();
    assert_eq!(state.attempts, 3);
    assert!(state.delivered_at.is_none());
    assert!(state.last_error.unwrap().contains("500"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        3,
        "more POSTs than the budget"
    );
    assert!(
        op.metrics()
            .await
            .contains("roomrec_callback_failures_total 3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_job_whose_worker_ignores_sigterm_is_released_at_the_finalize_timeout() {
    cluster().await;
    let ns = bed().namespace("stubborn").await.unwrap();
    s3_secret(&ns).await;
    // A "worker" that ignores SIGTERM (an ignored signal stays ignored across exec), found by
    // the node agent under its image's name in cargo's target directory.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let program = target.join("debug/roomrec-worker-ignores-sigterm");
    std::fs::write(&program, "#!/bin/sh\ntrap '' TERM\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // An image of the job's choosing runs only when the chart allows it.
    let image = "ghcr.io/roomrec/roomrec-worker-ignores-sigterm:e2e";
    let op = Operator::start(
        &ns,
        &[
            "--finalize-timeout-seconds",
            "5",
            "--allowed-worker-images",
            image,
        ],
    )
    .await;
    let api = jobs(&ns).await;
    let mut job = url_job("stubborn", "rtmp://127.0.0.1:1/live/never", json!({}));
    job.spec.worker = Some(roomrec_api::crd::WorkerOverrides {
        image: Some(image.into()),
        ..Default::default()
    });
    api.create(&PostParams::default(), &job).await.unwrap();
    wait_phase(
        &api,
        "stubborn",
        &["Recording"],
        Duration::from_secs(60),
        &op,
    )
    .await;

    api.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = std::time::Instant::now();
    // Held while the worker should be closing its files…
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        api.get_opt("stubborn").await.unwrap().is_some(),
        "released before the finalize timeout"
    );
    // …and released once the timeout passed, with a warning saying what was left.
    let gone = wait_until(Duration::from_secs(30), || async {
        matches!(api.get_opt("stubborn").await, Ok(None))
    })
    .await;
    assert!(
        gone.is_ok(),
        "the job was never released: {}",
        op.log_text()
    );
    let took = deleted.elapsed();
    // The timeout counts from `deletionTimestamp`, which the API server writes in whole
    // seconds: up to one second earlier than our clock read.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "released after {took:?}"
    );
    let events = events_in(&ns);
    let timeout = events
        .iter()
        .find(|e| e["reason"] == "FinalizeTimeout")
        .unwrap_or_else(|| panic!("no FinalizeTimeout event: {events:#?}"));
    assert_eq!(timeout["type"], "Warning");
    assert!(
        timeout["note"]
            .as_str()
            .unwrap()
            .contains("did not close their files within 5 s"),
        "{timeout:#}"
    );
}

/// Every `x-kubernetes-validations` message under `schema`.
fn collect_rule_messages(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for rule in map
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.extend(rule["message"].as_str().map(str::to_string));
            }
            map.values().for_each(|v| collect_rule_messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_rule_messages(v, out)),
        _ => {}
    }
}
