//! The heritage HTTP API end to end: an operator (as the chart's ServiceAccount, with the
//! chart's heritage Role) serving the API, the TRTC stand-in (a test double for Tencent's
//! cloud: it checks every UserSig and API call, runs relays and sends signed room events to the
//! operator), the COS stand-in for the template's sample bucket, and real workers. Requests are
//! the serverless template's, starting with its documented sample.

mod support {
    pub mod callbacks;
    pub mod cluster;
    pub mod cos;
    pub mod heritage;
    pub mod jobs;
    pub mod kubectl;
    pub mod logs;
    pub mod operator_process;
    pub mod stored_files;
    pub mod trtc_world;

    pub use self::{callbacks::*, heritage::*, jobs::*, stored_files::*, trtc_world::*};
}

use kube::ResourceExt;
use kube::api::DeleteParams;
use reqwest::Method;
use roomrec_api::StopReason;
use roomrec_api::crd::RecordingJob;
use roomrec_operator::callback::payload;
use roomrec_operator::trtc_api::{DismissRoomRequest, TrtcApiConfig, TrtcClient};
use roomrec_testbed::wait_until;
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

/// The heritage API's limit on a body.
const MAX_BODY: usize = 64 * 1024;

/// A POST that succeeded: the template's answer, a request id and the job it names.
fn submitted(reply: &Reply, world: &HeritageWorld) -> (String, String) {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "Async run task submitted");
    let request_id = reply.header("x-scf-reqid");
    assert!(
        uuid::Uuid::parse_str(&request_id).is_ok(),
        "x-scf-reqid {request_id:?}"
    );
    let job = reply.header("X-Roomrec-Job");
    let name = job
        .strip_prefix(&format!("{}/", world.ns))
        .unwrap_or_else(|| panic!("X-Roomrec-Job {job:?}"))
        .to_string();
    (request_id, name)
}

async fn wait_phase_of(world: &HeritageWorld, name: &str, phase: &str) -> RecordingJob {
    wait_phase(
        &world.api,
        name,
        &[phase],
        Duration::from_secs(90),
        &world.op,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heritage_refuses_a_missing_or_wrong_token_with_401_counts_it_and_creates_nothing() {
    let world = heritage_world("heritage-token", Relay::Start).await;
    let body = sample_request().to_string().into_bytes();
    let id = uuid::Uuid::new_v4().to_string();
    for (method, path, token) in [
        (Method::POST, "/recordings", None),
        (Method::POST, "/", Some("not-the-token-0123456789")),
        (Method::POST, "/recordings", Some(&TOKEN[..TOKEN.len() - 1])),
        (Method::GET, &*format!("/recordings/{id}"), Some("wrong")),
        (Method::DELETE, &*format!("/recordings/{id}"), None),
    ] {
        let reply = world.send(method, path, token, &[], body.clone()).await;
        assert_eq!(reply.status, 401, "{path} {token:?}: {}", reply.body);
        assert_eq!(reply.field(), "Authorization");
        assert_eq!(reply.header("WWW-Authenticate"), "Bearer");
        assert!(reply.header("x-scf-reqid").is_empty());
    }
    assert_eq!(world.counted("refused-token").await, 5);
    assert_eq!(world.counted("created").await, 0);
    assert!(world.jobs().await.is_empty());
    assert!(world.request_secrets().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heritage_refuses_an_oversized_body_with_413_and_bad_fields_with_400_naming_them() {
    let world = heritage_world("heritage-bad", Relay::Start).await;
    // Valid JSON just over the limit: refused for its size before it is parsed.
    let mut big = sample_request();
    big["Callback"] = json!(format!("https://lms.example.com/{}", "a".repeat(MAX_BODY)));
    let reply = world
        .send(
            Method::POST,
            "/recordings",
            Some(TOKEN),
            &[],
            big.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.field(), "Body");
    assert_eq!(world.counted("refused-too-large").await, 1);

    let edited = |field: &str, value: Value| {
        let mut request = sample_request();
        match field.split_once('.') {
            Some((outer, inner)) => request[outer][inner] = value,
            None => request[field] = value,
        }
        request
    };
    let forged = user_sig(RECORDER, b"not the application's key");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"SdkAppId\": 1400000000,".to_vec(), "Body"),
        (b"[1, 2]".to_vec(), "Body"),
        (
            edited("Storage", json!("cos")).to_string().into(),
            "Storage",
        ),
        (
            edited("CosConfig.Endpoint", json!("x")).to_string().into(),
            "CosConfig.Endpoint",
        ),
        (
            edited("RoomId", json!("43474")).to_string().into(),
            "RoomId",
        ),
        (
            edited("SdkAppId", json!(1400000000.0)).to_string().into(),
            "SdkAppId",
        ),
        (
            edited("CosConfig.Bucket", json!("test")).to_string().into(),
            "CosConfig.Bucket",
        ),
        (edited("Mode", json!("03")).to_string().into(), "Mode"),
        // Decodes and names the right app and user, but is signed with another key.
        (
            edited("UserSig", json!(forged)).to_string().into(),
            "UserSig",
        ),
    ];
    let count = cases.len() as u64;
    for (body, field) in cases {
        let reply = world
            .send(Method::POST, "/recordings", Some(TOKEN), &[], body)
            .await;
        assert_eq!(reply.status, 400, "{field}: {}", reply.body);
        assert_eq!(reply.field(), field, "{}", reply.body);
        let message = reply.json()["Error"]["Message"].to_string();
        assert!(!message.contains(&forged), "the answer repeats the UserSig");
    }
    let reply = world
        .post(&sample_request(), &[("Idempotency-Key", "two words")])
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.field(), "Idempotency-Key");
    assert_eq!(world.counted("refused-invalid").await, count + 1);
    assert!(world.jobs().await.is_empty());
    assert!(world.request_secrets().await.is_empty());
    let log = world.op.log_text();
    assert!(
        !log.contains(&forged) && !log.contains(APP_KEY),
        "the operator logged a secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heritage_sample_request_is_submitted_once_however_often_it_is_sent() {
    let world = heritage_world("heritage-once", Relay::Start).await;
    let sample = sample_request();
    let first = world.post(&sample, &[]).await;
    let (request_id, name) = submitted(&first, &world);

    // The same recording again, at once and five times together: the same id, nothing new.
    let again = world.post(&sample, &[]).await;
    assert_eq!(
        submitted(&again, &world),
        (request_id.clone(), name.clone())
    );
    let together = futures::future::join_all((0..5).map(|_| world.post(&sample, &[]))).await;
    for reply in &together {
        assert_eq!(submitted(reply, &world).0, request_id);
    }
    let jobs = world.jobs().await;
    assert_eq!(
        jobs.len(),
        1,
        "{:?}",
        jobs.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(world.counted("created").await, 1);
    assert_eq!(world.counted("existing").await, 6);

    // The job: the whole room, the sample's mode and bucket, the template's choices; relay:
    // start verified the UserSig with the application's key and kept it nowhere.
    let job = &jobs[0];
    assert_eq!(job.name_any(), name);
    let spec = serde_json::to_value(&job.spec).unwrap();
    let trtc = &spec["source"]["trtc"];
    assert_eq!(trtc["sdkAppId"], APP);
    assert_eq!(trtc["roomId"], ROOM);
    assert_eq!(trtc["userId"], RECORDER);
    assert_eq!(trtc["relay"], "start");
    assert!(
        trtc["wholeRoom"].is_object() && trtc.get("record").is_none(),
        "{spec}"
    );
    assert_eq!(trtc["secretKeySecret"]["name"], "trtc-app-key");
    assert!(trtc.get("userSigSecret").is_none());
    assert_eq!(spec["mode"], "AudioVideoMp4");
    assert_eq!(
        spec["storage"]["cos"],
        json!({"region": "ap-shanghai", "bucket": BUCKET, "path": "/trtc",
               "credentialsSecret": "cos-keys",
               "endpoint": spec["storage"]["cos"]["endpoint"].clone()})
    );
    let sig = sample["UserSig"].as_str().unwrap();
    assert!(!serde_json::to_string(job).unwrap().contains(sig));
    assert!(world.request_secrets().await.is_empty());
    assert_eq!(job.labels()["heritage.roomrec.dev/request-id"], request_id);

    // GET: the heritage result so far, with the phase.
    let status = world.recording(Method::GET, &request_id).await;
    assert_eq!(status.status, 200, "{}", status.body);
    let body = status.json();
    assert_eq!(body["SdkAppId"], APP);
    assert_eq!(body["RoomId"], ROOM);
    assert_eq!(body["UserId"], RECORDER);
    assert_eq!(body["StrRoomId"], "");
    assert_eq!(body["Files"], json!([]));
    assert!(
        body["Phase"].is_string() && body["StopReason"] == "",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heritage_get_and_delete_by_request_id_and_an_idempotency_key_outlives_the_recording() {
    let world = heritage_world("heritage-keys", Relay::Start).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let shouted = unknown.to_uppercase();
    for id in [unknown.as_str(), shouted.as_str(), "not-a-request-id"] {
        let reply = world.recording(Method::GET, id).await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        assert_eq!(reply.field(), "RequestId");
    }
    let sample = sample_request();
    let keyed = [("Idempotency-Key", "lesson-7-recording")];
    let (first_id, first_job) = submitted(&world.post(&sample, &keyed).await, &world);

    // DELETE: 202 with the result, spec.stop set, the job ends Stopped.
    let stopped = world.recording(Method::DELETE, &first_id).await;
    assert_eq!(stopped.status, 202, "{}", stopped.body);
    assert_eq!(stopped.header("x-scf-reqid"), first_id);
    assert_eq!(stopped.json()["UserId"], RECORDER);
    assert!(world.api.get(&first_job).await.unwrap().spec.stop);
    wait_phase_of(&world, &first_job, "Stopped").await;
    let after = world.recording(Method::GET, &first_id).await.json();
    assert_eq!(after["Phase"], "Stopped", "{after}");
    assert_eq!(after["StopReason"], "stop-requested", "{after}");

    // The key names that recording whatever its phase; without it, a new recording starts
    // under the next name.
    let replay = submitted(&world.post(&sample, &keyed).await, &world);
    assert_eq!(replay, (first_id.clone(), first_job.clone()));
    let (second_id, second_job) = submitted(&world.post(&sample, &[]).await, &world);
    assert_ne!(second_id, first_id);
    assert_eq!(
        second_job,
        format!("{}2", first_job.strip_suffix('1').unwrap())
    );
    // A new key sent while that one records is answered by it, and keeps naming it.
    let other_key = [("Idempotency-Key", "lesson-7-retry")];
    assert_eq!(
        submitted(&world.post(&sample, &other_key).await, &world).0,
        second_id
    );
    world.recording(Method::DELETE, &second_id).await;
    wait_phase_of(&world, &second_job, "Stopped").await;
    assert_eq!(
        submitted(&world.post(&sample, &other_key).await, &world).0,
        second_id
    );
    assert_eq!(world.jobs().await.len(), 2);

    // The same key for another room is a mistake the client must hear about.
    let mut elsewhere = sample.clone();
    elsewhere["RoomId"] = json!(ROOM + 1);
    let reused = world.post(&elsewhere, &keyed).await;
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert_eq!(reused.field(), "Idempotency-Key");
    assert_eq!(world.jobs().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heritage_relay_existing_keeps_the_usersig_and_inline_keys_in_a_secret_the_job_owns() {
    let world = heritage_world("heritage-secret", Relay::Existing).await;
    let mut request = sample_request();
    request["CosConfig"]["SecretId"] = json!(COS_SECRET_ID);
    request["CosConfig"]["SecretKey"] = json!(COS_SECRET_KEY);
    let (request_id, name) = submitted(&world.post(&request, &[]).await, &world);
    let job = world.api.get(&name).await.unwrap();

    let secrets = world.request_secrets().await;
    assert_eq!(secrets.len(), 1);
    let secret = &secrets[0];
    let secret_name = secret.name_any();
    assert_eq!(secret_name, format!("heritage-{request_id}"));
    let data = secret.data.clone().unwrap();
    let value = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    assert_eq!(value("secretId"), COS_SECRET_ID);
    assert_eq!(value("secretKey"), COS_SECRET_KEY);
    let sig = request["UserSig"].as_str().unwrap();
    assert_eq!(value("userSig"), sig);
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].kind, "RecordingJob");
    assert_eq!(owners[0].name, name);
    assert_eq!(Some(&owners[0].uid), job.metadata.uid.as_ref());

    // The job names the Secret and holds none of its values.
    let text = serde_json::to_string(&job).unwrap();
    for secret_value in [COS_SECRET_KEY, sig] {
        assert!(
            !text.contains(secret_value),
            "the RecordingJob holds a secret: {text}"
        );
    }
    let trtc = job.spec.source.trtc.as_ref().unwrap();
    assert_eq!(trtc.user_sig_secret.as_ref().unwrap().name, secret_name);
    let cos = job.spec.storage.as_ref().unwrap().cos.as_ref().unwrap();
    assert_eq!(
        cos.credentials_secret.as_deref(),
        Some(secret_name.as_str())
    );
    let log = world.op.log_text();
    assert!(
        !log.contains(COS_SECRET_KEY) && !log.contains(sig),
        "logged a secret"
    );

    // Owned: deleting the job deletes the Secret (the garbage collector follows the owner).
    world
        .api
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let gone = wait_until(Duration::from_secs(60), || async {
        world.request_secrets().await.is_empty()
    })
    .await;
    assert!(gone.is_ok(), "the request's Secret outlived its job");
}

/// The full path: anchors publish, TRTC's room events have the operator start a relay and a
/// worker per anchor, the files go into the sample's bucket, DismissRoom ends it, and the
/// callback (and GET) carry the template's result. Needs whole-room recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heritage_sample_request_records_the_room_and_calls_back_once() {
    let world = heritage_world("heritage-room", Relay::Start).await;
    let receiver = Receiver::start(0).await;
    let anchors = ["anchor_1", "anchor_2"];
    for user in anchors {
        world
            .trtc
            .anchor(APP, ROOM, user)
            .publish(small_camera())
            .unwrap();
    }
    let mut request = sample_request();
    request["Callback"] = json!(receiver.url());
    let (request_id, name) = submitted(&world.post(&request, &[]).await, &world);

    let both_recording = wait_until(Duration::from_secs(90), || async {
        world.api.get(&name).await.is_ok_and(|job| {
            anchors.iter().all(|a| {
                files(&job)
                    .iter()
                    .any(|f| f.user_id == *a && f.duration_seconds >= 3.0)
            })
        })
    })
    .await;
    let status = world.api.get(&name).await.ok().map(|j| status_json(&j));
    assert!(
        both_recording.is_ok(),
        "the anchors are not both recorded: {status:?}\nroom events sent: {:#?}\n{}",
        world.trtc.events(),
        world.op.log_text()
    );
    let running = world.recording(Method::GET, &request_id).await.json();
    assert_eq!(running["Phase"], "Recording", "{running}");
    for anchor in anchors {
        assert!(
            running["Files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["UserId"] == anchor && f["Message"] == "recording"),
            "{running}"
        );
    }

    let mut config = TrtcApiConfig::new(SECRET_ID.into(), SECRET_KEY.into(), "ap-guangzhou");
    config.endpoint = world.trtc.endpoint();
    TrtcClient::new(config)
        .unwrap()
        .dismiss_room(&DismissRoomRequest {
            sdk_app_id: APP,
            room_id: ROOM,
        })
        .await
        .unwrap();
    let job = ended_as(
        &world.api,
        &name,
        "Succeeded",
        Duration::from_secs(90),
        &world.op,
    )
    .await;
    assert_files_play(&job, &["h264", "aac"]);

    assert_eq!(
        job.status.as_ref().and_then(|s| s.stop_reason),
        Some(StopReason::RoomDismissed),
        "{}",
        status_json(&job)
    );

    // One callback, the template's result: exactly the job's payload, a stored file entry per
    // anchor's part, in the sample's bucket and folder.
    let delivered = wait_until(Duration::from_secs(30), || async {
        !receiver.requests.lock().unwrap().is_empty()
    })
    .await;
    assert!(delivered.is_ok(), "no callback: {}", world.op.log_text());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "the callback came more than once");
    let callback: Value = serde_json::from_slice(&requests[0].1).unwrap();
    let job = world.api.get(&name).await.unwrap();
    assert_eq!(callback, serde_json::to_value(payload(&job)).unwrap());
    assert_eq!(callback["SdkAppId"], APP);
    assert_eq!(callback["RoomId"], ROOM);
    assert_eq!(callback["UserId"], RECORDER);
    assert_eq!(callback["StrRoomId"], "");
    let entries = callback["Files"].as_array().unwrap();
    assert_eq!(entries.len(), files(&job).len(), "{callback}");
    for anchor in anchors {
        assert!(entries.iter().any(|f| f["UserId"] == anchor), "{callback}");
    }
    for entry in entries {
        let url = entry["RecordFile"].as_str().unwrap();
        assert!(
            url.starts_with(&format!(
                "https://{BUCKET}.cos.ap-shanghai.myqcloud.com/trtc/{APP}_{ROOM}_"
            )),
            "{url}"
        );
        assert_eq!(entry["Status"], 1, "{callback}");
    }

    // GET after the end: the callback's body exactly, with the phase and why it ended.
    let mut ended = world.recording(Method::GET, &request_id).await.json();
    assert_eq!(ended["Phase"], "Succeeded");
    assert_eq!(ended["StopReason"], "room-dismissed");
    let object = ended.as_object_mut().unwrap();
    object.remove("Phase");
    object.remove("StopReason");
    assert_eq!(ended, callback);
}
