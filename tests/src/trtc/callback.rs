//! Room event callbacks as TRTC sends them: a JSON POST with `Sign` =
//! base64(HMAC-SHA256(callback key, raw body)) and `SdkAppId` headers; an answer other than
//! HTTP 200, or none within the timeout (5 s), is retried at once, then every interval (10 s),
//! until the retry period (1 minute from the first try) is over.
//!
//! Events go out in the order they happened: each one's first attempt is made before the next
//! event's; retries run beside later events.

use super::Shared;
use super::model::{Attempt, Delivery};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::UnboundedReceiver;

/// How TRTC retries a callback; [`Default`] is TRTC's own (5 s, 10 s, 1 minute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackRetry {
    /// An attempt without an answer this long has failed.
    pub timeout: Duration,
    /// Pause between retries after the immediate one.
    pub interval: Duration,
    /// No attempt starts this long after the first one.
    pub give_up_after: Duration,
}

impl Default for CallbackRetry {
    fn default() -> Self {
        CallbackRetry {
            timeout: Duration::from_secs(5),
            interval: Duration::from_secs(10),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// `Sign`: standard base64 of HMAC-SHA256(`key`, `body`).
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts `body` once with these headers; the HTTP status or why there is none.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    sdk_app_id: Option<u64>,
    sign: Option<&str>,
    body: Vec<u8>,
) -> Result<u16, String> {
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(sign) = sign {
        request = request.header("Sign", sign);
    }
    if let Some(app) = sdk_app_id {
        request = request.header("SdkAppId", app.to_string());
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the answer so the connection can be reused; its content is ignored.
            let _ = response.bytes().await;
            Ok(status)
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            Err(message)
        }
    }
}

/// One attempt at event `index`; true when answered with HTTP 200.
async fn attempt(shared: &Shared, client: &reqwest::Client, url: &str, index: usize) -> bool {
    let Some((app, raw, sign)) = shared
        .lock()
        .events
        .get(index)
        .map(|e| (e.sdk_app_id, e.raw.clone(), e.sign.clone()))
    else {
        return true;
    };
    let at = SystemTime::now();
    let answer = post(client, url, Some(app), Some(&sign), raw.into_bytes()).await;
    let delivered = answer == Ok(200);
    let mut world = shared.lock();
    if let Some(event) = world.events.get_mut(index) {
        event.attempts.push(Attempt { at, answer });
        if delivered {
            event.delivery = Delivery::Delivered;
        }
    }
    delivered
}

async fn retry(
    shared: Arc<Shared>,
    client: reqwest::Client,
    url: String,
    index: usize,
    first: Instant,
    policy: CallbackRetry,
) {
    // At once after the first failure, then every interval.
    if attempt(&shared, &client, &url, index).await {
        return;
    }
    loop {
        if first.elapsed() + policy.interval >= policy.give_up_after {
            break;
        }
        tokio::time::sleep(policy.interval).await;
        if attempt(&shared, &client, &url, index).await {
            return;
        }
    }
    if let Some(event) = shared.lock().events.get_mut(index) {
        event.delivery = Delivery::GaveUp;
    }
}

/// Sends every queued event (by index into the event log) to `url`.
pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    url: String,
    policy: CallbackRetry,
    mut queue: UnboundedReceiver<usize>,
) {
    let client = match reqwest::Client::builder().timeout(policy.timeout).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("TRTC stand-in: no HTTP client for callbacks: {e}");
            return;
        }
    };
    // Dropping the dispatcher (the stand-in is dropped) aborts its retries too.
    let mut retries = tokio::task::JoinSet::new();
    while let Some(index) = queue.recv().await {
        let first = Instant::now();
        if !attempt(&shared, &client, &url, index).await {
            retries.spawn(retry(
                shared.clone(),
                client.clone(),
                url.clone(),
                index,
                first,
                policy,
            ));
        }
        while retries.try_join_next().is_some() {}
    }
}
