//! Relays roomrec starts (`relay: start`) and the room's ways of ending a recording, end to end:
//! the operator (as the chart's ServiceAccount) against the test bed's TRTC stand-in — a test
//! double for Tencent's cloud, which cannot be reached from here: it checks every API request's
//! TC3 signature and fields and every agent's UserSig, runs relays that push the anchors'
//! streams to its own CSS server (which refuses a push whose txSecret does not verify), and
//! sends signed room event callbacks — plus the COS stand-in, real workers, ffmpeg and ffprobe.

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
    pub mod stored_files;
    pub mod trtc_world;

    pub use self::{
        callbacks::*, cluster::*, cos::*, examples::*, jobs::*, kubectl::*, logs::*,
        operator_process::*, processes::*, stored_files::*, trtc_world::*,
    };
}

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use roomrec_api::crd::RecordingJob;
use roomrec_api::trtc::tc3::Secret;
use roomrec_api::trtc::usersig;
use roomrec_api::{StopReason, WorkerState};
use roomrec_operator::trtc_api::{
    DismissRoomRequest, RemoveUserRequest, TrtcApiConfig, TrtcClient,
};
use roomrec_testbed::cos::CosStandIn;
use roomrec_testbed::trtc::TrtcStandIn;
use roomrec_testbed::wait_until;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

const ROOM: u32 = 43474;

/// One test's world: its namespace, the TRTC and COS stand-ins, the callback receiver and an
/// operator configured for them.
struct World {
    ns: String,
    op: Operator,
    /// The operator's flags, to start it again.
    op_args: Vec<String>,
    trtc: TrtcStandIn,
    cos: CosStandIn,
    cos_port: String,
    receiver: Receiver,
    api: Api<RecordingJob>,
    dir: PathBuf,
}

/// The operator's API credentials (a mounted Secret in a cluster): `secret_key` may be wrong.
async fn world(prefix: &str, secret_key: &str) -> World {
    world_with(prefix, secret_key, examples_cos().await, &[]).await
}

/// As `world`, with a COS stand-in of the test's choosing and more operator flags.
async fn world_with(
    prefix: &str,
    secret_key: &str,
    (cos, cos_port): (CosStandIn, String),
    extra_args: &[String],
) -> World {
    cluster().await;
    let ns = bed().namespace(prefix).await.unwrap();
    let dir = bed().scratch(&format!("trtc-{ns}")).unwrap();
    let TrtcSide {
        trtc,
        operator_args,
    } = trtc_side(&dir, secret_key).await;
    let mut op_args: Vec<String> = vec![
        "--worker-env".into(),
        format!("ROOMREC_RESOLVE=class-1250000000.localhost=127.0.0.1:{cos_port}"),
    ];
    op_args.extend(operator_args);
    op_args.extend_from_slice(extra_args);
    let op = start_operator(&ns, &op_args).await;
    let receiver = Receiver::start(0).await;
    let api = jobs(&ns).await;
    World {
        ns,
        op,
        op_args,
        trtc,
        cos,
        cos_port,
        receiver,
        api,
        dir,
    }
}

async fn start_operator(ns: &str, args: &[String]) -> Operator {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Operator::start(ns, &args).await
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A day's UserSig of the recording identity `recorder-1`, made with the application's key.
fn recorder_sig() -> String {
    usersig::generate(APP, "recorder-1", APP_KEY.as_bytes(), now(), 86400, None)
}

/// The application calling TRTC, as the heritage users do (RemoveUser, DismissRoom).
fn application(world: &World) -> TrtcClient {
    let mut config = TrtcApiConfig::new(
        Secret::new(SECRET_ID),
        Secret::new(SECRET_KEY),
        "ap-guangzhou",
    );
    config.endpoint = world.trtc.endpoint();
    TrtcClient::new(config).unwrap()
}

/// `examples/trtc-relay.yaml`, pointed at this world's stand-ins, with `user_sig` as the
/// recording identity's UserSig and more edits.
fn relay_example(world: &World, user_sig: &str, edits: &[(&str, String)]) -> String {
    let mut all = vec![
        (
            "USERSIG-OF-recorder-1   # e.g. roomrec-operator usersig generate --user-id recorder-1 …",
            format!("\"{user_sig}\""),
        ),
        ("push.example.com", world.trtc.push_domain()),
        ("play.example.com", world.trtc.play_domain()),
        (
            "      credentialsSecret: cos-keys",
            format!(
                "      credentialsSecret: cos-keys\n      endpoint: http://localhost:{}",
                world.cos_port
            ),
        ),
        (
            "https://lms.example.com/hooks/recording",
            world.receiver.url(),
        ),
    ];
    all.extend(edits.iter().cloned());
    example("trtc-relay.yaml", &all)
}

/// The job ended in `phase` within `seconds`; every relay of the stand-in has ended too.
async fn ended(world: &World, name: &str, phase: &str, seconds: u64) -> RecordingJob {
    let job = ended_as(
        &world.api,
        name,
        phase,
        Duration::from_secs(seconds),
        &world.op,
    )
    .await;
    assert!(
        world.trtc.relays().iter().all(|r| !r.is_running()),
        "a relay still runs: {:#?}",
        world.trtc.relays()
    );
    job
}

async fn wait_for<F, Fut>(what: &str, world: &World, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let ok = wait_until(Duration::from_secs(60), condition).await;
    assert!(
        ok.is_ok(),
        "{what} did not happen\nTRTC requests: {:#?}\nrelays: {:#?}\noperator: {}",
        world.trtc.requests(),
        world.trtc.relays(),
        world.op.log_text()
    );
}

async fn worker_pods(world: &World) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(bed().client().await.unwrap(), &world.ns);
    pods.list(&ListParams::default()).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_start_heritage_request_records_into_cos_and_remove_user_ends_it() {
    let world = world("relay", SECRET_KEY).await;
    let anchor = world.trtc.anchor(APP, ROOM, "anchor-1");
    anchor.publish(small_camera()).unwrap();
    let sig = recorder_sig();
    apply_in(&world.ns, &relay_example(&world, &sig, &[]));
    let job = wait_recording_bytes(&world.api, "heritage-43474", 3.0, &world.op).await;

    // The recording identity is in the room, as the heritage recorder was; one relay runs,
    // pass-through, to the push domain with a signed push URL.
    assert!(
        world
            .trtc
            .room_users(APP, ROOM)
            .contains(&"recorder-1".to_string()),
        "{:?}",
        world.trtc.room_users(APP, ROOM)
    );
    let relays = world.trtc.relays();
    assert_eq!(relays.len(), 1, "{relays:#?}");
    assert_eq!(relays[0].agent_user_id, "recorder-1");
    assert_eq!(relays[0].user_id, "anchor-1");
    assert!(relays[0].pushes[0].url.contains("txSecret="), "{relays:#?}");
    let status = job.status.clone().unwrap();
    let relay = status.workers[0].relay.clone().unwrap();
    assert_eq!(relay.task_id, relays[0].task_id);
    assert_eq!(status.mode, Some(roomrec_api::Mode::AudioVideoMp4));

    // The heritage way to stop: RemoveUser of the recording identity.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let removed_at = Instant::now();
    application(&world)
        .remove_user(&RemoveUserRequest {
            sdk_app_id: APP,
            room_id: ROOM,
            user_ids: vec!["recorder-1".into()],
        })
        .await
        .unwrap();
    let job = ended(&world, "heritage-43474", "Succeeded", 60).await;
    let took = removed_at.elapsed();
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.stop_reason,
        Some(StopReason::Removed),
        "{}",
        status_json(&job)
    );
    assert_eq!(status.workers[0].stop_reason, Some(StopReason::Removed));
    assert!(
        took < Duration::from_secs(20),
        "ended {took:?} after RemoveUser"
    );
    let total = assert_files_play(&job, &["h264", "aac"]);
    assert!(total >= 5.0, "recorded {total} s");
    for file in files(&job) {
        assert!(
            file.url.starts_with(
                "https://class-1250000000.cos.ap-shanghai.myqcloud.com/trtc/1400000000_43474_anchor-1_"
            ),
            "{}",
            file.url
        );
    }
    assert!(
        world.cos.requests().iter().all(|r| r.status != 403),
        "the COS stand-in refused a signature"
    );

    // No relay is left: TRTC ended it, and roomrec recorded its stop.
    assert!(
        status.workers[0]
            .relay
            .as_ref()
            .unwrap()
            .stopped_at
            .is_some()
    );
    assert!(
        world.trtc.relays().iter().all(|r| !r.is_running()),
        "{:#?}",
        world.trtc.relays()
    );
    // Its worker ended and said so; no pod of the job still runs (RemoveUser's cleanup may
    // have deleted them already).
    assert_eq!(
        status.workers[0].state,
        WorkerState::Done,
        "{}",
        status_json(&job)
    );
    let pods = worker_pods(&world).await;
    let terminal = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
    };
    assert!(pods.iter().all(terminal), "{pods:#?}");

    // The callback: exactly the heritage payload, the stop reason in each file's Message.
    let delivered = wait_until(Duration::from_secs(30), || async {
        !world.receiver.requests.lock().unwrap().is_empty()
    })
    .await;
    assert!(delivered.is_ok(), "no callback: {}", world.op.log_text());
    let (_, body) = world.receiver.requests.lock().unwrap()[0].clone();
    let mut stored = files(&job);
    stored.sort_by_key(|f| f.part);
    let expected = json!({
        "SdkAppId": APP, "RoomId": ROOM, "UserId": "recorder-1", "StrRoomId": "",
        "Files": stored.iter().map(|f| json!({
            "UserId": "anchor-1", "RecordFile": f.url, "Status": 1, "Message": "removed"
        })).collect::<Vec<Value>>(),
    });
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), expected);
}

/// What an observer of the node reads in /proc: every process's arguments and environment.
fn processes_seen() -> Vec<(String, Vec<u8>)> {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        for file in ["cmdline", "environ"] {
            // A process may end between listing and reading.
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                seen.push((format!("/proc/{pid}/{file}"), bytes));
            }
        }
    }
    seen
}

/// Each place in `seen` that holds one of `secrets`, as it is or base64-encoded.
fn leaks(secrets: &[(&str, &str)], seen: &[(String, Vec<u8>)]) -> Vec<String> {
    use base64::Engine;
    let mut found = Vec::new();
    for (place, bytes) in seen {
        let text = String::from_utf8_lossy(bytes);
        for (what, value) in secrets {
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            if text.contains(value) || text.contains(&encoded) {
                found.push(format!("{what} in {place}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_is_visible_to_an_observer() {
    // Values no other test uses, in the job's three kinds of Secret: the store's keys, the
    // callback's signing key and the agent's UserSig.
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let cos_id = format!("AKIDcanary{tag}");
    let cos_key = format!("canary-cos-secret-key-{tag}");
    let callback_key = format!("canary-callback-signing-key-{tag}");
    let user_sig = recorder_sig();
    let worker_metrics_port = roomrec_testbed::ports::free_port();
    let world = world_with(
        "observer",
        SECRET_KEY,
        cos_with_keys(&cos_id, &cos_key).await,
        &[
            "--worker-metrics-port".into(),
            worker_metrics_port.to_string(),
        ],
    )
    .await;
    let anchor = world.trtc.anchor(APP, ROOM, "anchor-1");
    anchor.publish(small_camera()).unwrap();
    apply_in(
        &world.ns,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: callback-key}}\nstringData: {{key: \"{callback_key}\"}}\n"
        ),
    );
    let callback_url = format!("    url: {}", world.receiver.url());
    let signed_callback =
        format!("{callback_url}\n    signingSecret: {{ name: callback-key, key: key }}");
    let yaml = relay_example(
        &world,
        &user_sig,
        &[
            (
                "secretId: AKIDEXAMPLEEXAMPLEEXAMPLE",
                format!("secretId: {cos_id}"),
            ),
            (
                "secretKey: example-secret-key",
                format!("secretKey: {cos_key}"),
            ),
            (&callback_url, signed_callback),
            // It ends by itself, so its worker pod stays with its termination message.
            (
                "  idleTimeoutSeconds: 300 ",
                "  maxDurationSeconds: 10\n  idleTimeoutSeconds: 300 ".into(),
            ),
        ],
    );
    apply_in(&world.ns, &yaml);
    let job = wait_recording_bytes(&world.api, "heritage-43474", 3.0, &world.op).await;

    // While it records: every process's arguments and environment (the worker's and its
    // ffmpeg's included), and both /metrics.
    let pod = job.status.clone().unwrap().worker_pod.unwrap();
    let worker = worker_pid(&pod).expect("the worker's process");
    let mut seen = processes_seen();
    assert!(
        seen.iter()
            .any(|(place, _)| *place == format!("/proc/{worker}/environ")),
        "the worker's process was not read"
    );
    // The worker's port is its own, at its pod's address.
    let pods: Api<Pod> = Api::namespaced(bed().client().await.unwrap(), &world.ns);
    let pod_ip = pods
        .get(&pod)
        .await
        .unwrap()
        .status
        .unwrap()
        .pod_ip
        .unwrap();
    let worker_metrics = reqwest::get(format!("http://{pod_ip}:{worker_metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(worker_metrics.contains("roomrec_worker_recording 1"));
    seen.push(("the worker's /metrics".into(), worker_metrics.into_bytes()));
    seen.push((
        "the operator's /metrics while recording".into(),
        world.op.metrics().await.into_bytes(),
    ));

    // Ended at its maximum duration; the callback is delivered, signed with the key.
    let job = ended(&world, "heritage-43474", "Succeeded", 60).await;
    let delivered = wait_until(Duration::from_secs(30), || async {
        !world.receiver.requests.lock().unwrap().is_empty()
    })
    .await;
    assert!(delivered.is_ok(), "no callback: {}", world.op.log_text());
    for (i, (headers, body)) in world.receiver.requests.lock().unwrap().iter().enumerate() {
        assert!(
            headers
                .iter()
                .any(|(name, _)| name == "x-roomrec-signature"),
            "the callback was not signed: {headers:?}"
        );
        let mut request = format!("{headers:?}\n").into_bytes();
        request.extend(body);
        seen.push((format!("callback request {i}"), request));
    }
    assert!(
        !world.cos.requests().is_empty() && world.cos.requests().iter().all(|r| r.status != 403),
        "the store did not take the keys"
    );
    assert_files_play(&job, &["h264", "aac"]);

    // Afterwards: the job, its pods (with their termination messages), events and the rest of
    // the namespace as the API shows them, every log, the operator's /metrics.
    let objects = kubectl(
        &[
            "get",
            "recordingjobs,pods,events,events.events.k8s.io,serviceaccounts,roles,rolebindings,configmaps",
            "-n",
            &world.ns,
            "-o",
            "json",
        ],
        None,
    );
    assert!(objects.status.success());
    let listed: Value = serde_json::from_slice(&objects.stdout).unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "Pod"
                && o["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())),
        "no termination message to read"
    );
    seen.push(("the namespace's objects".into(), objects.stdout));
    seen.push((
        "the operator's /metrics afterwards".into(),
        world.op.metrics().await.into_bytes(),
    ));
    seen.push((
        "the operator's log".into(),
        std::fs::read(&world.op.log).unwrap(),
    ));
    for (pod, log) in container_logs(&world.ns, "worker") {
        seen.push((format!("the worker log of {pod}"), log.into_bytes()));
    }
    for entry in std::fs::read_dir(bed().dir.join("kubernetes"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            seen.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    let found = leaks(
        &[
            ("the COS secretId", &cos_id),
            ("the COS secretKey", &cos_key),
            ("the callback signing key", &callback_key),
            ("the UserSig", &user_sig),
        ],
        &seen,
    );
    assert!(found.is_empty(), "secret values seen: {found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_start_dismiss_room_ends_a_two_person_job_with_every_file_stored() {
    let world = world("dismiss", SECRET_KEY).await;
    let alice = world.trtc.anchor(APP, ROOM, "alice");
    let bob = world.trtc.anchor(APP, ROOM, "bob");
    alice.publish(small_camera()).unwrap();
    bob.publish(small_camera()).unwrap();
    // Two people: an agent each, with UserSigs roomrec makes from the application's key.
    let yaml = relay_example(
        &world,
        "unused",
        &[
            ("record: [anchor-1]", "record: [alice, bob]".into()),
            ("name: heritage-43474", "name: class-dismissed".into()),
            (
                "userSigSecret: { name: recorder-1-usersig, key: userSig }",
                "secretKeySecret: { name: app-key, key: key }".into(),
            ),
        ],
    );
    apply_in(&world.ns, &yaml);
    apply_in(
        &world.ns,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: app-key}}\nstringData: {{key: \"{APP_KEY}\"}}\n"
        ),
    );
    wait_for("two relays running", &world, || async {
        world
            .trtc
            .relays()
            .iter()
            .filter(|r| r.is_running())
            .count()
            == 2
    })
    .await;
    let agents: Vec<String> = world
        .trtc
        .relays()
        .iter()
        .map(|r| r.agent_user_id.clone())
        .collect();
    assert!(
        agents.contains(&"recorder-1_1".to_string())
            && agents.contains(&"recorder-1_2".to_string()),
        "{agents:?}"
    );
    wait_for("both people recording", &world, || async {
        world.api.get("class-dismissed").await.is_ok_and(|job| {
            let files = files(&job);
            ["alice", "bob"].iter().all(|p| {
                files
                    .iter()
                    .any(|f| f.user_id == *p && f.duration_seconds >= 3.0)
            })
        })
    })
    .await;

    application(&world)
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: APP,
            room_id: ROOM,
        })
        .await
        .unwrap();
    let job = ended(&world, "class-dismissed", "Succeeded", 60).await;
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.stop_reason,
        Some(StopReason::RoomDismissed),
        "{}",
        status_json(&job)
    );
    for worker in &status.workers {
        assert_eq!(worker.state, WorkerState::Done);
        assert_eq!(worker.stop_reason, Some(StopReason::RoomDismissed));
        assert!(worker.relay.as_ref().unwrap().stopped_at.is_some());
    }
    assert!(status.room.as_ref().unwrap().dismissed_at.is_some());
    assert_files_play(&job, &["h264", "aac"]);
    for person in ["alice", "bob"] {
        assert!(files(&job).iter().any(|f| f.user_id == person), "{person}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_start_an_anchor_who_stops_publishing_ends_it_as_room_idle() {
    let world = world("idle", SECRET_KEY).await;
    let anchor = world.trtc.anchor(APP, ROOM, "anchor-1");
    anchor.publish(small_camera()).unwrap();
    let sig = recorder_sig();
    let yaml = relay_example(
        &world,
        &sig,
        &[("idleTimeoutSeconds: 300 ", "idleTimeoutSeconds: 6 ".into())],
    );
    apply_in(&world.ns, &yaml);
    wait_recording_bytes(&world.api, "heritage-43474", 3.0, &world.op).await;
    // The anchor stops publishing: TRTC's agent leaves at MaxIdleTime (the idle timeout).
    anchor.stop_publishing().unwrap();
    let job = ended(&world, "heritage-43474", "Succeeded", 60).await;
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.stop_reason,
        Some(StopReason::RoomIdle),
        "{}",
        status_json(&job)
    );
    assert_files_play(&job, &["h264", "aac"]);
}

/// The job holds with `Valid=False` naming `field`, and nothing started: no worker, no relay.
async fn refused(world: &World, name: &str, field: &str) {
    let ok = wait_until(Duration::from_secs(30), || async {
        world.api.get(name).await.is_ok_and(|job| {
            job.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Valid" && c.status == "False" && c.message.contains(field))
            })
        })
    })
    .await;
    let last = world.api.get(name).await.ok().and_then(|j| j.status);
    assert!(
        ok.is_ok(),
        "not refused naming {field}: {}\n{}",
        serde_json::to_string(&last).unwrap(),
        world.op.log_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(worker_pods(world).await.is_empty(), "a worker started");
    assert!(world.trtc.relays().is_empty(), "a relay started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_start_refuses_a_wrong_or_expired_usersig_and_a_wrong_api_key_leaving_nothing_behind()
{
    let world = world("refused", SECRET_KEY).await;
    let anchor = world.trtc.anchor(APP, ROOM, "anchor-1");
    anchor.publish(small_camera()).unwrap();
    // Expired an hour ago.
    let expired = usersig::generate(
        APP,
        "recorder-1",
        APP_KEY.as_bytes(),
        now() - 7200,
        3600,
        None,
    );
    apply_in(&world.ns, &relay_example(&world, &expired, &[]));
    refused(&world, "heritage-43474", "spec.source.trtc.userSigSecret").await;
    let job = world.api.get("heritage-43474").await.unwrap();
    let message = &job
        .status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("expired"), "{message}");

    // A UserSig of another user: named too.
    let bob = usersig::generate(APP, "bob", APP_KEY.as_bytes(), now(), 86400, None);
    let yaml = relay_example(
        &world,
        &bob,
        &[
            ("heritage-43474", "for-bob".into()),
            ("recorder-1-usersig", "bob-usersig".into()),
        ],
    );
    apply_in(&world.ns, &yaml);
    refused(&world, "for-bob", "recorder-1").await;

    // A UserSig signed with another key decodes fine here; TRTC refuses it when the relay
    // starts, and the person fails with TRTC's words, without a worker or a running relay.
    let forged = usersig::generate(
        APP,
        "recorder-1",
        b"not the application's key",
        now(),
        86400,
        None,
    );
    let yaml = relay_example(
        &world,
        &forged,
        &[
            ("heritage-43474", "forged".into()),
            ("recorder-1-usersig", "forged-usersig".into()),
        ],
    );
    apply_in(&world.ns, &yaml);
    let job = ended(&world, "forged", "Failed", 60).await;
    let worker = &job.status.unwrap().workers[0];
    assert!(worker.message.contains("UserSig"), "{}", worker.message);

    // The operator's API key is wrong: StartPublishCdnStream is refused, named, not retried.
    let wrong = world_with_wrong_api_key(&world).await;
    let sig = recorder_sig();
    let yaml = relay_example(
        &world,
        &sig,
        &[
            ("heritage-43474", "wrong-api-key".into()),
            ("recorder-1-usersig", "good-usersig".into()),
        ],
    );
    apply_in(&wrong.0, &yaml);
    let api = jobs(&wrong.0).await;
    let job = ended_as(
        &api,
        "wrong-api-key",
        "Failed",
        Duration::from_secs(60),
        &wrong.1,
    )
    .await;
    let worker = &job.status.unwrap().workers[0];
    assert!(worker.message.contains("AuthFailure"), "{}", worker.message);
    assert!(worker.relay.is_none());
}

/// Another namespace and operator whose TRTC API SecretKey is wrong, against the same stand-in.
async fn world_with_wrong_api_key(world: &World) -> (String, Operator) {
    let ns = bed().namespace("wrongkey").await.unwrap();
    let credentials = world.dir.join("wrong-trtc-api");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("secretId"), SECRET_ID).unwrap();
    std::fs::write(credentials.join("secretKey"), "not-the-secret-key").unwrap();
    let op = Operator::start(
        &ns,
        &[
            "--trtc-api-endpoint",
            &world.trtc.endpoint(),
            "--trtc-credentials-dir",
            credentials.to_str().unwrap(),
        ],
    )
    .await;
    (ns, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_start_an_operator_killed_while_relays_run_loses_and_doubles_none() {
    let mut world = world("restart", SECRET_KEY).await;
    let anchor = world.trtc.anchor(APP, ROOM, "anchor-1");
    anchor.publish(small_camera()).unwrap();
    let sig = recorder_sig();
    apply_in(&world.ns, &relay_example(&world, &sig, &[]));
    wait_recording_bytes(&world.api, "heritage-43474", 2.0, &world.op).await;
    world.op.child.start_kill().unwrap();
    let _ = world.op.child.wait().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    world.op = start_operator(&world.ns, &world.op_args).await;
    // The new operator finds the relay in the status: no second one starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(world.trtc.relays().len(), 1, "{:#?}", world.trtc.relays());
    assert!(world.trtc.relays()[0].is_running());
    // A crashed worker's replacement plays the relay that runs: still no second one.
    let first = worker_pods(&world).await[0].metadata.name.clone().unwrap();
    let pid = worker_pid(&first).expect("the worker's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("a replacement worker", &world, || async {
        world.api.get("heritage-43474").await.is_ok_and(|job| {
            job.status.is_some_and(|s| {
                s.workers[0].attempts == 2 && s.workers[0].state == WorkerState::Recording
            })
        })
    })
    .await;
    assert_eq!(world.trtc.relays().len(), 1, "{:#?}", world.trtc.relays());
    assert!(world.trtc.relays()[0].is_running());
    // A stop ends it: the relay is stopped exactly once, the files are stored.
    world
        .api
        .patch(
            "heritage-43474",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"stop": true}})),
        )
        .await
        .unwrap();
    let job = ended(&world, "heritage-43474", "Stopped", 60).await;
    assert_files_play(&job, &["h264", "aac"]);
    assert_eq!(world.trtc.relays().len(), 1);
    assert!(!world.trtc.relays()[0].is_running());
    let stops = world
        .trtc
        .requests()
        .iter()
        .filter(|r| r.action == "StopPublishCdnStream")
        .count();
    assert!(stops >= 1, "never stopped");
    assert!(
        job.status.unwrap().workers[0]
            .relay
            .as_ref()
            .unwrap()
            .stopped_at
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_start_a_wrong_push_key_ends_naming_it_and_leaves_no_relay() {
    let world = world("pushkey", SECRET_KEY).await;
    let anchor = world.trtc.anchor(APP, ROOM, "anchor-1");
    anchor.publish(small_camera()).unwrap();
    let sig = recorder_sig();
    let yaml = relay_example(
        &world,
        &sig,
        &[
            (PUSH_KEY, "0123456789abcdef0123456789abcdef".into()),
            ("idleTimeoutSeconds: 300 ", "idleTimeoutSeconds: 5 ".into()),
        ],
    );
    apply_in(&world.ns, &yaml);
    // The CSS server refuses the relay's push: its txSecret was made with another key.
    wait_for("a refused push", &world, || async {
        world.trtc.publish_checks().iter().any(|c| !c.accepted)
    })
    .await;
    let job = ended(&world, "heritage-43474", "Failed", 90).await;
    let status = job.status.clone().unwrap();
    let finished = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Finished")
        .unwrap();
    assert!(
        finished.message.contains("pushKeySecret")
            && finished.message.contains("nothing was recorded"),
        "{}",
        finished.message
    );
    assert!(
        status.workers[0]
            .relay
            .as_ref()
            .unwrap()
            .stopped_at
            .is_some()
    );
}

/// `examples/trtc-whole-room.yaml`, pointed at this world's stand-ins.
fn whole_room_example(world: &World, edits: &[(&str, String)]) -> String {
    let mut all = vec![
        ("SECRET-KEY-OF-THE-APPLICATION", format!("\"{APP_KEY}\"")),
        ("push.example.com", world.trtc.push_domain()),
        ("play.example.com", world.trtc.play_domain()),
        (
            "      credentialsSecret: cos-keys",
            format!(
                "      credentialsSecret: cos-keys\n      endpoint: http://localhost:{}",
                world.cos_port
            ),
        ),
        (
            "https://lms.example.com/hooks/recording",
            world.receiver.url(),
        ),
    ];
    all.extend(edits.iter().cloned());
    example("trtc-whole-room.yaml", &all)
}

/// The job's files of one person (its `status.workers` key), in part order.
fn files_of(job: &RecordingJob, user: &str, stream: &str) -> Vec<roomrec_api::crd::FileStatus> {
    let mut mine: Vec<_> = files(job)
        .into_iter()
        .filter(|f| {
            let aux = f.url.contains(&format!("_{user}_aux_"));
            f.user_id == user && aux == (stream == "aux")
        })
        .collect();
    mine.sort_by_key(|f| f.part);
    mine
}

/// Waits until `person` (a `status.workers` key) has recorded `seconds` in its current worker's
/// files.
async fn recording(world: &World, name: &str, person: &str, seconds: f64) {
    let (user, stream) = person.split_once('/').unwrap_or((person, "main"));
    let ok = wait_until(Duration::from_secs(60), || async {
        world.api.get(name).await.is_ok_and(|job| {
            let workers = job
                .status
                .as_ref()
                .map(|s| s.workers.clone())
                .unwrap_or_default();
            let current = workers
                .iter()
                .find(|w| w.user_id == person)
                .and_then(|w| w.pod.clone());
            files_of(&job, user, stream).iter().any(|f| {
                f.pod == current
                    && f.status.as_str() == "recording"
                    && f.duration_seconds >= seconds
            })
        })
    })
    .await;
    if ok.is_err() {
        let job = world.api.get(name).await.unwrap();
        panic!(
            "{person} is not recording: {}\nrelays: {:#?}\noperator: {}",
            status_json(&job),
            world.trtc.relays(),
            tail(&world.op.log_text(), 6000)
        );
    }
}

async fn worker_state(world: &World, name: &str, person: &str) -> Option<WorkerState> {
    let job = world.api.get(name).await.ok()?;
    job.status?
        .workers
        .into_iter()
        .find(|w| w.user_id == person)
        .map(|w| w.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_room_records_anchors_as_they_come_and_go_and_ends_on_dismissal() {
    let world = world("wholeroom", SECRET_KEY).await;
    apply_in(&world.ns, &whole_room_example(&world, &[]));
    // Nobody publishes yet: the job waits, no worker, no relay.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let job = world.api.get("class-43474").await.unwrap();
    assert_eq!(
        job.status.as_ref().and_then(|s| s.phase),
        Some(roomrec_api::crd::Phase::Pending),
        "{}",
        status_json(&job)
    );
    assert!(worker_pods(&world).await.is_empty());
    assert!(world.trtc.relays().is_empty());

    // Alice publishes: she is recorded.
    let alice = world.trtc.anchor(APP, ROOM, "alice");
    alice.publish(small_camera()).unwrap();
    recording(&world, "class-43474", "alice", 3.0).await;
    // Bob publishes his camera and shares his screen: two more people.
    let bob = world.trtc.anchor(APP, ROOM, "bob");
    bob.publish(small_camera()).unwrap();
    bob.publish_aux(small_camera()).unwrap();
    // Alice stops publishing: her files close (she stays in the room).
    alice.stop_publishing().unwrap();
    wait_for("alice's recording closed", &world, || async {
        worker_state(&world, "class-43474", "alice").await == Some(WorkerState::Done)
    })
    .await;
    recording(&world, "class-43474", "bob", 3.0).await;
    recording(&world, "class-43474", "bob/aux", 3.0).await;
    // Bob ends his screen share; Carol comes; Alice returns: a new part of hers.
    bob.stop_aux().unwrap();
    let carol = world.trtc.anchor(APP, ROOM, "carol");
    carol.publish(small_camera()).unwrap();
    alice.publish(small_camera()).unwrap();
    recording(&world, "class-43474", "carol", 3.0).await;
    recording(&world, "class-43474", "alice", 3.0).await;
    assert_eq!(
        worker_state(&world, "class-43474", "bob/aux").await,
        Some(WorkerState::Done)
    );

    // The room is dismissed: the job ends with every file stored.
    let dismissed = Instant::now();
    application(&world)
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: APP,
            room_id: ROOM,
        })
        .await
        .unwrap();
    let job = ended(&world, "class-43474", "Succeeded", 90).await;
    assert!(
        dismissed.elapsed() < Duration::from_secs(40),
        "ended {:?} after the dismissal",
        dismissed.elapsed()
    );
    let status = job.status.clone().unwrap();
    assert_eq!(status.stop_reason, Some(StopReason::RoomDismissed));
    let people: Vec<&str> = status.workers.iter().map(|w| w.user_id.as_str()).collect();
    assert_eq!(
        people,
        ["alice", "bob", "bob/aux", "carol"],
        "{}",
        status_json(&job)
    );
    assert_files_play(&job, &["h264", "aac"]);
    // Alice's two sessions are two parts, in order; everyone else has theirs.
    let alices = files_of(&job, "alice", "main");
    assert_eq!(alices.len(), 2, "{}", status_json(&job));
    assert!(alices[0].ended_at <= alices[1].started_at, "{alices:#?}");
    for (user, stream) in [("bob", "main"), ("bob", "aux"), ("carol", "main")] {
        assert!(
            !files_of(&job, user, stream).is_empty(),
            "no files of {user} {stream}: {}",
            status_json(&job)
        );
    }
    // Five relays (Alice twice), each stopped; no worker left.
    let relays = world.trtc.relays();
    assert_eq!(relays.len(), 5, "{relays:#?}");
    assert!(relays.iter().all(|r| !r.is_running()));
    // The callback lists every person's files, in the room's order.
    let delivered = wait_until(Duration::from_secs(30), || async {
        !world.receiver.requests.lock().unwrap().is_empty()
    })
    .await;
    assert!(delivered.is_ok(), "no callback: {}", world.op.log_text());
    let (_, body) = world.receiver.requests.lock().unwrap()[0].clone();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let listed: Vec<&str> = body["Files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["UserId"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), files(&job).len(), "{body:#}");
    assert_eq!(listed.first(), Some(&"alice"), "{body:#}");
    assert!(
        body["Files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["Status"] == 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_event_named_people_start_when_they_publish_and_dismissal_ends_at_once() {
    let world = world("onpublish", SECRET_KEY).await;
    let sig = recorder_sig();
    apply_in(
        &world.ns,
        &relay_example(
            &world,
            &sig,
            &[(
                "record: [anchor-1]",
                "record: [anchor-1]\n      startOn: publish".into(),
            )],
        ),
    );
    // Nobody publishes: no worker waits on a stream that is not there.
    wait_for("the job waiting for anchor-1", &world, || async {
        world.api.get("heritage-43474").await.is_ok_and(|job| {
            job.status.is_some_and(|s| {
                s.workers
                    .first()
                    .is_some_and(|w| w.message.contains("waiting for anchor-1 to publish"))
            })
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker_pods(&world).await.is_empty());
    assert!(world.trtc.relays().is_empty());
    // Someone else publishing starts nothing.
    let other = world.trtc.anchor(APP, ROOM, "someone-else");
    other.publish(small_camera()).unwrap();
    // anchor-1 publishes: the relay and the worker start.
    let anchor = world.trtc.anchor(APP, ROOM, "anchor-1");
    anchor.publish(small_camera()).unwrap();
    recording(&world, "heritage-43474", "anchor-1", 3.0).await;
    assert_eq!(world.trtc.relays().len(), 1, "{:#?}", world.trtc.relays());
    // The room's dismissal ends the job at once.
    let dismissed = Instant::now();
    application(&world)
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: APP,
            room_id: ROOM,
        })
        .await
        .unwrap();
    let job = ended(&world, "heritage-43474", "Succeeded", 60).await;
    assert!(
        dismissed.elapsed() < Duration::from_secs(20),
        "{:?}",
        dismissed.elapsed()
    );
    assert_eq!(
        job.status.as_ref().unwrap().stop_reason,
        Some(StopReason::RoomDismissed)
    );
    assert_files_play(&job, &["h264", "aac"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_event_unsigned_replayed_and_foreign_events_change_nothing() {
    let world = world("events", SECRET_KEY).await;
    apply_in(&world.ns, &whole_room_example(&world, &[]));
    let job_before = || async { status_json(&world.api.get("class-43474").await.unwrap()) };
    wait_for("the job waiting", &world, || async {
        world
            .api
            .get("class-43474")
            .await
            .is_ok_and(|j| j.status.is_some_and(|s| s.phase.is_some()))
    })
    .await;
    let before = job_before().await;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let event = |app: u64, ts_ms: i64| {
        serde_json::to_vec(&json!({
            "EventGroupId": 2, "EventType": 201, "CallbackTs": ts_ms,
            "EventInfo": {"RoomId": ROOM, "EventTs": ts_ms / 1000, "EventMsTs": ts_ms,
                          "UserId": "mallory", "Role": 20, "TerminalType": 1, "UserType": 3, "Reason": 0},
        }))
        .map(|body| (app, body))
        .unwrap()
    };
    // Unsigned, signed with another key, a replay from ten minutes ago: refused.
    let (_, fresh) = event(APP, now_ms);
    assert_eq!(world.trtc.send_raw(&fresh, None).await, Ok(401));
    assert_eq!(
        world.trtc.send_raw(&fresh, Some("bm90IHRoZSBzaWdu")).await,
        Ok(401)
    );
    let (_, stale) = event(APP, now_ms - 600_000);
    let stale_sign = world.trtc.sign(&stale).unwrap();
    assert_eq!(
        world.trtc.send_raw(&stale, Some(&stale_sign)).await,
        Ok(400)
    );
    // An oversized body, malformed JSON: refused.
    let big = vec![b' '; 70 * 1024];
    let big_sign = world.trtc.sign(&big).unwrap();
    assert_eq!(world.trtc.send_raw(&big, Some(&big_sign)).await, Ok(413));
    let junk = b"{\"EventType\":";
    let junk_sign = world.trtc.sign(junk).unwrap();
    assert_eq!(world.trtc.send_raw(junk, Some(&junk_sign)).await, Ok(400));
    // A well-signed event of another application's room: acknowledged, ignored.
    let (_, foreign) = event(APP + 1, now_ms);
    let body = String::from_utf8(foreign.clone()).unwrap();
    let foreign_sign = world.trtc.sign(body.as_bytes()).unwrap();
    let answered = reqwest::Client::new()
        .post(format!("http://{}/trtc/events", events_address(&world)))
        .header("Sign", foreign_sign)
        .header("SdkAppId", (APP + 1).to_string())
        .body(foreign)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(answered, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        job_before().await,
        before,
        "an event that should change nothing did"
    );
    assert!(worker_pods(&world).await.is_empty());
    let metrics = world.op.metrics().await;
    for (result, at_least) in [
        ("refused-signature", 2),
        ("refused-stale", 1),
        ("refused-malformed", 2),
        ("ignored", 1),
    ] {
        let line = format!("roomrec_room_events_total{{result=\"{result}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(count >= at_least, "{result}: {count}\n{metrics}");
    }
}

/// The operator's room events address, from its flags.
fn events_address(world: &World) -> String {
    let at = world
        .op_args
        .iter()
        .position(|a| a == "--room-events-address")
        .unwrap();
    world.op_args[at + 1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_room_an_operator_restart_mid_room_loses_and_doubles_nobody() {
    let mut world = world("roomrestart", SECRET_KEY).await;
    apply_in(&world.ns, &whole_room_example(&world, &[]));
    let alice = world.trtc.anchor(APP, ROOM, "alice");
    alice.publish(small_camera()).unwrap();
    recording(&world, "class-43474", "alice", 2.0).await;
    // The operator dies; meanwhile Bob publishes. TRTC's callback fails and is retried every
    // 10 s for a minute: the new operator gets it.
    world.op.child.start_kill().unwrap();
    let _ = world.op.child.wait().await;
    let bob = world.trtc.anchor(APP, ROOM, "bob");
    bob.publish(small_camera()).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    world.op = start_operator(&world.ns, &world.op_args).await;
    recording(&world, "class-43474", "bob", 3.0).await;
    recording(&world, "class-43474", "alice", 6.0).await;
    // Nobody doubled: one worker pod and one relay each.
    let pods = worker_pods(&world).await;
    assert_eq!(
        pods.len(),
        2,
        "{:?}",
        pods.iter()
            .map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(world.trtc.relays().len(), 2, "{:#?}", world.trtc.relays());
    application(&world)
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: APP,
            room_id: ROOM,
        })
        .await
        .unwrap();
    let job = ended(&world, "class-43474", "Succeeded", 90).await;
    assert_files_play(&job, &["h264", "aac"]);
    for user in ["alice", "bob"] {
        assert_eq!(
            files_of(&job, user, "main").len(),
            1,
            "{}",
            status_json(&job)
        );
    }
}
