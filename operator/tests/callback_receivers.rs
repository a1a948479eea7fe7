//! Callback receivers that answer badly: the operator's delivery (the client it uses in the
//! cluster) against real HTTP servers on loopback that redirect, hang, flood or answer noise.
//! Each ends as a clear failure (retried by the job's retry budget) or a plain success, and
//! nothing of the signed body goes anywhere the job did not name.

mod support {
    pub mod callbacks;

    pub use self::callbacks::*;
}

use roomrec_api::crd::{Phase, RecordingJob};
use roomrec_operator::callback::{deliver, http_client};
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

const KEY: &[u8] = b"callback-signing-key";

fn job(url: &str) -> RecordingJob {
    serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1", "kind": "RecordingJob",
        "metadata": {"name": "class-7", "namespace": "rec", "uid": "0b8c0a52-5e67-4f7b-9f1e-0d8b2f0e1a11"},
        "spec": {"source": {"url": "rtmp://media.example/live/alice"},
                 "storage": {"volume": {"claimName": "recordings"}},
                 "callback": {"url": url}},
        "status": {"phase": "Succeeded", "files": [
            {"url": "https://bucket.example/alice_part0001.mp4", "userId": "alice",
             "status": "succeeded", "part": 1}]}
    }))
    .unwrap()
}

async fn send(url: &str) -> Result<(), String> {
    deliver(
        &http_client(),
        &job(url),
        Phase::Succeeded,
        Some(KEY),
        Duration::from_secs(2),
    )
    .await
}

#[tokio::test]
async fn a_redirecting_receiver_is_not_followed_and_says_where_it_pointed() {
    let elsewhere = Receiver::start(0).await;
    let to = elsewhere.url();
    let redirecting = Receiver::answering(move |_| Answer::Redirect(to.clone())).await;
    let refusal = send(&redirecting.url()).await.unwrap_err();
    assert!(
        refusal.contains("307") && refusal.contains(&elsewhere.url()),
        "{refusal}"
    );
    assert!(refusal.contains("spec.callback.url"), "{refusal}");
    assert_eq!(redirecting.requests.lock().unwrap().len(), 1);
    assert!(
        elsewhere.requests.lock().unwrap().is_empty(),
        "the signed body went where the job did not name"
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_fails_at_the_timeout() {
    let silent = Receiver::answering(|_| Answer::Hang).await;
    let started = Instant::now();
    let refusal = send(&silent.url()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{refusal}");
    assert!(refusal.contains(&silent.url()), "{refusal}");
}

#[tokio::test]
async fn a_refusal_is_quoted_short_and_clean_however_much_the_receiver_sends() {
    // 20 MiB of refusal with control characters in it.
    let flood = [b"denied\x1b[31m\r\n".as_slice(), &vec![b'x'; 20 << 20]].concat();
    let flooding = Receiver::answering(move |_| Answer::Status(503, flood.clone())).await;
    let refusal = send(&flooding.url()).await.unwrap_err();
    assert!(
        refusal.contains("503") && refusal.contains("denied"),
        "{refusal}"
    );
    assert!(!refusal.chars().any(char::is_control), "{refusal:?}");
    assert!(refusal.len() < 400, "{} bytes", refusal.len());
}

#[tokio::test]
async fn a_success_with_a_body_of_noise_is_a_success() {
    let noisy = Receiver::answering(|n| Answer::Status(200, vec![n as u8; 3000])).await;
    send(&noisy.url()).await.unwrap();
    let requests = noisy.requests.lock().unwrap();
    let (headers, body) = &requests[0];
    assert!(headers.iter().any(|(k, _)| k == "x-roomrec-signature"));
    let sent: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        sent["Files"][0]["RecordFile"],
        "https://bucket.example/alice_part0001.mp4"
    );
}
