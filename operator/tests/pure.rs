//! The pure parts of the operator from fixtures: the committed CRD, the worker pod and RBAC
//! build, the decisions of `progress::plan`, and the callback payload and signature.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use roomrec_api::crd::{Phase, RecordingJob};
use roomrec_operator::build::{self, Resume};
use roomrec_operator::callback;
use roomrec_operator::progress::{self, plan};
use roomrec_operator::settings::{Settings, WorkerOverridePolicy};
use roomrec_operator::validate::{ValidatedJob, refused_override};
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn the_charts_crd_template_matches_the_code() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/roomrec/templates/crd.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == roomrec_api::crdgen::chart_crd_template(),
        "charts/roomrec/templates/crd.yaml is stale: run `cargo run -p roomrec-operator --bin crdgen -- --chart > charts/roomrec/templates/crd.yaml`"
    );
}

#[test]
fn the_committed_crd_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/recordingjob.yaml");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == roomrec_api::crdgen::crd_yaml(),
        "crds/recordingjob.yaml is stale: run `cargo run -p roomrec-operator --bin crdgen > crds/recordingjob.yaml`"
    );
}

fn job(spec: Value, status: Value) -> RecordingJob {
    serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1",
        "kind": "RecordingJob",
        "metadata": {"name": "class-43474", "namespace": "school", "uid": "0b7c3f5e-1111-2222-3333-444455556666", "generation": 1},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn trtc_spec() -> Value {
    json!({
        "source": {"trtc": {"sdkAppId": 1400000000u64, "roomId": 43474, "userId": "recorder-1",
                             "record": ["alice", "bob"], "playDomain": "play.example.com"}},
        "mode": "AudioVideoMp4",
        "idleTimeoutSeconds": 300,
        "storage": {"cos": {"region": "ap-shanghai", "bucket": "class-1250000000", "path": "/trtc/", "credentialsSecret": "cos-keys"}},
        "maxDurationSeconds": 600,
        "segment": {"durationSeconds": 300},
    })
}

fn env_of(pod: &Pod) -> Vec<(String, String)> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_else(|| "<from>".into())))
        .collect()
}

#[test]
fn a_worker_pod_carries_the_job_as_env_and_secrets_only_by_reference() {
    let job = job(trtc_spec(), json!({}));
    let people = build::people(&job);
    let pod = build::pod(
        &job,
        &ValidatedJob::of(&job).unwrap(),
        &people[1],
        3,
        &Resume {
            session_start: "2026-11-26T09:00:00Z".into(),
            recorded_seconds: 100.4,
        },
        &Settings::default(),
    );
    assert_eq!(pod.metadata.name.as_deref(), Some("class-43474-1-3"));
    let env = env_of(&pod);
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(get("ROOMREC_TRTC_USER_ID"), Some("bob"));
    assert_eq!(get("ROOMREC_TRTC_ROOM_ID"), Some("43474"));
    assert_eq!(get("ROOMREC_MODE"), Some("02"));
    assert_eq!(get("ROOMREC_STORAGE"), Some("cos://class-1250000000/trtc"));
    assert_eq!(get("ROOMREC_REGION"), Some("ap-shanghai"));
    // What is left of the maximum, rounded up.
    assert_eq!(get("ROOMREC_MAX_DURATION_SECONDS"), Some("500"));
    assert_eq!(get("ROOMREC_SEGMENT_SECONDS"), Some("300"));
    assert_eq!(get("ROOMREC_SESSION_START"), Some("2026-11-26T09:00:00Z"));
    assert_eq!(get("ROOMREC_REPORT_JOB"), Some("school/class-43474"));
    assert_eq!(get("ROOMREC_POD_NAME"), Some("<from>"));
    assert_eq!(
        get("ROOMREC_CREDENTIALS_DIR"),
        Some("/var/run/secrets/roomrec/storage")
    );
    // No value of any Secret: the credentials are a mounted volume.
    let spec = pod.spec.as_ref().unwrap();
    let secret = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|v| v.secret.clone())
        .unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("cos-keys"));
    // What could leak a credential: an environment variable from a Secret (it would show in
    // /proc/PID/environ and `kubectl describe`), or a writable or world-readable mount.
    let container = &spec.containers[0];
    assert!(
        container.env.iter().flatten().all(|e| e
            .value_from
            .as_ref()
            .is_none_or(|f| f.secret_key_ref.is_none())),
        "a Secret reaches the worker as an environment variable"
    );
    assert!(
        container.env_from.is_none(),
        "envFrom could import a whole Secret"
    );
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/var/run/secrets/roomrec/storage")
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(
        secret.default_mode,
        Some(0o440),
        "readable by the worker's group only"
    );
    // Hardened by default.
    let security = spec.containers[0].security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    let pod_security = spec.security_context.clone().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security.seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    // Owned by the job, labelled for the operator's watch.
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("RecordingJob", Some(true))
    );
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["roomrec.dev/person"], "1");
    assert_eq!(labels["roomrec.dev/attempt"], "3");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "roomrec-operator");
}

#[test]
fn a_worker_image_or_service_account_of_the_jobs_choosing_needs_the_charts_leave() {
    const OWN_IMAGE: &str = "ghcr.io/roomrec/roomrec-worker:0.1.0";
    let asking = |worker: Value| {
        job(
            json!({"source": {"url": "rtmp://h/live/cam"}, "worker": worker}),
            json!({}),
        )
    };
    let refused = |worker: Value, policy: &WorkerOverridePolicy| {
        refused_override(&asking(worker), policy, OWN_IMAGE)
    };
    let nothing_allowed = WorkerOverridePolicy::default();
    // Asking for neither, or for the operator's own image: nothing to refuse.
    for worker in [
        json!({}),
        json!({"image": OWN_IMAGE}),
        json!({"resources": {"limits": {"memory": "1Gi"}}, "nodeSelector": {"pool": "rec"}}),
    ] {
        assert_eq!(refused(worker.clone(), &nothing_allowed), None, "{worker}");
    }
    // By default, any other image and any ServiceAccount are refused, naming the field and the
    // chart value that allows them.
    let image = refused(
        json!({"image": "evil.example.com/miner:1"}),
        &nothing_allowed,
    )
    .unwrap();
    assert!(
        image.starts_with("spec.worker.image evil.example.com/miner:1 ")
            && image.contains("worker.overrides.allowedImages"),
        "{image}"
    );
    let account = refused(json!({"serviceAccountName": "admin"}), &nothing_allowed).unwrap();
    assert!(
        account.starts_with("spec.worker.serviceAccountName ")
            && account.contains("worker.overrides.allowServiceAccount=true"),
        "{account}"
    );
    // Allowed: exact references and prefixes ending in `*`, nothing that only looks alike.
    let allowing = WorkerOverridePolicy {
        allowed_images: vec![
            "registry.example.com/roomrec/*".into(),
            "ghcr.io/roomrec/roomrec-worker:debug".into(),
        ],
        allow_service_account: true,
    };
    for allowed in [
        "registry.example.com/roomrec/roomrec-worker:2",
        "ghcr.io/roomrec/roomrec-worker:debug",
    ] {
        assert_eq!(
            refused(json!({"image": allowed}), &allowing),
            None,
            "{allowed}"
        );
    }
    for not_allowed in [
        "registry.example.com/other/roomrec-worker:2",
        "registry.example.com/roomrec",
        "ghcr.io/roomrec/roomrec-worker:debug2",
    ] {
        assert!(
            refused(json!({"image": not_allowed}), &allowing).is_some(),
            "{not_allowed} was allowed"
        );
    }
    assert_eq!(
        refused(json!({"serviceAccountName": "admin"}), &allowing),
        None
    );
}

#[test]
fn worker_metrics_are_served_on_a_named_port_unless_turned_off() {
    let job = job(trtc_spec(), json!({}));
    let person = &build::people(&job)[0];
    let pod = |port: u16| {
        let settings = Settings {
            worker_metrics_port: port,
            ..Settings::default()
        };
        build::pod(
            &job,
            &ValidatedJob::of(&job).unwrap(),
            person,
            1,
            &Resume::default(),
            &settings,
        )
    };
    let on = pod(9191);
    let address = env_of(&on)
        .into_iter()
        .find(|(k, _)| k == "ROOMREC_METRICS_ADDRESS")
        .map(|(_, v)| v);
    assert_eq!(address.as_deref(), Some("0.0.0.0:9191"));
    let ports = on.spec.unwrap().containers[0].ports.clone().unwrap();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port),
        (Some("metrics"), 9191),
        "the PodMonitor scrapes the port named metrics"
    );
    assert_eq!(
        Settings::default().worker_metrics_port,
        9090,
        "the chart's worker.metricsPort"
    );
    let off = pod(0);
    assert!(
        env_of(&off)
            .iter()
            .all(|(k, _)| k != "ROOMREC_METRICS_ADDRESS")
    );
    assert!(off.spec.unwrap().containers[0].ports.is_none());
}

#[test]
fn faststart_asks_the_worker_for_classic_mp4_with_a_scratch_volume_of_its_own() {
    let build = |spec: Value| {
        let job = job(spec, json!({}));
        let people = build::people(&job);
        build::pod(
            &job,
            &ValidatedJob::of(&job).unwrap(),
            &people[0],
            1,
            &Resume::default(),
            &Settings::default(),
        )
    };
    let mut spec = trtc_spec();
    let plain = build(spec.clone());
    spec["faststart"] = json!(true);
    let pod = build(spec);
    let env = env_of(&pod);
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(get("ROOMREC_FASTSTART"), Some("true"));
    assert_eq!(get("ROOMREC_SCRATCH_DIR"), Some("/var/cache/roomrec"));
    let spec = pod.spec.unwrap();
    let mount = spec.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/var/cache/roomrec")
        .cloned()
        .expect("the scratch directory is mounted");
    let volume = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    // No sizeLimit: going past one gets a pod evicted; the worker checks the free space itself.
    assert_eq!(volume.empty_dir.unwrap().size_limit, None);
    assert!(
        env_of(&plain)
            .iter()
            .all(|(k, _)| k != "ROOMREC_FASTSTART" && k != "ROOMREC_SCRATCH_DIR")
    );
}

#[test]
fn the_worker_may_patch_only_its_own_jobs_status() {
    let job = job(trtc_spec(), json!({}));
    let role = build::role(&job);
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources,
        Some(vec!["recordingjobs/status".to_string()])
    );
    assert_eq!(
        rules[0].resource_names,
        Some(vec!["class-43474".to_string()])
    );
    assert_eq!(rules[0].verbs, vec!["get".to_string(), "patch".to_string()]);
    let binding = build::role_binding(&job);
    assert_eq!(binding.subjects.unwrap()[0].name, "class-43474-worker");
}

#[test]
fn long_job_names_give_short_unique_child_names() {
    let long = "a".repeat(70);
    let mut one = job(trtc_spec(), json!({}));
    one.metadata.name = Some(long.clone());
    let mut two = one.clone();
    two.metadata.uid = Some("99999999-0000".into());
    let person = &build::people(&one)[0];
    let (a, b) = (
        build::pod_name(&one, person, 1),
        build::pod_name(&two, person, 1),
    );
    assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
    assert_ne!(a, b);
}

#[test]
fn a_url_source_has_one_person_named_after_the_stream() {
    let job = job(
        json!({"source": {"url": "rtmp://h:1935/live/class_7.flv?token=x"}, "storage": {"s3": {"bucket": "recordings"}}}),
        json!({}),
    );
    assert_eq!(build::people(&job)[0].user_id, "class_7");
}

fn pod(person: usize, attempt: u32, state: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("class-43474-{person}-{attempt}"), "labels": {
            "roomrec.dev/person": person.to_string(), "roomrec.dev/attempt": attempt.to_string()}},
        "status": state,
    }))
    .unwrap()
}

fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": [{"name": "worker", "image": "w", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]})
}

fn terminated(code: i32, message: &str) -> Value {
    json!({"phase": if code == 0 {"Succeeded"} else {"Failed"}, "containerStatuses": [{"name": "worker", "image": "w", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "message": message, "finishedAt": "2026-11-26T09:00:00Z"}}}]})
}

fn now() -> Timestamp {
    "2026-11-26T09:00:10Z".parse().unwrap()
}

#[test]
fn a_new_job_starts_one_worker_per_person() {
    let p = plan(
        &job(trtc_spec(), json!({})),
        &[],
        &Settings::default(),
        now(),
    );
    assert_eq!(p.create.len(), 2);
    assert_eq!(p.create[0].1, 1);
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.users.as_deref(), Some("alice,bob"));
    assert_eq!(p.status.started_at.as_deref(), Some("2026-11-26T09:00:10Z"));
}

#[test]
fn running_workers_are_left_alone_and_the_job_records() {
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "attempts": 2, "workers": [
        {"userId": "alice", "state": "Pending", "attempts": 1, "pod": "class-43474-0-1"},
        {"userId": "bob", "state": "Pending", "attempts": 1, "pod": "class-43474-1-1"}]});
    let pods = [pod(0, 1, running()), pod(1, 1, running())];
    let p = plan(
        &job(trtc_spec(), status),
        &pods,
        &Settings::default(),
        now(),
    );
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Recording));
}

#[test]
fn a_crashed_worker_is_replaced_at_once_then_with_backoff() {
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "phase": "Recording", "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 1, "pod": "class-43474-0-1"},
        {"userId": "bob", "state": "Recording", "attempts": 1, "pod": "class-43474-1-1"}],
        "files": [{"url": "u1", "userId": "alice", "status": "recording", "part": 1, "durationSeconds": 42.0}]});
    let pods = [pod(0, 1, terminated(137, "")), pod(1, 1, running())];
    let p = plan(
        &job(trtc_spec(), status.clone()),
        &pods,
        &Settings::default(),
        now(),
    );
    assert_eq!(p.create.len(), 1);
    let (person, attempt, resume) = &p.create[0];
    assert_eq!((person.user_id.as_str(), *attempt), ("alice", 2));
    // The replacement continues the same session and knows what is recorded.
    assert_eq!(resume.session_start, "2026-11-26T09:00:00Z");
    assert_eq!(resume.recorded_seconds, 42.0);
    assert_eq!(p.replacements, 1);
    assert_eq!(p.status.phase, Some(Phase::Recording));

    // The second crash waits for the backoff (5 s after it ended, 10 s have passed: go).
    let mut second = status.clone();
    second["workers"][0]["attempts"] = json!(2);
    let pods = [
        pod(0, 1, terminated(137, "")),
        pod(
            0,
            2,
            terminated(
                1,
                "{\"status\":\"failed\",\"stopReason\":\"failed\",\"message\":\"spool full\",\"retryable\":true}",
            ),
        ),
        pod(1, 1, running()),
    ];
    let early: Timestamp = "2026-11-26T09:00:02Z".parse().unwrap();
    let p = plan(
        &job(trtc_spec(), second.clone()),
        &pods,
        &Settings::default(),
        early,
    );
    assert!(p.create.is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3)));
    assert!(p.status.workers[0].message.contains("spool full"));
    let p = plan(
        &job(trtc_spec(), second),
        &pods,
        &Settings::default(),
        now(),
    );
    assert_eq!(p.create[0].1, 3);
}

#[test]
fn a_worker_that_cannot_succeed_fails_its_person_and_the_job() {
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "phase": "Recording", "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 1}, {"userId": "bob", "state": "Done", "attempts": 1, "stopReason": "idle-timeout"}],
        "files": [{"url": "u2", "userId": "bob", "status": "succeeded", "part": 1, "durationSeconds": 5.0}]});
    let pods = [pod(
        0,
        1,
        terminated(
            3,
            "{\"status\":\"failed\",\"stopReason\":\"failed\",\"message\":\"the bucket does not exist\",\"retryable\":false}",
        ),
    )];
    let p = plan(
        &job(trtc_spec(), status),
        &pods,
        &Settings::default(),
        now(),
    );
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    let finished = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Finished")
        .unwrap();
    assert!(
        finished
            .message
            .contains("alice: the bucket does not exist"),
        "{}",
        finished.message
    );
}

#[test]
fn attempts_are_bounded() {
    let settings = Settings {
        max_attempts: 2,
        ..Settings::default()
    };
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "phase": "Recording", "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 2}, {"userId": "bob", "state": "Done", "attempts": 1}]});
    let pods = [pod(0, 2, terminated(1, "boom"))];
    let p = plan(&job(trtc_spec(), status), &pods, &settings, now());
    assert!(p.create.is_empty());
    assert_eq!(p.status.workers[0].state, roomrec_api::WorkerState::Failed);
    assert!(
        p.status.workers[0]
            .message
            .contains("gave up after 2 worker runs")
    );
}

#[test]
fn a_stop_deletes_running_workers_and_ends_stopped() {
    let mut spec = trtc_spec();
    spec["stop"] = json!(true);
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "phase": "Recording", "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 1}, {"userId": "bob", "state": "Recording", "attempts": 1}]});
    let pods = [pod(0, 1, running()), pod(1, 1, running())];
    let p = plan(
        &job(spec.clone(), status.clone()),
        &pods,
        &Settings::default(),
        now(),
    );
    assert_eq!(p.delete, vec!["class-43474-0-1", "class-43474-1-1"]);
    assert_eq!(p.status.phase, Some(Phase::Finalizing));
    // The pods are gone (the workers closed their files): Stopped, never replaced.
    let p = plan(&job(spec, status), &[], &Settings::default(), now());
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Stopped));
    assert_eq!(
        p.status.stop_reason.map(roomrec_api::StopReason::as_str),
        Some("stop-requested")
    );
}

#[test]
fn nothing_recorded_is_a_failure_that_says_why() {
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "phase": "Recording", "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 1}, {"userId": "bob", "state": "Recording", "attempts": 1}]});
    let idle = "{\"status\":\"failed\",\"stopReason\":\"idle-timeout\",\"message\":\"no media arrived within the idle timeout (300 s)\",\"retryable\":true}";
    let pods = [
        pod(0, 1, terminated(1, idle)),
        pod(1, 1, terminated(1, idle)),
    ];
    let p = plan(
        &job(trtc_spec(), status),
        &pods,
        &Settings::default(),
        now(),
    );
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        p.status.stop_reason.map(roomrec_api::StopReason::as_str),
        Some("idle-timeout")
    );
}

#[test]
fn the_status_is_stable_when_nothing_changed() {
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "attempts": 2, "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 1, "pod": "class-43474-0-1"},
        {"userId": "bob", "state": "Recording", "attempts": 1, "pod": "class-43474-1-1"}]});
    let pods = [pod(0, 1, running()), pod(1, 1, running())];
    let first = plan(
        &job(trtc_spec(), status),
        &pods,
        &Settings::default(),
        now(),
    );
    let again = plan(
        &job(trtc_spec(), serde_json::to_value(&first.status).unwrap()),
        &pods,
        &Settings::default(),
        "2026-11-26T10:00:00Z".parse().unwrap(),
    );
    assert_eq!(first.status, again.status);
}

#[test]
fn the_callback_payload_is_exactly_the_heritage_one() {
    let status = json!({"phase": "Succeeded", "workers": [
        {"userId": "alice", "state": "Done", "attempts": 1}, {"userId": "bob", "state": "Done", "attempts": 1, "message": "no media arrived within the idle timeout (300 s)"}],
        "files": [
            {"url": "https://class-1250000000.cos.ap-shanghai.myqcloud.com/trtc/a2.mp4", "userId": "alice", "status": "succeeded", "part": 2},
            {"url": "https://class-1250000000.cos.ap-shanghai.myqcloud.com/trtc/a1.mp4", "userId": "alice", "status": "failed", "part": 1, "message": "upload refused"}]});
    let payload = serde_json::to_value(callback::payload(&job(trtc_spec(), status))).unwrap();
    assert_eq!(
        payload,
        json!({"SdkAppId": 1400000000u64, "RoomId": 43474, "UserId": "recorder-1", "StrRoomId": "", "Files": [
            {"UserId": "alice", "RecordFile": "https://class-1250000000.cos.ap-shanghai.myqcloud.com/trtc/a1.mp4", "Status": 0, "Message": "upload refused"},
            {"UserId": "alice", "RecordFile": "https://class-1250000000.cos.ap-shanghai.myqcloud.com/trtc/a2.mp4", "Status": 1, "Message": ""},
            {"UserId": "bob", "RecordFile": "", "Status": 0, "Message": "no media arrived within the idle timeout (300 s)"}]})
    );
}

#[test]
fn the_callback_signature_covers_time_and_body() {
    // HMAC-SHA256("key", "1764000000.{}") computed independently (Python hmac module).
    assert_eq!(
        callback::signature(b"key", 1764000000, b"{}"),
        "t=1764000000,v1=135a1a8c79ff2a07661486422c8068924d01c7a70da314a29ce512bc61231899"
    );
}

#[test]
fn durations_read_like_kubectl() {
    assert_eq!(progress::human_duration(5.4), "5s");
    assert_eq!(progress::human_duration(125.0), "2m5s");
    assert_eq!(progress::human_duration(3723.0), "1h2m3s");
}

#[test]
fn a_worker_that_ended_without_its_last_report_is_judged_at_once() {
    // The job was read after the pod's end (fetch::pods_then_job), so a file still
    // `recording` will not close: the worker's last report never came. No waiting for it.
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "phase": "Recording", "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 1}, {"userId": "bob", "state": "Done", "attempts": 1, "stopReason": "idle-timeout"}],
        "files": [{"url": "u1", "userId": "alice", "status": "recording", "part": 1, "pod": "class-43474-0-1"},
                  {"url": "u2", "userId": "bob", "status": "succeeded", "part": 1}]});
    let done = "{\"status\":\"succeeded\",\"stopReason\":\"max-duration\",\"message\":\"\",\"retryable\":true}";
    let pods = [pod(0, 1, terminated(0, done))];
    let job = job(trtc_spec(), status);
    assert!(roomrec_operator::fetch::ended_before_its_report(
        &job, &pods
    ));
    let p = plan(&job, &pods, &Settings::default(), now());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.requeue_after, None);
}

#[test]
fn a_deleted_or_evicted_worker_pod_is_replaced() {
    let status = json!({"startedAt": "2026-11-26T09:00:00Z", "phase": "Recording", "workers": [
        {"userId": "alice", "state": "Recording", "attempts": 1, "pod": "class-43474-0-1"},
        {"userId": "bob", "state": "Recording", "attempts": 1, "pod": "class-43474-1-1"}]});
    // alice's pod is gone without a trace; bob's runs.
    let pods = [pod(1, 1, running())];
    let p = plan(
        &job(trtc_spec(), status),
        &pods,
        &Settings::default(),
        now(),
    );
    assert_eq!(p.create.len(), 1);
    assert_eq!(
        (p.create[0].0.user_id.as_str(), p.create[0].1),
        ("alice", 2)
    );
    assert!(p.status.workers[0].message.contains("disappeared"));
    assert_eq!(p.replacements, 1);
}

fn whole_room_spec(max_people: Option<u32>) -> Value {
    let mut spec = trtc_spec();
    let trtc = &mut spec["source"]["trtc"];
    trtc.as_object_mut().unwrap().remove("record");
    trtc["wholeRoom"] = json!({"screenShare": true});
    if let Some(max) = max_people {
        trtc["wholeRoom"]["maxPeople"] = json!(max);
    }
    spec
}

/// `status.room.people` as the room event receiver writes it.
fn room_person(index: u32, user: &str, stream: &str, session: u32, publishing: bool) -> Value {
    json!({"index": index, "userId": user, "stream": stream, "session": session,
           "publishing": publishing, "stoppedAt": (!publishing).then_some("2026-11-26T09:00:05Z")})
}

fn with_metadata_created(mut job: RecordingJob, at: &str) -> RecordingJob {
    job.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        at.parse().unwrap(),
    ));
    job
}

#[test]
fn a_whole_room_starts_people_as_they_publish_and_waits_for_the_first() {
    // Nobody has published: no worker, the job waits.
    let empty = with_metadata_created(
        job(whole_room_spec(None), json!({})),
        "2026-11-26T09:00:00Z",
    );
    let p = plan(&empty, &[], &Settings::default(), now());
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Pending));
    // Until the idle timeout: then it ends, having recorded nobody.
    assert!(p.requeue_after.unwrap() > Duration::from_secs(280));
    let later: Timestamp = "2026-11-26T09:05:01Z".parse().unwrap();
    let p = plan(&empty, &[], &Settings::default(), later);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        p.status.stop_reason,
        Some(roomrec_api::StopReason::RoomIdle)
    );

    // Alice and Bob's screen share publish: one worker each, named by their order.
    let status = json!({"room": {"people": {
        "alice": room_person(0, "alice", "main", 1, true),
        "bob/aux": room_person(1, "bob", "aux", 1, true)}}});
    let p = plan(
        &with_metadata_created(job(whole_room_spec(None), status), "2026-11-26T09:00:00Z"),
        &[],
        &Settings::default(),
        now(),
    );
    let started: Vec<_> = p
        .create
        .iter()
        .map(|(person, attempt, _)| (person.key.as_str(), person.index, *attempt))
        .collect();
    assert_eq!(started, [("alice", 0, 1), ("bob/aux", 1, 1)]);
    assert_eq!(p.create[1].0.stream, roomrec_api::crd::StreamKind::Aux);
    assert_eq!(p.create[1].0.user_id, "bob");
    assert_eq!(p.status.users.as_deref(), Some("alice,bob/aux"));
    assert_eq!(p.status.workers[0].session, Some(1));
}

#[test]
fn a_whole_room_closes_the_files_of_who_stops_and_reopens_them_when_they_return() {
    let created = "2026-11-26T09:00:00Z";
    // Alice stopped publishing while her worker runs: it is stopped gracefully.
    let status = json!({"startedAt": created, "phase": "Recording",
        "room": {"people": {"alice": room_person(0, "alice", "main", 1, false)}},
        "workers": [{"userId": "alice", "state": "Recording", "attempts": 1, "session": 1,
                     "pod": "class-43474-0-1"}]});
    let j = with_metadata_created(job(whole_room_spec(None), status), created);
    let p = plan(&j, &[pod(0, 1, running())], &Settings::default(), now());
    assert_eq!(p.delete, ["class-43474-0-1"]);
    assert_eq!(p.status.phase, Some(Phase::Recording));

    // Its worker ended: she is done as `left`, and the job goes on (the room has not ended).
    let ended = r#"{"stopReason":"signal","retryable":true,"parts":1,"message":"stopped"}"#;
    let status = json!({"startedAt": created, "phase": "Recording",
        "room": {"people": {"alice": room_person(0, "alice", "main", 1, false)}},
        "workers": [{"userId": "alice", "state": "Recording", "attempts": 1, "session": 1,
                     "pod": "class-43474-0-1"}]});
    let j = with_metadata_created(job(whole_room_spec(None), status), created);
    let p = plan(
        &j,
        &[pod(0, 1, terminated(0, ended))],
        &Settings::default(),
        now(),
    );
    assert!(p.create.is_empty());
    assert_eq!(p.status.workers[0].state, roomrec_api::WorkerState::Done);
    assert_eq!(
        p.status.workers[0].stop_reason,
        Some(roomrec_api::StopReason::Left)
    );
    assert_eq!(p.status.phase, Some(Phase::Recording));

    // She publishes again (session 2): a second worker, attempt 2, continuing her parts.
    let status = json!({"startedAt": created, "phase": "Recording",
        "room": {"people": {"alice": room_person(0, "alice", "main", 2, true)}},
        "workers": [{"userId": "alice", "state": "Done", "stopReason": "left", "attempts": 1,
                     "session": 1, "pod": "class-43474-0-1"}],
        "files": [{"url": "u1", "userId": "alice", "status": "succeeded", "part": 1, "durationSeconds": 30.0}]});
    let j = with_metadata_created(job(whole_room_spec(None), status), created);
    let p = plan(
        &j,
        &[pod(0, 1, terminated(0, ended))],
        &Settings::default(),
        now(),
    );
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].1, 2);
    assert_eq!(p.create[0].2.recorded_seconds, 30.0);
    assert_eq!(p.status.workers[0].session, Some(2));
    // The same session again reopens nothing.
    let status = json!({"startedAt": created, "phase": "Recording",
        "room": {"people": {"alice": room_person(0, "alice", "main", 1, true)}},
        "workers": [{"userId": "alice", "state": "Done", "stopReason": "left", "attempts": 1,
                     "session": 1}]});
    let j = with_metadata_created(job(whole_room_spec(None), status), created);
    assert!(plan(&j, &[], &Settings::default(), now()).create.is_empty());
}

#[test]
fn a_whole_room_ends_on_dismissal_and_beyond_its_limit_names_who_is_not_recorded() {
    let created = "2026-11-26T09:00:00Z";
    let status = json!({"startedAt": created, "phase": "Recording",
        "room": {"dismissedAt": "2026-11-26T09:00:08Z", "people": {
            "alice": room_person(0, "alice", "main", 1, true)}},
        "workers": [{"userId": "alice", "state": "Recording", "attempts": 1, "session": 1,
                     "pod": "class-43474-0-1"}],
        "files": [{"url": "u1", "userId": "alice", "status": "succeeded", "part": 1, "durationSeconds": 30.0}]});
    let j = with_metadata_created(job(whole_room_spec(None), status.clone()), created);
    let p = plan(&j, &[pod(0, 1, running())], &Settings::default(), now());
    assert_eq!(p.delete, ["class-43474-0-1"]);
    let p = plan(
        &j,
        &[pod(0, 1, terminated(0, ""))],
        &Settings::default(),
        now(),
    );
    assert_eq!(p.status.phase, Some(Phase::Succeeded));
    assert_eq!(
        p.status.stop_reason,
        Some(roomrec_api::StopReason::RoomDismissed)
    );

    // Three publish, the job takes two: the third is named once, in an event and the status.
    let status = json!({"room": {"people": {
        "alice": room_person(0, "alice", "main", 1, true),
        "bob": room_person(1, "bob", "main", 1, true),
        "carol": room_person(2, "carol", "main", 1, true)}}});
    let j = with_metadata_created(job(whole_room_spec(Some(2)), status), created);
    let p = plan(&j, &[], &Settings::default(), now());
    assert_eq!(p.create.len(), 2);
    assert_eq!(p.status.not_recorded, ["carol"]);
    let warning = p.events.iter().find(|e| e.1 == "TooManyPeople").unwrap();
    assert!(warning.0 && warning.2.contains("carol") && warning.2.contains("maxPeople"));
    let mut again = j.clone();
    again.status.as_mut().unwrap().not_recorded = vec!["carol".into()];
    let p = plan(&again, &[], &Settings::default(), now());
    assert!(p.events.iter().all(|e| e.1 != "TooManyPeople"));
}

#[test]
fn named_people_on_publish_wait_for_their_first_publish() {
    let mut spec = trtc_spec();
    spec["source"]["trtc"]["startOn"] = json!("publish");
    let status = json!({"room": {"people": {"bob": room_person(0, "bob", "main", 1, true)}}});
    let j = with_metadata_created(job(spec, status), "2026-11-26T09:00:00Z");
    let p = plan(&j, &[], &Settings::default(), now());
    let started: Vec<_> = p.create.iter().map(|c| c.0.key.as_str()).collect();
    assert_eq!(started, ["bob"]);
    assert!(
        p.status.workers[0]
            .message
            .contains("waiting for alice to publish")
    );
    assert_eq!(p.status.phase, Some(Phase::Pending));
}
