//! What the API server would accept: prometheus-operator's CRDs installed (so the chart's
//! monitoring objects can be validated), and strict server-side dry runs of rendered YAML.

use super::cluster::bed;
use super::kubectl::kubectl;
use tokio::sync::OnceCell;

/// Once per test process: the prometheus-operator CRDs (ServiceMonitor, PodMonitor,
/// PrometheusRule) that `hack/testbed.sh` pinned, established, so the chart's monitoring
/// objects can be validated by the API server.
pub async fn install_monitoring_crds() {
    static ONCE: OnceCell<()> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let client = bed().client().await.unwrap();
        for file in roomrec_testbed::binaries::monitoring_crds().unwrap() {
            roomrec_testbed::crds::apply_crd_file(&client, &file)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    })
    .await;
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
