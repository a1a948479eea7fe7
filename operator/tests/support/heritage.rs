//! A heritage API world: a namespace with the chart's heritage Role, the TRTC stand-in (room
//! events to the operator), the COS stand-in for the template's sample bucket, the Secrets the
//! heritage template names, and an operator serving the heritage API there; plus a client for
//! the API and the template's documented sample request.

use super::cluster::{bed, cluster};
use super::cos::examples_cos;
use super::jobs::jobs;
use super::kubectl::{helm_template_with, kubectl_apply};
use super::operator_process::Operator;
use super::trtc_world::{APP, APP_KEY, PUSH_KEY, SECRET_KEY, TrtcSide, trtc_side};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use roomrec_api::crd::RecordingJob;
use roomrec_api::trtc::usersig;
use roomrec_testbed::cos::CosStandIn;
use roomrec_testbed::trtc::TrtcStandIn;
use serde_json::{Value, json};

/// The heritage API's bearer token.
pub const TOKEN: &str = "heritage-token-0123456789abcdef";
/// The key pair the COS stand-in accepts.
pub const COS_SECRET_ID: &str = "AKIDEXAMPLEEXAMPLEEXAMPLE";
pub const COS_SECRET_KEY: &str = "example-secret-key";
/// The template's sample request's room, recording identity and bucket.
pub const ROOM: u32 = 43474;
pub const RECORDER: &str = "user_55952145";
pub const BUCKET: &str = "test-123456789";

/// How the world's heritage template has the anchors' streams reach the workers.
#[derive(Clone, Copy, PartialEq)]
pub enum Relay {
    /// relay: start (the stand-in's relays push each anchor to its CSS server).
    Start,
    /// relay: existing (the application's own relay to CDN; nothing in the stand-in plays it).
    Existing,
}

pub struct HeritageWorld {
    pub ns: String,
    pub op: Operator,
    pub trtc: TrtcStandIn,
    // Held so the COS stand-in serves as long as the world.
    #[allow(dead_code)]
    pub cos: CosStandIn,
    pub api: Api<RecordingJob>,
    /// `http://127.0.0.1:{port}` of the heritage API.
    pub base: String,
    http: reqwest::Client,
}

/// An answer of the heritage API.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `Error.Field` of a refusal.
    pub fn field(&self) -> String {
        self.json()["Error"]["Field"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A day's UserSig of `user`, signed with `key`.
pub fn user_sig(user: &str, key: &[u8]) -> String {
    usersig::generate(APP, user, key, now(), 86400, None)
}

/// The template's documented sample request, verbatim but for a real UserSig.
pub fn sample_request() -> Value {
    json!({
        "SdkAppId": APP,
        "RoomId": ROOM,
        "UserId": RECORDER,
        "Mode": "02",
        "UserSig": user_sig(RECORDER, APP_KEY.as_bytes()),
        "CosConfig": {"Region": "ap-shanghai", "Bucket": BUCKET, "Path": "/trtc"}
    })
}

async fn create_secret(ns: &str, name: &str, data: Value) {
    let secrets: Api<Secret> = Api::namespaced(bed().client().await.unwrap(), ns);
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A namespace served by an operator with the heritage API on, its template choosing `relay`.
pub async fn heritage_world(prefix: &str, relay: Relay) -> HeritageWorld {
    cluster().await;
    let ns = bed().namespace(prefix).await.unwrap();
    // The chart's heritage Role in this namespace: the operator runs with the chart's RBAC only.
    // (Rendering checks the whole chart, so the values an install needs are set too.)
    kubectl_apply(&helm_template_with(
        &["templates/rbac.yaml"],
        &[
            "heritage.enabled=true",
            &format!("heritage.namespace={ns}"),
            "heritage.tokenSecret.name=heritage-token",
            "heritage.template.playDomain=play.example.com",
            "trtc.events.enabled=true",
            "trtc.events.keySecret.name=trtc-callback",
        ],
    ));
    let dir = bed().scratch(&format!("heritage-{ns}")).unwrap();
    let (cos, cos_port) = examples_cos().await;
    std::fs::create_dir_all(bed().s3_bucket_dir.parent().unwrap().join(BUCKET)).unwrap();
    let TrtcSide {
        trtc,
        operator_args,
    } = trtc_side(&dir, SECRET_KEY).await;
    // The deployment's COS keys (the template's execution role) and, for relay: start, the
    // push key and the application's key.
    let cos_keys = json!({"secretId": COS_SECRET_ID, "secretKey": COS_SECRET_KEY});
    create_secret(&ns, "cos-keys", cos_keys).await;
    let mut template = json!({
        "playDomain": trtc.play_domain(),
        "idleTimeoutSeconds": 300,
        "storageCredentialsSecret": "cos-keys",
        "cosEndpoint": format!("http://localhost:{cos_port}"),
    });
    if relay == Relay::Start {
        create_secret(&ns, "css-push-key", json!({"key": PUSH_KEY})).await;
        create_secret(&ns, "trtc-app-key", json!({"key": APP_KEY})).await;
        template["relay"] = json!("start");
        template["pushDomain"] = json!(trtc.push_domain());
        template["pushKeySecret"] = json!({"name": "css-push-key", "key": "key"});
        template["secretKeySecret"] = json!({"name": "trtc-app-key", "key": "key"});
    }
    let token = dir.join("heritage-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let heritage_port = roomrec_testbed::ports::free_port();
    let mut args: Vec<String> = vec![
        "--worker-env".into(),
        format!("ROOMREC_RESOLVE={BUCKET}.localhost=127.0.0.1:{cos_port}"),
    ];
    args.extend(operator_args);
    args.extend([
        "--heritage-address".into(),
        format!("127.0.0.1:{heritage_port}"),
        "--heritage-token-file".into(),
        token.display().to_string(),
        "--heritage-namespace".into(),
        ns.clone(),
        "--heritage-template".into(),
        template.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let op = Operator::start(&ns, &args).await;
    let api = jobs(&ns).await;
    HeritageWorld {
        ns,
        op,
        trtc,
        cos,
        api,
        base: format!("http://127.0.0.1:{heritage_port}"),
        http: reqwest::Client::new(),
    }
}

impl HeritageWorld {
    /// A request to the heritage API with `token` (none: no Authorization header) and headers.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    /// POST `request` to `/recordings` with the right token and `headers`.
    pub async fn post(&self, request: &Value, headers: &[(&str, &str)]) -> Reply {
        let body = request.to_string().into_bytes();
        self.send(
            reqwest::Method::POST,
            "/recordings",
            Some(TOKEN),
            headers,
            body,
        )
        .await
    }

    /// GET or DELETE `/recordings/{request id}` with the right token.
    pub async fn recording(&self, method: reqwest::Method, request_id: &str) -> Reply {
        let path = format!("/recordings/{request_id}");
        self.send(method, &path, Some(TOKEN), &[], Vec::new()).await
    }

    /// The heritage RecordingJobs of the namespace.
    pub async fn jobs(&self) -> Vec<RecordingJob> {
        self.api.list(&Default::default()).await.unwrap().items
    }

    /// The Secrets of the namespace the heritage API made (labelled with a request id).
    pub async fn request_secrets(&self) -> Vec<Secret> {
        let secrets: Api<Secret> = Api::namespaced(bed().client().await.unwrap(), &self.ns);
        secrets
            .list(&kube::api::ListParams::default().labels("heritage.roomrec.dev/request-id"))
            .await
            .unwrap()
            .items
    }

    /// `roomrec_heritage_requests_total{result}` as the operator counts it now.
    pub async fn counted(&self, result: &str) -> u64 {
        let series = format!("roomrec_heritage_requests_total{{result=\"{result}\"}} ");
        let metrics = self.op.metrics().await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in the operator's metrics"))
    }
}
