//! The whole test bed: control plane, node agent, RTMP server, object store and Prometheus,
//! started together in a temporary directory and stopped together when dropped — also when a
//! test panics, since dropping happens during unwinding.
//!
//! Tests usually share one bed per test binary (`shared()`), started on a thread of its own so
//! it outlives each test's runtime, and stopped at exit. With `$ROOMREC_TESTBED` pointing at the
//! `bed.json` of a kept-alive bed (`roomrec-testbed up`), tests attach to that one instead.

use crate::control_plane::{self, ControlPlane};
use crate::error::{Result, TestbedError, file_error};
use crate::media::{Publisher, RtmpServer, StreamSpec};
use crate::node_agent::{NODE_NAME, NodeAgent, NodeAgentConfig, image::ImageResolver};
use crate::object_store::{self, ObjectStore};
use crate::prometheus::Prometheus;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Everything a test needs to reach a running bed; written to `bed.json` by a kept-alive bed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BedInfo {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_port: u16,
    pub node_name: String,
    pub rtmp_port: u16,
    pub rtmp_http_port: u16,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_bucket: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    /// The bucket's directory on disk (the object store's POSIX backend).
    pub s3_bucket_dir: PathBuf,
    pub prometheus_url: String,
    /// Drop files here (`{job}.json`, file_sd format) to add Prometheus scrape targets.
    pub prometheus_targets_dir: PathBuf,
}

impl BedInfo {
    /// An admin client (a new one: clients belong to the runtime that makes them).
    pub async fn client(&self) -> Result<kube::Client> {
        control_plane::client_from_kubeconfig(&self.kubeconfig).await
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    /// Publishes `spec` live to the bed's RTMP app `live` under `key`, logging ffmpeg to
    /// `scratch/publishers/{key}.log`; the stream stops when the Publisher is dropped.
    pub async fn publish(&self, key: &str, spec: &StreamSpec) -> Result<Publisher> {
        let log = self.scratch("publishers")?.join(format!("{key}.log"));
        Publisher::start(&self.rtmp_url(key), spec, &log).await
    }

    /// Where a test may keep its own files; removed with the bed.
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join("scratch").join(name);
        std::fs::create_dir_all(&dir).map_err(file_error(&dir))?;
        Ok(dir)
    }

    /// Scrapes `address` (`host:port`, /metrics) every second as job=`job`.
    pub fn add_prometheus_target(&self, job: &str, address: &str) -> Result<()> {
        let file = self.prometheus_targets_dir.join(format!("{job}.json"));
        let tmp = self.prometheus_targets_dir.join(format!(".{job}.tmp"));
        let text =
            serde_json::json!([{ "targets": [address], "labels": { "job": job } }]).to_string();
        // Written under another name, then renamed: Prometheus never reads half a file.
        std::fs::write(&tmp, text).map_err(file_error(&tmp))?;
        std::fs::rename(&tmp, &file).map_err(file_error(&file))
    }

    /// Creates a namespace named `{prefix}-{n}` and waits until its `default` service account
    /// exists (pods are refused before that).
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let client = self.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = namespaces.create(&PostParams::default(), &ns).await?;
        let name = created.metadata.name.unwrap_or_default();
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        wait_until(Duration::from_secs(30), || async {
            accounts.get_opt("default").await.ok().flatten().is_some()
        })
        .await
        .map_err(|_| TestbedError::Attach(format!("namespace {name}: no default service account after 30 s (is kube-controller-manager running?)")))?;
        Ok(name)
    }
}

/// The components of a bed this process started; dropped in reverse order of start.
pub struct TestBed {
    pub info: BedInfo,
    pub prometheus: Prometheus,
    pub object_store: ObjectStore,
    pub rtmp: RtmpServer,
    pub node_agent: NodeAgent,
    pub control_plane: ControlPlane,
    /// Removed last, after every process is gone.
    _dir: Option<tempfile::TempDir>,
}

impl TestBed {
    /// Starts every component in a new temporary directory.
    pub async fn start() -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("roomrec-testbed-")
            .tempdir()
            .map_err(file_error(std::env::temp_dir()))?;
        let mut bed = Self::start_in(tmp.path()).await?;
        bed._dir = Some(tmp);
        Ok(bed)
    }

    /// Starts every component with its files under `dir` (kept after the bed stops).
    pub async fn start_in(dir: &Path) -> Result<Self> {
        let started = Instant::now();
        let control_plane = ControlPlane::start(&dir.join("kubernetes")).await?;
        let client = control_plane::client_from_kubeconfig(&control_plane.kubeconfig).await?;
        let node_agent = NodeAgent::start(
            client,
            NodeAgentConfig {
                node_name: NODE_NAME.into(),
                work_dir: dir.join("node"),
                api_port: control_plane.api_port,
                images: default_images(),
            },
        )
        .await?;
        let rtmp_dir = dir.join("rtmp");
        std::fs::create_dir_all(&rtmp_dir).map_err(file_error(&rtmp_dir))?;
        let rtmp = RtmpServer::start(&rtmp_dir).await?;
        let object_store = ObjectStore::start(&dir.join("s3")).await?;
        let prom_dir = dir.join("prometheus");
        std::fs::create_dir_all(&prom_dir).map_err(file_error(&prom_dir))?;
        let prometheus = Prometheus::start(&prom_dir).await?;
        tracing::info!(
            "test bed up in {:.1} s at {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        let info = BedInfo {
            dir: dir.to_path_buf(),
            kubeconfig: control_plane.kubeconfig.clone(),
            api_port: control_plane.api_port,
            node_name: NODE_NAME.into(),
            rtmp_port: rtmp.rtmp_port,
            rtmp_http_port: rtmp.http_port,
            s3_endpoint: object_store.endpoint(),
            s3_region: object_store::REGION.into(),
            s3_bucket: object_store::BUCKET.into(),
            s3_access_key: object_store::ACCESS_KEY.into(),
            s3_secret_key: object_store::SECRET_KEY.into(),
            s3_bucket_dir: object_store.root.join(object_store::BUCKET),
            prometheus_url: prometheus.url(),
            prometheus_targets_dir: prometheus.targets_dir().to_path_buf(),
        };
        Ok(Self {
            info,
            prometheus,
            object_store,
            rtmp,
            node_agent,
            control_plane,
            _dir: None,
        })
    }

    /// Writes `bed.json` so other processes can attach (see `attach`).
    pub fn write_info(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.info).expect("BedInfo serializes");
        std::fs::write(path, text).map_err(file_error(path))
    }
}

/// The node agent's image map: roomrec's images run the binaries cargo built in this workspace
/// (`$CARGO_TARGET_DIR` or `target/`, debug then release), and `$ROOMREC_NODE_PATH` is searched.
pub fn default_images() -> ImageResolver {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::binaries::repo_root().join("target"));
    let mut search_path: Vec<PathBuf> = std::env::var_os("ROOMREC_NODE_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    search_path.extend([target.join("debug"), target.join("release")]);
    ImageResolver {
        images: Default::default(),
        search_path,
    }
}

/// Reads the `bed.json` of a kept-alive bed.
pub fn attach(path: &Path) -> Result<BedInfo> {
    let text = std::fs::read_to_string(path).map_err(file_error(path))?;
    serde_json::from_str(&text)
        .map_err(|e| TestbedError::Attach(format!("{}: {e}", path.display())))
}

/// The bed shared by the tests of this process: the kept-alive one named by `$ROOMREC_TESTBED`,
/// or one started on first use on a thread of its own and stopped when the process exits.
pub fn shared() -> &'static BedInfo {
    static SHARED: OnceLock<BedInfo> = OnceLock::new();
    SHARED.get_or_init(|| {
        if let Some(path) = std::env::var_os("ROOMREC_TESTBED") {
            return attach(Path::new(&path)).unwrap_or_else(|e| panic!("ROOMREC_TESTBED: {e}"));
        }
        let (info_tx, info_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("testbed".into())
            .spawn(move || run_shared(info_tx))
            .expect("spawning the test bed thread");
        match info_rx.recv() {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => panic!("the test bed did not start: {e}"),
            Err(_) => panic!("the test bed thread died while starting"),
        }
    })
}

static SHUTDOWN: OnceLock<std::sync::mpsc::Sender<std::sync::mpsc::Sender<()>>> = OnceLock::new();

fn run_shared(info_tx: std::sync::mpsc::Sender<Result<BedInfo>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the test bed");
    let bed = match runtime.block_on(TestBed::start()) {
        Ok(bed) => bed,
        Err(e) => {
            let _ = info_tx.send(Err(e));
            return;
        }
    };
    let (shutdown_tx, shutdown_rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<()>>();
    let _ = SHUTDOWN.set(shutdown_tx);
    // SAFETY: registering a plain extern "C" function with atexit has no preconditions.
    unsafe { libc::atexit(stop_shared) };
    let _ = info_tx.send(Ok(bed.info.clone()));
    // The runtime keeps running the node agent; this thread only waits for the exit signal.
    let done = shutdown_rx.recv();
    runtime.block_on(async move { drop(bed) });
    drop(runtime);
    if let Ok(done) = done {
        let _ = done.send(());
    }
}

extern "C" fn stop_shared() {
    if let Some(shutdown) = SHUTDOWN.get() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if shutdown.send(done_tx).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        }
    }
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
