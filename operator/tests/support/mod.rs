//! What the operator's end-to-end tests share: the CRD and the chart's RBAC installed in the
//! test bed, an operator process running under the chart's ServiceAccount, publishers, the
//! object store's files, and a callback receiver.

#![allow(dead_code)]

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use roomrec_api::crd::RecordingJob;
use roomrec_testbed::media::{Publisher, StreamSpec, ffprobe};
use roomrec_testbed::{BedInfo, shared, wait_until};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

pub const SYSTEM_NAMESPACE: &str = "roomrec-system";
pub const RELEASE: &str = "e2e";
pub const OPERATOR_SA: &str = "e2e-roomrec-operator";

static OWN_BED: std::sync::OnceLock<BedInfo> = std::sync::OnceLock::new();

/// The process's shared bed, or the private one a test binary chose with `use_bed`.
pub fn bed() -> &'static BedInfo {
    OWN_BED.get().unwrap_or_else(shared)
}

/// Makes every helper use `info` (a bed the test started itself, e.g. to restart its parts).
pub fn use_bed(info: BedInfo) {
    OWN_BED
        .set(info)
        .expect("use_bed is called once, before any other helper");
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn tool(name: &str) -> PathBuf {
    roomrec_testbed::binaries::pinned(name).unwrap()
}

/// Once per test process: the worker binary built (the node agent runs it for the worker
/// image), the CRD established, the chart's operator RBAC installed.
pub async fn cluster() -> &'static () {
    static ONCE: OnceCell<()> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "roomrec-worker",
                "--bin",
                "roomrec-worker",
            ])
            .current_dir(repo())
            .status()
            .expect("running cargo build for the worker");
        assert!(status.success(), "building roomrec-worker failed");
        let client = bed().client().await.unwrap();
        install_crd(&client).await;
        kubectl_apply(&helm_template(&[
            "templates/serviceaccount.yaml",
            "templates/rbac.yaml",
        ]));
    })
    .await
}

async fn install_crd(client: &Client) {
    apply_crd(client, &repo().join("crds/recordingjob.yaml")).await;
}

/// Once per test process: the prometheus-operator CRDs (ServiceMonitor, PodMonitor,
/// PrometheusRule) that `hack/testbed.sh` pinned, established, so the chart's monitoring
/// objects can be validated by the API server.
pub async fn install_monitoring_crds() {
    static ONCE: OnceCell<()> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let client = bed().client().await.unwrap();
        for file in roomrec_testbed::binaries::monitoring_crds().unwrap() {
            apply_crd(&client, &file).await;
        }
    })
    .await;
}

/// Applies the CRD in `file` and waits until it is established.
async fn apply_crd(client: &Client, file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &crd.name_any(),
        &PatchParams::apply("roomrec-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), || async {
        api.get(&crd.name_any()).await.ok().is_some_and(|c| {
            c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    })
    .await
    .expect("the CRD is established");
}

/// The chart rendered with the test release name into roomrec-system.
pub fn helm_template(only: &[&str]) -> String {
    helm_template_with(only, &[])
}

/// As `helm_template`, with values set (`key=value`, as `--set`).
pub fn helm_template_with(only: &[&str], set: &[&str]) -> String {
    let mut extra = Vec::new();
    for file in only {
        extra.extend(["--show-only", file]);
    }
    for value in set {
        extra.extend(["--set", value]);
    }
    let output = helm_template_output(&extra);
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `helm template` of the chart with the test release name into roomrec-system, `extra`
/// arguments after; the output as it is (a test of refused values wants the failure).
pub fn helm_template_output(extra: &[&str]) -> std::process::Output {
    let chart = repo().join("charts/roomrec").display().to_string();
    let mut args = vec![
        "template",
        RELEASE,
        &chart,
        "--namespace",
        SYSTEM_NAMESPACE,
        "--kube-version",
        "1.37.2",
    ];
    args.extend(extra);
    helm(&args)
}

/// `helm` against the bed's API server.
pub fn helm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(tool("helm"))
        .env("KUBECONFIG", &bed().kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

pub fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(tool("kubectl"))
        .env("KUBECONFIG", &bed().kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// `kubectl apply --server-side --dry-run=server`: the API server validates every object of
/// `yaml` against its schema (unknown fields refused) and stores nothing.
pub fn server_dry_run(yaml: &str) -> std::process::Output {
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            "-",
        ],
        Some(yaml),
    )
}

/// `examples/{name}` with each `(from, to)` replaced (each `from` must still be there).
pub fn example(name: &str, edits: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(repo().join("examples").join(name)).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "examples/{name} no longer contains {from:?}"
        );
        text = text.replace(from, to);
    }
    text
}

/// `kubectl apply -n {namespace} -f -`.
pub fn apply_in(namespace: &str, yaml: &str) {
    let out = kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn kubectl_apply(yaml: &str) {
    let _ = kubectl(&["create", "namespace", SYSTEM_NAMESPACE], None);
    let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig that authenticates as the chart's operator ServiceAccount (a real token from
/// the TokenRequest API): the operator gets exactly the chart's permissions.
pub async fn operator_kubeconfig() -> PathBuf {
    static ONCE: OnceCell<PathBuf> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let client = bed().client().await.unwrap();
        let accounts: Api<ServiceAccount> = Api::namespaced(client, SYSTEM_NAMESPACE);
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200}
        }))
        .unwrap();
        let token: TokenRequest = accounts
            .create_subresource("token", OPERATOR_SA, &PostParams::default(), &request)
            .await
            .unwrap();
        let token = token.status.unwrap().token;
        let token: String = token.expect("a token");
        let admin = std::fs::read_to_string(&bed().kubeconfig).unwrap();
        let text: String = admin
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("token:") {
                    format!("    token: {token}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = bed().scratch("operator").unwrap().join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    })
    .await
    .clone()
}

pub async fn operator_client() -> Client {
    roomrec_testbed::control_plane::client_from_kubeconfig(&operator_kubeconfig().await)
        .await
        .unwrap()
}

/// A roomrec-operator process watching one namespace, as the chart's ServiceAccount.
pub struct Operator {
    pub child: tokio::process::Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Operator {
    pub async fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with(namespace, extra, true).await
    }

    /// One replica without leader election (`--leader-elect` off, as with `replicas: 1`).
    pub async fn start_single(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with(namespace, extra, false).await
    }

    async fn start_with(namespace: &str, extra: &[&str], lease: bool) -> Self {
        let op = Self::spawn(namespace, extra, lease).await;
        let url = op.url("/readyz");
        wait_until(Duration::from_secs(30), || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .unwrap_or_else(|_| panic!("the operator did not become ready: {}", op.log_text()));
        op
    }

    /// Started and serving /healthz, but not (yet) leading.
    pub async fn start_unready(namespace: &str) -> Self {
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

    async fn spawn(namespace: &str, extra: &[&str], lease: bool) -> Self {
        let metrics_port = roomrec_testbed::ports::free_port();
        let log = bed()
            .scratch("operator")
            .unwrap()
            .join(format!("{namespace}-{metrics_port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomrec-operator"))
            .env("KUBECONFIG", operator_kubeconfig().await)
            .args(["--namespace", namespace])
            .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
            .args(["--worker-image", "ghcr.io/roomrec/roomrec-worker:e2e"])
            .args(["--worker-grace-seconds", "25"])
            .args([
                "--retry-backoff-seconds",
                "1",
                "--callback-backoff-seconds",
                "0.5",
            ])
            .args(if lease {
                vec![
                    "--leader-elect".to_string(),
                    "--lease-namespace".into(),
                    SYSTEM_NAMESPACE.into(),
                    "--lease-name".into(),
                    format!("op-{namespace}"),
                    "--lease-seconds".into(),
                    "6".into(),
                ]
            } else {
                Vec::new()
            })
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,roomrec_operator=debug",
            ])
            // Pods share the host's network here: a fixed worker metrics port would collide.
            .args(match extra.contains(&"--worker-metrics-port") {
                true => &[][..],
                false => &["--worker-metrics-port", "0"][..],
            })
            .args(extra)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            child,
            metrics_port,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    pub fn log_text(&self) -> String {
        tail(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            6000,
        )
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Where a failing wait finds the operator's log: a process the test started, or a pod.
pub trait OperatorLog {
    fn log_text(&self) -> String;
}

impl OperatorLog for Operator {
    fn log_text(&self) -> String {
        Operator::log_text(self)
    }
}

/// An operator the node agent runs as a pod in `namespace` (the chart's Deployment).
pub struct OperatorPod {
    pub namespace: String,
}

impl OperatorLog for OperatorPod {
    fn log_text(&self) -> String {
        let text: String = container_logs(&self.namespace, "operator")
            .into_iter()
            .map(|(_, text)| text)
            .collect();
        tail(&text, 6000)
    }
}

/// The log of `container` in every pod the node agent ran in `namespace`, by pod directory.
fn container_logs(namespace: &str, container: &str) -> Vec<(String, String)> {
    std::fs::read_dir(bed().dir.join("node/pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            name.starts_with(&format!("{namespace}_")).then(|| {
                let log = entry.path().join(format!("{container}.log"));
                (name, std::fs::read_to_string(log).unwrap_or_default())
            })
        })
        .collect()
}

/// The last `bytes` of `text` (on a character boundary).
fn tail(text: &str, bytes: usize) -> String {
    let start = text.len().saturating_sub(bytes);
    text[text.floor_char_boundary(start)..].to_string()
}

/// A low-cost synthetic camera (320×240, 15 fps) published to the bed's RTMP server.
pub async fn publish(key: &str, seconds: Option<u64>) -> Publisher {
    let spec = StreamSpec {
        width: 320,
        height: 240,
        fps: 15,
        video_kbps: 300,
        duration: seconds.map(Duration::from_secs),
        ..StreamSpec::default()
    };
    bed().publish(key, &spec).await.unwrap()
}

pub async fn jobs(namespace: &str) -> Api<RecordingJob> {
    Api::namespaced(bed().client().await.unwrap(), namespace)
}

/// Waits until the job's phase is one of `phases`; panics with the job and operator log.
pub async fn wait_phase(
    api: &Api<RecordingJob>,
    name: &str,
    phases: &[&str],
    timeout: Duration,
    op: &impl OperatorLog,
) -> RecordingJob {
    let found = Arc::new(Mutex::new(None));
    let result = wait_until(timeout, || {
        let found = found.clone();
        async move {
            let Ok(job) = api.get(name).await else {
                return false;
            };
            let phase = job
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map(|p| p.as_str())
                .unwrap_or("");
            let done = phases.contains(&phase);
            *found.lock().unwrap() = Some(job);
            done
        }
    })
    .await;
    let job = found.lock().unwrap().clone();
    if result.is_err() {
        panic!(
            "job {name} did not reach {phases:?} in {timeout:?}: {}\n--- operator log ---\n{}\n{}",
            serde_json::to_string_pretty(&job.as_ref().map(|j| j.status.clone())).unwrap(),
            op.log_text(),
            worker_logs(
                job.as_ref()
                    .and_then(|j| j.metadata.namespace.as_deref())
                    .unwrap_or("-")
            )
        );
    }
    job.unwrap()
}

/// Waits until the job has ended and asserts it ended as `phase`.
pub async fn ended_as(
    api: &Api<RecordingJob>,
    name: &str,
    phase: &str,
    timeout: Duration,
    op: &impl OperatorLog,
) -> RecordingJob {
    let job = wait_phase(api, name, &["Succeeded", "Failed", "Stopped"], timeout, op).await;
    let ended = job
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| p.as_str());
    assert_eq!(ended, Some(phase), "{}", status_json(&job));
    job
}

/// The local file behind a file URL of the bed's S3 store (path-style) or of the COS
/// stand-in (whose buckets are directories beside the S3 bucket).
pub fn stored_file(url: &str) -> PathBuf {
    let buckets = bed().s3_bucket_dir.parent().unwrap().to_path_buf();
    let decoded = percent_encoding::percent_decode_str(url)
        .decode_utf8()
        .unwrap()
        .to_string();
    if let Some(rest) =
        decoded.strip_prefix(&format!("{}/", bed().s3_endpoint.trim_end_matches('/')))
    {
        return buckets.join(rest);
    }
    let (_, after) = decoded.split_once("://").unwrap();
    let (host, key) = after.split_once('/').unwrap();
    let bucket = host.split(".cos.").next().unwrap();
    buckets.join(bucket).join(key)
}

/// ffprobe of a stored file: (duration, codecs).
pub fn probe(url: &str) -> (f64, Vec<String>) {
    let path = stored_file(url);
    let probe = ffprobe(path.to_str().unwrap(), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{url} ({}) does not play: {e}", path.display()));
    (
        probe.duration.unwrap_or(0.0),
        probe.codecs.iter().map(|(_, c)| c.clone()).collect(),
    )
}

/// Worker pods of a job (by its uid label).
pub async fn worker_pods(namespace: &str, job: &RecordingJob) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(bed().client().await.unwrap(), namespace);
    pods.list(
        &kube::api::ListParams::default()
            .labels(&format!("roomrec.dev/job-uid={}", job.uid().unwrap())),
    )
    .await
    .unwrap()
    .items
}

/// The pid of the process the node agent runs for a pod (found by its ROOMREC_POD_NAME).
pub fn worker_pid(pod: &str) -> Option<i32> {
    pid_of("roomrec-worker", &format!("ROOMREC_POD_NAME={pod}"))
}

/// The pid of a process running `program` (its binary's file name) whose environment holds
/// `variable` (`NAME=value`): how a container the node agent runs is found.
pub fn pid_of(program: &str, variable: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let runs_program = cmdline
                .split(|b| *b == 0)
                .next()?
                .ends_with(program.as_bytes());
            (runs_program && environ.split(|b| *b == 0).any(|v| v == variable.as_bytes()))
                .then_some(pid)
        })
}

/// How a process really runs: (real uid, real gid, root filesystem read-only), from /proc.
pub fn process_identity(pid: i32) -> (u32, u32, bool) {
    let first_id = |key: &str| -> u32 {
        proc_status(pid, key)
            .split_whitespace()
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no {key} id in /proc/{pid}/status"))
    };
    let root_read_only = mount_options(pid)
        .get("/")
        .is_some_and(|options| options.iter().any(|o| o == "ro"));
    (first_id("Uid"), first_id("Gid"), root_read_only)
}

/// The value of `Key:` in /proc/{pid}/status, trimmed.
pub fn proc_status(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {key}"))
        .trim()
        .to_string()
}

/// Mount point → options, as the process sees its mounts (its own mount namespace). mountinfo
/// lines are `id parent major:minor root mount-point options …`; a later mount at the same
/// point is mounted over an earlier one, so it wins.
pub fn mount_options(pid: i32) -> std::collections::BTreeMap<String, Vec<String>> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Some((
                fields.get(4)?.to_string(),
                fields.get(5)?.split(',').map(str::to_string).collect(),
            ))
        })
        .collect()
}

pub fn worker_logs(namespace: &str) -> String {
    container_logs(namespace, "worker")
        .into_iter()
        .map(|(name, text)| format!("--- {name} ---\n{}\n", tail(&text, 3000)))
        .collect()
}

pub fn status_json(job: &RecordingJob) -> Value {
    serde_json::to_value(&job.status).unwrap()
}

/// A request the receiver got: its headers and body.
pub type Received = (Vec<(String, String)>, Vec<u8>);

/// Receives callbacks: records each request; the first `fail_first` get HTTP 500.
pub struct Receiver {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let headers: Vec<(String, String)> = request
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .unwrap()
                                    .to_bytes()
                                    .to_vec();
                                let n = {
                                    let mut seen = seen.lock().unwrap();
                                    seen.push((headers, body));
                                    seen.len()
                                };
                                let status = if n <= fail_first { 500 } else { 200 };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(bytes::Bytes::from_static(b"ok")))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/recording", self.port)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn url_job(name: &str, source: &str, extra: Value) -> RecordingJob {
    let mut spec = json!({
        "source": {"url": source},
        "mode": "AudioVideoMp4",
        "storage": {"s3": {
            "endpoint": bed().s3_endpoint,
            "bucket": bed().s3_bucket,
            "region": bed().s3_region,
            "path": format!("e2e/{name}"),
            "credentialsSecret": "s3-keys",
        }},
        "idleTimeoutSeconds": 30,
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "roomrec.dev/v1alpha1",
        "kind": "RecordingJob",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// The S3 storage of a job made by `url_job`, to edit before it is created.
pub fn s3_of(job: &mut RecordingJob) -> &mut roomrec_api::crd::S3Storage {
    job.spec
        .storage
        .as_mut()
        .and_then(|s| s.s3.as_mut())
        .expect("a url_job has S3 storage")
}

pub async fn s3_secret(namespace: &str) {
    let secrets: Api<Secret> = Api::namespaced(bed().client().await.unwrap(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-keys"},
        "stringData": {"accessKeyId": bed().s3_access_key, "secretAccessKey": bed().s3_secret_key},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

pub fn files(job: &RecordingJob) -> Vec<roomrec_api::crd::FileStatus> {
    job.status.clone().unwrap_or_default().files
}

/// Every file stored and playable; returns the total media seconds.
pub fn assert_files_play(job: &RecordingJob, codecs: &[&str]) -> f64 {
    let files = files(job);
    assert!(!files.is_empty(), "no files: {}", status_json(job));
    let mut total = 0.0;
    for f in &files {
        assert_eq!(f.status.as_str(), "succeeded", "{}", status_json(job));
        let (duration, found) = probe(&f.url);
        for codec in codecs {
            assert!(
                found.iter().any(|c| c == codec),
                "{} has {found:?}, not {codec}",
                f.url
            );
        }
        assert!(
            (duration - f.duration_seconds).abs() < 1.5,
            "{} plays {duration} s but the status says {}",
            f.url,
            f.duration_seconds
        );
        total += duration;
    }
    total
}

pub async fn wait_recording_bytes(
    api: &Api<RecordingJob>,
    name: &str,
    min_seconds: f64,
    op: &impl OperatorLog,
) -> RecordingJob {
    let last = std::sync::Mutex::new(None);
    let ok = wait_until(Duration::from_secs(60), || async {
        let Ok(job) = api.get(name).await else {
            return false;
        };
        let recording = files(&job).iter().any(|f| {
            f.status.as_str() == "recording" && f.bytes > 0 && f.duration_seconds >= min_seconds
        });
        *last.lock().unwrap() = Some(job);
        recording
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(
        ok.is_ok(),
        "no growing file in the status: {}\n{}",
        serde_json::to_string(&last.map(|j| j.status)).unwrap(),
        op.log_text()
    );
    last.unwrap()
}

/// A namespace with the bed's S3 keys, an operator for it, a live stream, and a RecordingJob
/// `name` recording that stream into the bucket (spec fields in `extra`).
pub struct Scene {
    pub ns: String,
    pub op: Operator,
    pub api: Api<RecordingJob>,
    pub publisher: Publisher,
}

pub async fn scene(prefix: &str, name: &str, extra: Value) -> Scene {
    scene_with(prefix, name, extra, |_| {}).await
}

/// As `scene`, with a last change to the job before it is created.
pub async fn scene_with(
    prefix: &str,
    name: &str,
    extra: Value,
    edit: impl FnOnce(&mut RecordingJob),
) -> Scene {
    cluster().await;
    let ns = bed().namespace(prefix).await.unwrap();
    s3_secret(&ns).await;
    let op = Operator::start(&ns, &[]).await;
    let key = format!("{prefix}-{ns}");
    let publisher = publish(&key, None).await;
    let api = jobs(&ns).await;
    let mut job = url_job(name, &bed().rtmp_url(&key), extra);
    edit(&mut job);
    api.create(&PostParams::default(), &job).await.unwrap();
    Scene {
        ns,
        op,
        api,
        publisher,
    }
}
