//! A roomrec-operator process the test starts, authenticated as the chart's operator
//! ServiceAccount (a real token from the TokenRequest API), so every test also proves the
//! chart's RBAC is enough.

use super::cluster::{SYSTEM_NAMESPACE, bed, grant_secrets};
use super::logs::{OperatorLog, tail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use roomrec_testbed::wait_until;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The chart's operator ServiceAccount (release `e2e`) in roomrec-system.
pub const OPERATOR_SA: &str = "e2e-roomrec-operator";

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

/// A roomrec-operator process watching one namespace, as the chart's ServiceAccount.
pub struct Operator {
    // Held for its kill_on_drop (the process ends with the Operator); e2e.rs and
    // trtc_relay.rs also kill it or wait for it.
    #[allow(dead_code)]
    pub child: tokio::process::Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Operator {
    pub async fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with(namespace, extra, true).await
    }

    /// Started and ready (/readyz: leading, when `lease` turns leader election on).
    pub async fn start_with(namespace: &str, extra: &[&str], lease: bool) -> Self {
        let op = Self::spawn(namespace, extra, lease).await;
        op.wait_ready().await;
        op
    }

    pub async fn wait_ready(&self) {
        let url = self.url("/readyz");
        wait_until(Duration::from_secs(30), || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .unwrap_or_else(|_| panic!("the operator did not become ready: {}", self.log_text()));
    }

    /// Started, not waited for, with the chart's Secret grant in `namespace`.
    pub async fn spawn(namespace: &str, extra: &[&str], lease: bool) -> Self {
        grant_secrets(namespace);
        Self::spawn_ungranted(namespace, extra, lease).await
    }

    /// Started, not waited for, without a Secret grant in `namespace`: as an operator that
    /// watches every namespace sees one that `operator.secretNamespaces` does not list.
    pub async fn spawn_ungranted(namespace: &str, extra: &[&str], lease: bool) -> Self {
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
            // Tests watch progress grow in seconds, not the chart's minute.
            .args(match extra.contains(&"--worker-report-interval-seconds") {
                true => &[][..],
                false => &["--worker-report-interval-seconds", "5"][..],
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

    // Used by e2e.rs and observability.rs.
    #[allow(dead_code)]
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl OperatorLog for Operator {
    fn log_text(&self) -> String {
        Operator::log_text(self)
    }
}
