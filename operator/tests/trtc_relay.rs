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

    pub use self::{
        callbacks::*, cluster::*, cos::*, examples::*, jobs::*, operator_process::*, processes::*,
        stored_files::*,
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
use roomrec_testbed::media::StreamSpec;
use roomrec_testbed::trtc::{StandInConfig, TrtcStandIn};
use roomrec_testbed::wait_until;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

const APP: u64 = 1400000000;
/// The application's secret key (TRTC console): the stand-in checks UserSigs with it.
const APP_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
/// The CSS push domain's authentication key (the example's).
const PUSH_KEY: &str = "e12c46f2612d5106e2034781ab261ca3";
/// The room event callback key set in the TRTC console.
const EVENTS_KEY: &str = "roomrecEvents0123456789abcdefghi";
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
    cluster().await;
    let ns = bed().namespace(prefix).await.unwrap();
    let dir = bed().scratch(&format!("trtc-{ns}")).unwrap();
    let (cos, cos_port) = examples_cos().await;
    let events_port = roomrec_testbed::ports::free_port();
    let trtc = TrtcStandIn::start(
        StandInConfig::new(&dir)
            .app(APP, APP_KEY)
            .credential(SECRET_ID, SECRET_KEY)
            .push_key(PUSH_KEY)
            .callback(
                &format!("http://127.0.0.1:{events_port}/trtc/events"),
                EVENTS_KEY,
            ),
    )
    .await
    .unwrap();
    let credentials = dir.join("trtc-api");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("secretId"), SECRET_ID).unwrap();
    std::fs::write(credentials.join("secretKey"), secret_key).unwrap();
    let events_key = dir.join("events-key");
    std::fs::write(&events_key, EVENTS_KEY).unwrap();
    let op_args: Vec<String> = vec![
        "--worker-env".into(),
        format!("ROOMREC_RESOLVE=class-1250000000.localhost=127.0.0.1:{cos_port}"),
        "--trtc-api-endpoint".into(),
        trtc.endpoint(),
        "--trtc-region".into(),
        "ap-guangzhou".into(),
        "--trtc-credentials-dir".into(),
        credentials.display().to_string(),
        "--room-events-address".into(),
        format!("127.0.0.1:{events_port}"),
        "--room-events-key-file".into(),
        events_key.display().to_string(),
    ];
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

/// A small camera: 320×240 at 15 fps with AAC, so several run at once on two cores.
fn camera() -> StreamSpec {
    StreamSpec {
        width: 320,
        height: 240,
        fps: 15,
        video_kbps: 300,
        ..StreamSpec::default()
    }
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
    anchor.publish(camera()).unwrap();
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
    assert!(worker_pods(&world).await.iter().all(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
    }));

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_start_dismiss_room_ends_a_two_person_job_with_every_file_stored() {
    let world = world("dismiss", SECRET_KEY).await;
    let alice = world.trtc.anchor(APP, ROOM, "alice");
    let bob = world.trtc.anchor(APP, ROOM, "bob");
    alice.publish(camera()).unwrap();
    bob.publish(camera()).unwrap();
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
    anchor.publish(camera()).unwrap();
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
    anchor.publish(camera()).unwrap();
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
    anchor.publish(camera()).unwrap();
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
    anchor.publish(camera()).unwrap();
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
