//! The test bed as the operator's tests use it: which bed (the process's shared one, or a
//! private one a test started), the repository, the cluster prepared once per process (the
//! worker binary built, the RecordingJob CRD established, the chart's operator RBAC
//! installed), and a live publisher on the bed's RTMP server.

use super::kubectl::{helm_template, helm_template_with, kubectl_apply};
use roomrec_testbed::media::{Publisher, StreamSpec};
use roomrec_testbed::{BedInfo, shared};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The namespace of the chart's release (its ServiceAccount, RBAC and the operators' Leases).
pub const SYSTEM_NAMESPACE: &str = "roomrec-system";
/// The release name the chart is rendered with.
pub const RELEASE: &str = "e2e";

/// A bed the test binary started itself, set before any helper runs (apiserver_restart.rs
/// restarts parts of its bed, which would disturb the other tests of a shared one).
pub static OWN_BED: std::sync::OnceLock<BedInfo> = std::sync::OnceLock::new();

/// The process's shared bed, or the private one a test binary put in `OWN_BED`.
pub fn bed() -> &'static BedInfo {
    OWN_BED.get().unwrap_or_else(shared)
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
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
        roomrec_testbed::crds::install_recording_job_crd(&client)
            .await
            .expect("the RecordingJob CRD is established");
        kubectl_apply(&helm_template(&[
            "templates/serviceaccount.yaml",
            "templates/rbac.yaml",
        ]));
    })
    .await
}

/// The chart's Secret grant in `namespace` (`operator.secretNamespaces`), as an install that
/// watches every namespace gives it: the operator may read the Secrets jobs there name. The
/// chart grants none cluster-wide, so without this the operator may read no Secret there.
// Used through operator_process.rs (every binary that starts an operator) and by e2e.rs.
#[allow(dead_code)]
pub fn grant_secrets(namespace: &str) {
    kubectl_apply(&helm_template_with(
        &["templates/rbac.yaml"],
        &[&format!("operator.secretNamespaces={{{namespace}}}")],
    ));
}

/// A low-cost synthetic camera (320×240, 15 fps) published to the bed's RTMP server.
// Every binary but trtc_relay.rs (whose anchors publish through the TRTC stand-in) uses it.
#[allow(dead_code)]
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
